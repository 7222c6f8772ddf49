package vmdk

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// qemuTool runs a qemu tool (qemu-img, qemu-io); the test fails, never
// skips, when it is missing (make peers installs qemu-utils).
func qemuTool(t testing.TB, tool string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Fatalf("%s not found: run make peers (qemu-utils)", tool)
	}
	cmd := exec.Command(tool, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// fileSHA256 hashes a whole file.
func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// qemuRawSHA256 converts img to raw with qemu-img and hashes the result.
func qemuRawSHA256(t testing.TB, img string) string {
	t.Helper()
	raw := img + ".qemu.raw"
	qemuTool(t, "qemu-img", "convert", "-O", "raw", img, raw)
	defer os.Remove(raw)
	return fileSHA256(t, raw)
}

// writeSparseRaw crafts a sparse raw file of size bytes: pseudo-random
// runs (some compressible), an explicit zero run inside data, a run that
// ends the disk, and holes.
func writeSparseRaw(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, 7))
	put := func(off, n int64) {
		if off < 0 || off >= size {
			return
		}
		n = min(n, size-off)
		b := make([]byte, n)
		for i := range b {
			if (i/512)%3 == 0 {
				b[i] = byte(i / 4096) // compressible sectors
			} else {
				b[i] = byte(r.Uint32())
			}
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	put(0, 4096)            // first sector of the disk
	put(65536-512, 1024)    // across a 64 KiB grain boundary
	put(1<<20, 3<<20)       // a few whole grains
	put(32<<20-1000, 5000)  // across a 32 MiB grain-table boundary
	put(size-3*512, 3*512)  // the last sectors
	put(size/2+777, 200000) // unaligned middle run
	put(size/3, 128<<10)    // then a zero run inside data:
	if _, err := f.WriteAt(make([]byte, 64<<10), size/3+32<<10); err != nil {
		t.Fatal(err)
	}
}

// checkAgainstQemu opens img with vmcrypt and compares the sha256 of its
// virtual disk with qemu-img's raw conversion.
func checkAgainstQemu(t *testing.T, img string) *Disk {
	t.Helper()
	want := qemuRawSHA256(t, img)
	d, err := Open(img, nil)
	if err != nil {
		t.Fatalf("Open %s: %v", img, err)
	}
	t.Cleanup(func() { d.Close() })
	if got := hashDisk(t, d); got != want {
		t.Fatalf("%s: sha256 %s, qemu-img %s", filepath.Base(img), got, want)
	}
	if d.Size() > 1<<30 {
		return d
	}
	// and reading everything through ReadAt alone (holes included)
	h := sha256.New()
	if _, err := io.CopyBuffer(h, io.NewSectionReader(d, 0, d.Size()), make([]byte, 1<<20+512)); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("%s: sequential ReadAt sha256 %s, qemu-img %s", filepath.Base(img), got, want)
	}
	return d
}

