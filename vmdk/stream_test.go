package vmdk

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// buildBareStream writes content as a compressed sparse file whose grains
// are bare zlib streams without markers (flags: compressed, no markers; GD
// and GT up front), the oldest stream layout. Grains of zeros are left
// unallocated.
func buildBareStream(t *testing.T, content []byte, markers bool) []byte {
	t.Helper()
	const grainSect, gtes = 128, 512
	grain := grainSect * SectorSize
	capSect := int64(len(content)) / SectorSize
	numGrains := (len(content) + grain - 1) / grain
	gdN := (numGrains + gtes - 1) / gtes
	desc := []byte("# Disk DescriptorFile\nversion=1\nCID=01020304\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\nRW " +
		strconv.FormatInt(capSect, 10) + " SPARSE \"bare.vmdk\"\n")
	descSect := int64(1)
	descN := int64((len(desc) + SectorSize - 1) / SectorSize)
	gdSect := descSect + descN
	gdBytes := gdN * 4
	gtSect := gdSect + int64((gdBytes+SectorSize-1)/SectorSize)
	gtBytes := gdN * gtes * 4
	overhead := gtSect + int64((gtBytes+SectorSize-1)/SectorSize)
	flags := uint32(flagNewlineTest | flagCompressed)
	if markers {
		flags |= flagMarkers
	}
	out := make([]byte, overhead*SectorSize)
	le := binary.LittleEndian
	le.PutUint32(out[0:], sparseMagic)
	le.PutUint32(out[4:], 3)
	le.PutUint32(out[8:], flags)
	le.PutUint64(out[12:], uint64(capSect))
	le.PutUint64(out[20:], grainSect)
	le.PutUint64(out[28:], uint64(descSect))
	le.PutUint64(out[36:], uint64(descN))
	le.PutUint32(out[44:], gtes)
	le.PutUint64(out[56:], uint64(gdSect))
	le.PutUint64(out[64:], uint64(overhead))
	copy(out[73:], "\n \r\n")
	le.PutUint16(out[77:], compressDeflate)
	copy(out[descSect*SectorSize:], desc)
	for i := range gdN {
		le.PutUint32(out[gdSect*SectorSize+int64(4*i):], uint32(gtSect)+uint32(i*gtes*4/SectorSize))
	}
	for gi := range numGrains {
		g := content[gi*grain : min(len(content), (gi+1)*grain)]
		if bytes.Equal(g, make([]byte, len(g))) {
			continue
		}
		var z bytes.Buffer
		if markers {
			var m [12]byte
			le.PutUint64(m[:], uint64(gi*grainSect))
			z.Write(m[:])
		}
		zw := zlib.NewWriter(&z)
		zw.Write(g)
		zw.Close()
		b := z.Bytes()
		if markers {
			le.PutUint32(b[8:], uint32(len(b)-12))
		}
		le.PutUint32(out[gtSect*SectorSize+int64(4*gi):], uint32(len(out)/SectorSize))
		out = append(out, b...)
		out = append(out, make([]byte, (SectorSize-len(out)%SectorSize)%SectorSize)...)
	}
	return out
}

// TestStreamWithoutMarkers reads the stream layout whose grains are bare
// zlib streams (flags 0x10001), and the same with markers, built from the
// 10 MiB vmdk-rs content.
func TestStreamWithoutMarkers(t *testing.T) {
	src, err := Open(filepath.Join(samplesDir, rsSparse), nil)
	if err != nil {
		t.Fatal(err)
	}
	content := diskContent(t, src, rsTenMiBSum)
	src.Close()
	for _, markers := range []bool{false, true} {
		p := filepath.Join(t.TempDir(), "bare.vmdk")
		if err := os.WriteFile(p, buildBareStream(t, content, markers), 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := Open(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := hashDisk(t, d); got != rsTenMiBSum {
			t.Fatalf("markers=%v: sha256 %s", markers, got)
		}
		if f := d.Links()[0].Extents[0].Format; (f == "streamOptimized (GD up front, no markers)") == markers {
			t.Fatalf("markers=%v: format %q", markers, f)
		}
		// and qemu agrees on the file we built
		if got := qemuRawSHA256(t, p); got != rsTenMiBSum {
			t.Fatalf("markers=%v: qemu-img reads %s", markers, got)
		}
		d.Close()
	}
}
