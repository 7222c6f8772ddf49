package vmdk

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

var errFuzzEnough = errors.New("enough")

// fuzzMonolithic opens data as a monolithic sparse/stream file, walks its
// allocation map and reads some data; every failure must be a format
// error (ErrCorrupt or ErrUnsupported), never a panic or a caller bug.
func fuzzMonolithic(t *testing.T, data []byte) {
	l := &Link{Path: "fuzz.vmdk", cache: &gtCache{}}
	err := l.openMonolithic(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		// a stream without a valid footer: try the marker scan too
		l = &Link{Path: "fuzz.vmdk", cache: &gtCache{}, scanStreams: true}
		err = l.openMonolithic(bytes.NewReader(data), int64(len(data)))
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("open: %v is neither ErrCorrupt nor ErrUnsupported", err)
		}
		return
	}
	runs, read := 0, int64(0)
	buf := make([]byte, 256<<10)
	err = l.WalkAllocated(func(r Run) error {
		if r.Off < 0 || r.Len <= 0 || r.Off+r.Len > l.Size() || (r.State != Data && r.State != Zero) {
			t.Fatalf("bad run %+v (size %d)", r, l.Size())
		}
		if runs++; runs > 20000 {
			return errFuzzEnough
		}
		if r.State == Data && read < 4<<20 {
			n := min(r.Len, int64(len(buf)))
			if _, err := l.ReadAt(buf[:n], r.Off); err != nil {
				return err
			}
			read += n
		}
		return nil
	})
	if err != nil && err != errFuzzEnough && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
		t.Fatalf("walk/read: %v is neither ErrCorrupt nor ErrUnsupported", err)
	}
}

func readSample(f *testing.F, name string) []byte {
	b, err := os.ReadFile(filepath.Join(samplesDir, name))
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzSparseHeader fuzzes the 512-byte header in front of a real
// monolithicSparse file (redundant GD, embedded descriptor).
func FuzzSparseHeader(f *testing.F) {
	base := readSample(f, rsSparse)
	for _, s := range []string{rsSparse, rsStream, rsMarkers, "vmdk-forensic/plaso_image.vmdk", "vmdk-rs/twoGbMaxExtentSparse-s001.vmdk"} {
		f.Add(readSample(f, s)[:512])
	}
	f.Fuzz(func(t *testing.T, hdr []byte) {
		if len(hdr) > 512 {
			hdr = hdr[:512]
		}
		data := append(append([]byte(nil), hdr...), base[len(hdr):]...)
		fuzzMonolithic(t, data)
	})
}

// FuzzGrainTable fuzzes the primary and redundant grain tables of a real
// monolithicSparse file.
func FuzzGrainTable(f *testing.F) {
	base := readSample(f, rsSparse)
	const gt, rgt = 27 * 512, 22 * 512
	f.Add(base[gt:gt+2048], base[rgt:rgt+2048])
	f.Add(bytes.Repeat([]byte{0xff}, 2048), base[rgt:rgt+2048])
	f.Add(bytes.Repeat([]byte{1, 0, 0, 0}, 512), []byte{})
	f.Fuzz(func(t *testing.T, prim, red []byte) {
		data := append([]byte(nil), base...)
		copy(data[gt:gt+2048], prim)
		copy(data[rgt:rgt+2048], red)
		fuzzMonolithic(t, data)
	})
}

// FuzzStreamMarkers fuzzes whole small stream-optimized files (GD up
// front with and without markers, GD at end with a footer).
func FuzzStreamMarkers(f *testing.F) {
	f.Add(readSample(f, rsStream))
	f.Add(readSample(f, rsMarkers))
	v3 := bunzip(f, filepath.Join(samplesDir, "qemu-iotests/iotest-version3.vmdk.bz2"), f.TempDir())
	b, err := os.ReadFile(v3)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)-1536]) // footer lost: the marker scan
	// Small streams from the writer: the samples above are 0.3-1.1 MB each,
	// which leaves the fuzzer a few inputs a second; these are a few KiB.
	for _, grain := range []int64{4096, 8192} {
		small := smallStream(f, grain)
		f.Add(small)
		f.Add(small[:len(small)-1024])
	}
	f.Fuzz(fuzzMonolithic)
}

// smallStream writes a 64 KiB streamOptimized disk with two data grains
// and a zero run, and returns its bytes.
func smallStream(f *testing.F, grain int64) []byte {
	const size = 64 << 10
	src := make([]byte, size)
	for i := range src[:grain] {
		src[i] = byte(i * 7)
	}
	copy(src[3*grain:], "vmcrypt fuzz seed")
	runs := []Run{{Off: 0, Len: grain, State: Data}, {Off: grain, Len: grain, State: Zero}, {Off: 3 * grain, Len: grain, State: Data}}
	out := filepath.Join(f.TempDir(), "s.vmdk")
	if err := Write(context.Background(), out, bytes.NewReader(src), size, runs, &WriteOptions{Subformat: SubformatStreamOptimized, GrainSize: grain}); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