// TestQemuSubformats converts a crafted raw file into every subformat
// qemu-img writes and reads each back bit-exactly.
func TestQemuSubformats(t *testing.T) {
	dir := t.TempDir()
	const size = 72<<20 + 3*512 // not a multiple of the grain: a partial last grain
	raw := filepath.Join(dir, "src.raw")
	writeSparseRaw(t, raw, size, 1)
	rawSum := fileSHA256(t, raw)
	for _, c := range []struct{ name, opts string }{
		{"monolithicSparse", "subformat=monolithicSparse"},
		{"monolithicFlat", "subformat=monolithicFlat"},
		{"twoGbMaxExtentSparse", "subformat=twoGbMaxExtentSparse"},
		{"twoGbMaxExtentFlat", "subformat=twoGbMaxExtentFlat"},
		{"streamOptimized", "subformat=streamOptimized"},
		{"zeroedGrain", "subformat=monolithicSparse,zeroed_grain=on"},
		{"compat6", "subformat=monolithicSparse,compat6=on"},
		{"compat6Stream", "subformat=streamOptimized,compat6=on"},
	} {
		t.Run(c.name, func(t *testing.T) {
			img := filepath.Join(dir, c.name+".vmdk")
			qemuTool(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", c.opts, raw, img)
			d := checkAgainstQemu(t, img)
			if got := hashDisk(t, d); got != rawSum {
				t.Fatalf("sha256 %s differs from the source raw %s", got, rawSum)
			}
		})
	}
}

// TestQemuZeroedGrainsAndChain builds a 3-level backing chain with
// qemu-io writes, including zeroed grains that hide the parent, and
// compares each level and the merged allocation map with qemu.
func TestQemuZeroedGrainsAndChain(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.vmdk")
	mid := filepath.Join(dir, "mid.vmdk")
	top := filepath.Join(dir, "top.vmdk")
	qio := func(img string, cmds ...string) {
		args := []string{"-f", "vmdk"}
		for _, c := range cmds {
			args = append(args, "-c", c)
		}
		qemuTool(t, "qemu-io", append(args, img)...)
	}
	qemuTool(t, "qemu-img", "create", "-f", "vmdk", "-o", "zeroed_grain=on", base, "64M")
	qio(base, "write -P 0x11 0 8M", "write -P 0x12 40M 1M", "write -P 0x13 63M 1M")
	qemuTool(t, "qemu-img", "create", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "base.vmdk", "-F", "vmdk", mid)
	qio(mid, "write -P 0x21 1M 1M", "write -z 4M 1M", "write -P 0x22 50M 64k")
	qemuTool(t, "qemu-img", "create", "-f", "vmdk", "-o", "zeroed_grain=on", "-b", "mid.vmdk", "-F", "vmdk", top)
	qio(top, "write -P 0x31 1536k 1M", "write -z 40M 512k", "write -P 0x32 60M 4k")

	for _, img := range []string{base, mid, top} {
		checkAgainstQemu(t, img)
	}
	d := checkAgainstQemu(t, top)
	if len(d.Links()) != 3 {
		t.Fatalf("chain of %d links, want 3", len(d.Links()))
	}
	for i, l := range d.Links() {
		if i+1 < len(d.Links()) && l.ParentCID != d.Links()[i+1].CID {
			t.Fatalf("link %d parentCID %08x != parent CID %08x", i, l.ParentCID, d.Links()[i+1].CID)
		}
	}
	runs, err := d.Allocated()
	if err != nil {
		t.Fatal(err)
	}
	// The map must say which level holds what, with qemu's zeroed grains
	// as Zero runs hiding the parents.
	at := func(off int64) Run {
		for _, r := range runs {
			if off >= r.Off && off < r.Off+r.Len {
				return r
			}
		}
		return Run{State: Unallocated, Level: -1}
	}
	for _, c := range []struct {
		off   int64
		st    State
		level int
	}{
		{0, Data, 2}, {1 << 20, Data, 1}, {1536 << 10, Data, 0}, {4 << 20, Zero, 1}, {40 << 20, Zero, 0},
		{40<<20 + 512<<10, Data, 2}, {50 << 20, Data, 1}, {60 << 20, Data, 0}, {63 << 20, Data, 2}, {20 << 20, Unallocated, -1},
	} {
		if r := at(c.off); r.State != c.st || r.Level != c.level {
			t.Errorf("at %d: %v level %d, want %v level %d", c.off, r.State, r.Level, c.st, c.level)
		}
	}
	// per-link reads: the top link alone holds only its own writes
	buf := make([]byte, 4096)
	if _, err := d.Links()[0].ReadAt(buf, 0); err != nil || !bytes.Equal(buf, make([]byte, 4096)) {
		t.Fatalf("top link alone at 0: %v, want zeros", err)
	}
	if _, err := d.Links()[0].ReadAt(buf, 60<<20); err != nil || buf[0] != 0x32 || buf[4095] != 0x32 {
		t.Fatalf("top link alone at 60M: %v %x", err, buf[0])
	}
}

// TestQemuSplitLarge reads a split twoGbMaxExtentSparse disk larger than
// 4 GiB (sparse on disk) with data in the first and last extents.
func TestQemuSplitLarge(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "big.vmdk")
	const size = 5<<30 + 64<<10
	qemuTool(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse", img, "5242944K")
	qemuTool(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x5a 0 64k", "-c", "write -P 0xa5 5368709120 64k",
		"-c", "write -P 0x3c 2147450880 65536", img)
	d := checkAgainstQemu(t, img)
	if d.Size() != size {
		t.Fatalf("size %d, want %d", d.Size(), size)
	}
	if n := len(d.Links()[0].Extents); n != 3 {
		t.Fatalf("%d extents, want 3", n)
	}
	buf := make([]byte, 512)
	if _, err := d.ReadAt(buf, size-512); err != nil || buf[511] != 0xa5 {
		t.Fatalf("last sector: %v %x", err, buf[511])
	}
}

// TestFlatHoles: a thin flat extent maps its file holes as Zero runs, so
// exports skip them.
func TestFlatHoles(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "thin.vmdk")
	qemuTool(t, "qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", img, "64M")
	qemuTool(t, "qemu-io", "-f", "vmdk", "-c", "write -P 0x77 10M 1M", img)
	d := checkAgainstQemu(t, img)
	runs, err := d.Allocated()
	if err != nil {
		t.Fatal(err)
	}
	var data int64
	for _, r := range runs {
		if r.State == Data && r.Off == 0 && r.Len <= 4096 {
			continue // qemu allocates the first block of every file it creates
		}
		if r.State == Data {
			data += r.Len
			if r.Off > 10<<20 || r.Off+r.Len < 11<<20 {
				t.Errorf("data run %+v away from the write", r)
			}
		}
	}
	if data < 1<<20 || data > 2<<20 {
		t.Fatalf("%d data bytes in %+v, want about 1 MiB", data, runs)
	}
}
