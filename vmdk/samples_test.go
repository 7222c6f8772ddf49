package vmdk

import (
	"bufio"
	"compress/bzip2"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// hashVirtual hashes size bytes of r through the copy engine, reading
// only the runs and hashing zeros for holes and Zero runs, so a mostly
// empty 16 GiB disk hashes in seconds and constant memory.
func hashVirtual(t testing.TB, r io.ReaderAt, size int64, runs []Run) string {
	t.Helper()
	sum, err := Copy(context.Background(), nil, r, size, runs, &CopyOptions{Hash: true})
	if err != nil {
		t.Fatalf("hashing: %v", err)
	}
	return hex.EncodeToString(sum[:])
}

// hashDisk hashes the whole virtual disk through Allocated + ReadAt.
func hashDisk(t testing.TB, d *Disk) string {
	t.Helper()
	runs, err := d.Allocated()
	if err != nil {
		t.Fatalf("Allocated: %v", err)
	}
	return hashVirtual(t, d, d.Size(), runs)
}

// bunzip unpacks a .bz2 sample into dir and returns the path.
func bunzip(t testing.TB, src, dir string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".bz2"))
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, bzip2.NewReader(bufio.NewReader(in))); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

type expected struct {
	path   string
	size   int64
	sha256 string // or "corrupt"
}

func readExpected(t testing.TB) []expected {
	b, err := os.ReadFile(filepath.Join(samplesDir, "EXPECTED.tsv"))
	if err != nil {
		t.Fatalf("EXPECTED.tsv: %v", err)
	}
	var out []expected
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, "\t")
		if len(f) != 3 || strings.HasPrefix(line, "#") {
			continue
		}
		e := expected{path: strings.TrimSuffix(f[0], " (bunzip2 first)"), sha256: f[2]}
		if f[1] != "-" {
			e.size, _ = strconv.ParseInt(f[1], 10, 64)
		} else {
			e.sha256 = "corrupt"
		}
		out = append(out, e)
	}
	if len(out) < 9 {
		t.Fatalf("EXPECTED.tsv lists %d samples", len(out))
	}
	return out
}

// TestSamples reads every shared sample and compares the sha256 of its
// virtual disk with EXPECTED.tsv (qemu-img's), or checks the refusal.
func TestSamples(t *testing.T) {
	tmp := t.TempDir()
	for _, e := range readExpected(t) {
		t.Run(e.path, func(t *testing.T) {
			p := filepath.Join(samplesDir, e.path)
			if _, err := os.Stat(p + ".bz2"); err == nil {
				p = bunzip(t, p+".bz2", tmp)
			}
			d, err := Open(p, nil)
			if e.sha256 == "corrupt" {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Open = %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			if d.Size() != e.size {
				t.Fatalf("size %d, want %d", d.Size(), e.size)
			}
			if got := hashDisk(t, d); got != e.sha256 {
				t.Fatalf("sha256 %s, want %s", got, e.sha256)
			}
			for _, w := range d.Warnings() {
				t.Logf("warning: %s", w)
			}
		})
	}
}

// TestAFL9Bounded proves the fuzzed afl9.vmdk is refused without a large
// allocation.
func TestAFL9Bounded(t *testing.T) {
	p := bunzip(t, filepath.Join(samplesDir, "qemu-iotests/afl9.vmdk.bz2"), t.TempDir())
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 10 {
		_, err := Open(p, nil)
		var fe *FormatError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &fe) || fe.Offset < 0 || fe.Offset >= 512 {
			t.Fatalf("Open = %v, want ErrCorrupt in the header", err)
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("10 refusals allocated %d bytes", n)
	}
}
