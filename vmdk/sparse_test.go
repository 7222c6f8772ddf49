package vmdk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

const (
	rsSparse    = "vmdk-rs/monolithicSparse.vmdk" // v1, rgd at sector 21 (GT 22), gd at 26 (GT 27)
	rsStream    = "vmdk-rs/streamOptimized.vmdk"
	rsMarkers   = "vmdk-rs/streamOptimizedWithMarkers.vmdk"
	rsTenMiBSum = "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727"
)

// sampleCopy copies a sample into a temp dir, applies edit, and returns
// the new path.
func sampleCopy(t *testing.T, sample string, edit func(b []byte) []byte) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(samplesDir, sample))
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		b = edit(b)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(sample))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func putLE32(b []byte, off int, v uint32) { binary.LittleEndian.PutUint32(b[off:], v) }

func hasWarning(d *Disk, sub string) bool {
	for _, w := range d.Warnings() {
		if strings.Contains(w, sub) {
			return true
		}
	}
	return false
}

func TestRedundantGrainDirectory(t *testing.T) {
	const gd, rgd, gt, rgt = 26 * 512, 21 * 512, 27 * 512, 22 * 512
	ff := bytes.Repeat([]byte{0xff}, 2048)

	t.Run("damaged primary GD", func(t *testing.T) {
		p := sampleCopy(t, rsSparse, func(b []byte) []byte { putLE32(b, gd, 0xfffffff0); return b })
		d, err := Open(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if got := hashDisk(t, d); got != rsTenMiBSum {
			t.Fatalf("sha256 %s", got)
		}
		if !hasWarning(d, "primary grain directory is damaged") {
			t.Fatalf("no warning: %q", d.Warnings())
		}
	})
	t.Run("both GDs damaged", func(t *testing.T) {
		p := sampleCopy(t, rsSparse, func(b []byte) []byte { putLE32(b, gd, 0xfffffff0); putLE32(b, rgd, 0x7ffffff0); return b })
		_, err := Open(p, nil)
		var de *DamagedGDError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &de) || de.PrimaryOffset != gd || de.RedundantOffset != rgd {
			t.Fatalf("Open = %v, want ErrCorrupt naming offsets %d and %d", err, gd, rgd)
		}
		var fe *FormatError
		if !errors.As(de.Primary, &fe) || fe.Offset != gd {
			t.Fatalf("primary cause %v, want a FormatError at %d", de.Primary, gd)
		}
	})
	t.Run("damaged primary GT", func(t *testing.T) {
		p := sampleCopy(t, rsSparse, func(b []byte) []byte { copy(b[gt:], ff); return b })
		d, err := Open(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if got := hashDisk(t, d); got != rsTenMiBSum {
			t.Fatalf("sha256 %s", got)
		}
		if !hasWarning(d, "primary grain table 0 is damaged") {
			t.Fatalf("no warning: %q", d.Warnings())
		}
	})
	t.Run("both GTs damaged", func(t *testing.T) {
		p := sampleCopy(t, rsSparse, func(b []byte) []byte { copy(b[gt:], ff); copy(b[rgt:], ff); return b })
		d, err := Open(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		_, err = d.ReadAt(make([]byte, 512), 0)
		var de *DamagedGDError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &de) || de.PrimaryOffset != gt || de.RedundantOffset != rgt {
			t.Fatalf("ReadAt = %v, want ErrCorrupt naming offsets %d and %d", err, gt, rgt)
		}
		if _, err := d.Allocated(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Allocated = %v, want ErrCorrupt", err)
		}
	})
}

// TestCorruptFields flips one field at a time and checks the exact sentinel.
func TestCorruptFields(t *testing.T) {
	le := binary.LittleEndian
	cases := []struct {
		name   string
		sample string
		edit   func(b []byte) []byte
		want   error
		onRead bool // the error shows on reading, not on Open
	}{
		{"magic", rsSparse, func(b []byte) []byte { b[0] = 'X'; return b }, ErrUnsupported, false},
		{"version 4", rsSparse, func(b []byte) []byte { putLE32(b, 4, 4); return b }, ErrUnsupported, false},
		{"unknown flag", rsSparse, func(b []byte) []byte { putLE32(b, 8, 0x3|1<<5); return b }, ErrUnsupported, false},
		{"capacity huge", rsSparse, func(b []byte) []byte { le.PutUint64(b[12:], 1<<60); return b }, ErrCorrupt, false},
		{"grain 3", rsSparse, func(b []byte) []byte { le.PutUint64(b[20:], 3); return b }, ErrUnsupported, false},
		{"gtes 0", rsSparse, func(b []byte) []byte { putLE32(b, 44, 0); return b }, ErrCorrupt, false},
		{"newline test", rsSparse, func(b []byte) []byte { b[76] = 'x'; return b }, ErrCorrupt, false},
		{"truncated", rsSparse, func(b []byte) []byte { return b[:len(b)-65536] }, ErrCorrupt, true},
		{"truncated to header", rsSparse, func(b []byte) []byte { return b[:300] }, ErrCorrupt, false},
		{"descriptor size", rsSparse, func(b []byte) []byte { le.PutUint64(b[36:], 1<<40); return b }, ErrCorrupt, false},
		{"stream grain lba", rsStream, func(b []byte) []byte { return flipFirstGrain(t, b, 0) }, ErrCorrupt, true},
		{"stream grain size", rsStream, func(b []byte) []byte { return flipFirstGrain(t, b, 10) }, ErrCorrupt, true},
		{"stream grain data", rsStream, func(b []byte) []byte { return flipFirstGrain(t, b, 40) }, ErrCorrupt, true},
		{"stream footer", rsMarkers, func(b []byte) []byte { le.PutUint64(b[56:], gdAtEnd); b[len(b)-1536+12] = 9; return b }, ErrCorrupt, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := sampleCopy(t, c.sample, c.edit)
			d, err := Open(p, nil)
			if c.onRead {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer d.Close()
				if _, err = d.Allocated(); err == nil {
					_, err = d.ReadAt(make([]byte, d.Size()), 0)
				}
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			var fe *FormatError
			var de *DamagedGDError
			if !errors.As(err, &fe) && !errors.As(err, &de) {
				t.Fatalf("err %v carries no file/offset", err)
			}
		})
	}
}

// flipFirstGrain changes byte at of the first compressed grain (its
// marker: lba at 0, size at 8; data from 12).
func flipFirstGrain(t *testing.T, b []byte, at int) []byte {
	gdSect := binary.LittleEndian.Uint64(b[56:])
	gtSect := binary.LittleEndian.Uint32(b[gdSect*512:])
	for i := 0; i < 512; i++ {
		g := binary.LittleEndian.Uint32(b[int(gtSect)*512+4*i:])
		if g > 1 {
			b[int(g)*512+at] ^= 0x55
			return b
		}
	}
	t.Fatal("no grain")
	return nil
}

func TestChainRules(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	top := filepath.Join(dir, "top.vmdk")
	qemuTool(t, "qemu-img", "create", "-f", "vmdk", base, "4M")
	qemuTool(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x44 0 1M", base)
	qemuTool(t, "qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", top)
	b, err := os.ReadFile(top)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("parentCID="))
	if i < 0 {
		t.Fatal("no parentCID in the qemu descriptor")
	}
	// qemu writes the CID without leading zeros: replace the value with
	// one of the same length, so that the embedded descriptor keeps its size.
	v := i + len("parentCID=")
	n := bytes.IndexByte(b[v:], '\n')
	wrong := "0badc1d0"[8-n:]
	copy(b[v:], wrong)
	wrongCID, _ := strconv.ParseUint(wrong, 16, 32)
	bad := filepath.Join(dir, "bad.vmdk")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bad, nil); !errors.Is(err, ErrCIDMismatch) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open = %v, want ErrCIDMismatch", err)
	}
	d, err := Open(bad, &OpenOptions{AllowCIDMismatch: true})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	if _, err := d.ReadAt(buf, 0); err != nil || buf[0] != 0x44 || !hasWarning(d, fmt.Sprintf("parentCID %08x", wrongCID)) {
		t.Fatalf("allowed mismatch: %v %x %q", err, buf[0], d.Warnings())
	}
	d.Close()
	if _, err := Open(top, &OpenOptions{MaxChain: 1}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("MaxChain 1: %v", err)
	}

	// descriptor-file rules
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("d-flat.vmdk", strings.Repeat("\x07", 4096))
	hdr := "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
	for name, c := range map[string]struct {
		text string
		want error
	}{
		"dotdot":   {hdr + "RW 8 FLAT \"../x/d-flat.vmdk\" 0\n", ErrUnsafePath},
		"absolute": {hdr + "RW 8 FLAT \"" + filepath.Join(dir, "d-flat.vmdk") + "\" 0\n", ErrUnsafePath},
		"rdm":      {hdr + "RW 8 VMFSRDM \"lun.vmdk\"\n", ErrUnsupported},
		"short":    {hdr + "RW 9 FLAT \"d-flat.vmdk\" 0\n", ErrCorrupt},
		"loop":     {strings.Replace(hdr, "ffffffff", "12345678", 1) + "parentFileNameHint=\"loop.vmdk\"\nRW 8 ZERO\n", ErrCorrupt},
	} {
		p := write(name+".vmdk", c.text)
		if _, err := Open(p, nil); !errors.Is(err, c.want) {
			t.Errorf("%s: Open = %v, want %v", name, err, c.want)
		}
	}
	// allowed absolute extent, and ZERO + FLAT + offset
	p := write("ok.vmdk", hdr+"RW 8 FLAT \""+filepath.Join(dir, "d-flat.vmdk")+"\" 0\nRW 4 ZERO\nRW 2 FLAT \"d-flat.vmdk\" 6\n")
	d, err = Open(p, &OpenOptions{AllowUnsafePaths: true})
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 14*512)
	if _, err := d.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := append(append(bytes.Repeat([]byte{7}, 8*512), make([]byte, 4*512)...), bytes.Repeat([]byte{7}, 2*512)...)
	if !bytes.Equal(got, want) {
		t.Fatal("FLAT+ZERO+FLAT content differs")
	}
	d.Close()
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAbsoluteParentHint: ESXi writes absolute hints; the parent of that
// name beside the child is used, with a warning.
func TestAbsoluteParentHint(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	top := filepath.Join(dir, "top.vmdk")
	qemuTool(t, "qemu-img", "create", "-f", "vmdk", base, "1M")
	qemuTool(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x66 0 4k", base)
	qemuTool(t, "qemu-img", "create", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", top)
	b := mustRead(t, top)
	descOff := int(binary.LittleEndian.Uint64(b[28:])) * 512
	descLen := int(binary.LittleEndian.Uint64(b[36:])) * 512
	d0, err := ParseDescriptor(b[descOff:descOff+descLen], top)
	if err != nil {
		t.Fatal(err)
	}
	d0.ParentFileNameHint = "/vmfs/volumes/datastore1/vm/base.vmdk"
	text, err := d0.Bytes()
	if err != nil || len(text) > descLen {
		t.Fatalf("%v (%d bytes)", err, len(text))
	}
	clear(b[descOff : descOff+descLen])
	copy(b[descOff:], text)
	if err := os.WriteFile(top, b, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Open(top, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if len(d.Links()) != 2 || !hasWarning(d, "beside the disk") {
		t.Fatalf("links %d warnings %q", len(d.Links()), d.Warnings())
	}
	buf := make([]byte, 512)
	if _, err := d.ReadAt(buf, 0); err != nil || buf[0] != 0x66 {
		t.Fatalf("read through the chain: %v %x", err, buf[0])
	}
	// with no file of that name beside it, the unsafe hint is refused
	if err := os.Rename(base, base+".moved"); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(top, nil); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("Open = %v, want ErrUnsafePath", err)
	}
}

// diskContent reads a small disk whole and checks its sha256.
func diskContent(t *testing.T, d *Disk, wantSum string) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if got := hashVirtual(t, bytes.NewReader(b), int64(len(b)), []Run{{0, int64(len(b)), Data, 0}}); got != wantSum {
		t.Fatalf("sha256 %s, want %s", got, wantSum)
	}
	return b
}

// TestReaderContract runs testing/iotest over the Disk and checks ReadAt
// edge cases: short reads come with io.EOF, negative offsets fail.
func TestReaderContract(t *testing.T) {
	for _, s := range []string{rsSparse, rsStream} {
		t.Run(s, func(t *testing.T) {
			d, err := Open(filepath.Join(samplesDir, s), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			content := diskContent(t, d, rsTenMiBSum)
			// iotest makes many small reads: windows keep it quick under -race
			const win = 192 << 10
			for _, off := range []int64{0, 5<<20 - 1000, d.Size() - win} {
				if err := iotest.TestReader(io.NewSectionReader(d, off, win), content[off:off+win]); err != nil {
					t.Fatalf("window at %d: %v", off, err)
				}
			}
			buf := make([]byte, 1024)
			if n, err := d.ReadAt(buf, d.Size()-512); n != 512 || err != io.EOF {
				t.Fatalf("read across the end: %d %v", n, err)
			}
			if n, err := d.ReadAt(buf, d.Size()); n != 0 || err != io.EOF {
				t.Fatalf("read at the end: %d %v", n, err)
			}
			if _, err := d.ReadAt(buf, -1); err == nil {
				t.Fatal("negative offset accepted")
			}
		})
	}
}

// TestConcurrentReadAt reads random ranges from many goroutines at once
// (run with -race) and compares with the content read sequentially.
func TestConcurrentReadAt(t *testing.T) {
	for _, s := range []string{rsSparse, rsStream} {
		d, err := Open(filepath.Join(samplesDir, s), nil)
		if err != nil {
			t.Fatal(err)
		}
		content := diskContent(t, d, rsTenMiBSum)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), 1))
				buf := make([]byte, 100000)
				for range 60 {
					n := 1 + r.IntN(len(buf))
					off := r.Int64N(d.Size() - int64(n))
					if _, err := d.ReadAt(buf[:n], off); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(buf[:n], content[off:off+int64(n)]) {
						errs <- errors.New("concurrent read differs")
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%s: %v", s, err)
		}
		d.Close()
	}
}

// TestTruncatedStream: a GD_AT_END stream cut short is ErrCorrupt, and with
// ScanTruncatedStreams its grains are found by scanning the markers.
func TestTruncatedStream(t *testing.T) {
	full := bunzip(t, filepath.Join(samplesDir, "qemu-iotests/iotest-version3.vmdk.bz2"), t.TempDir())
	b := mustRead(t, full)
	fd, err := Open(full, nil)
	if err != nil {
		t.Fatal(err)
	}
	fullAlloc, err := fd.Links()[0].AllocatedBytes()
	fd.Close()
	if err != nil {
		t.Fatal(err)
	}
	// iotest 059: for i in 0..99 the sector at i*655360+i*512 holds 0x30+i%10
	check := func(d *Disk, upto int) {
		t.Helper()
		buf := make([]byte, 512)
		for i := int64(0); i < 100; i++ {
			if _, err := d.ReadAt(buf, i*655360+i*512); err != nil {
				t.Fatal(err)
			}
			want := byte(0x30 + i%10)
			if int(i) >= upto {
				want = 0
			}
			if buf[0] != want || buf[511] != want {
				t.Fatalf("sector %d: %x, want %x", i, buf[0], want)
			}
		}
	}
	for _, c := range []struct {
		name  string
		cut   int // bytes kept
		grain int // grains expected intact
	}{
		{"footer lost", len(b) - 1536, 100},
		{"half the grains", 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			cut := c.cut
			upto := c.grain
			if cut == 0 {
				// keep the grains of the first 50 patterns: find the 51st grain marker
				cut, upto = grainMarkerOffset(t, b, 50), 50
			}
			p := filepath.Join(t.TempDir(), "cut.vmdk")
			if err := os.WriteFile(p, b[:cut], 0o644); err != nil {
				t.Fatal(err)
			}
			var ts *TruncatedStreamError
			if _, err := Open(p, nil); !errors.Is(err, ErrCorrupt) || !errors.As(err, &ts) {
				t.Fatalf("Open = %v, want ErrCorrupt as a TruncatedStreamError", err)
			}
			d, err := Open(p, &OpenOptions{ScanTruncatedStreams: true})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if !hasWarning(d, "rebuilt by scanning") {
				t.Fatalf("warnings %q", d.Warnings())
			}
			check(d, upto)
			n, err := d.Links()[0].AllocatedBytes()
			if err != nil || (upto == 100) != (n == fullAlloc) || n > fullAlloc {
				t.Fatalf("allocated %d bytes (%v), the whole file %d", n, err, fullAlloc)
			}
		})
	}
}

// grainMarkerOffset returns the file offset of the grain marker whose
// data is the k-th pattern sector of iotest 059 (lba k*1281 rounded down
// to its grain).
func grainMarkerOffset(t *testing.T, b []byte, k int64) int {
	want := uint64(k*655360+k*512) / 512 / 128 * 128
	for pos := 512; pos+12 <= len(b); pos += 512 {
		if binary.LittleEndian.Uint64(b[pos:]) == want && binary.LittleEndian.Uint32(b[pos+8:]) != 0 {
			return pos
		}
	}
	t.Fatalf("no grain marker for lba %d", want)
	return 0
}

// TestReadAtAllocs: reading whole grains allocates nothing once warm
// (pooled inflaters, cached grain tables).
func TestReadAtAllocs(t *testing.T) {
	for _, s := range []string{rsSparse, rsStream} {
		d, err := Open(filepath.Join(samplesDir, s), nil)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		off := int64(0)
		read := func() {
			if _, err := d.ReadAt(buf, off); err != nil {
				t.Fatal(err)
			}
			off = (off + 1<<20) % d.Size()
		}
		for range 30 {
			read() // warm the grain-table cache and the pool
		}
		// No buffer is allocated per read; klauspost/flate may still grow
		// its Huffman link tables now and then (a few small slices), so
		// the check is on bytes, not on the count.
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		for range 20 {
			read()
		}
		runtime.ReadMemStats(&m1)
		per := (m1.TotalAlloc - m0.TotalAlloc) / 20
		t.Logf("%s: %d bytes allocated per 1 MiB ReadAt", s, per)
		if per > 1<<10 {
			t.Errorf("%s: %d bytes allocated per 1 MiB ReadAt", s, per)
		}
		d.Close()
	}
}
