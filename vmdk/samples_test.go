package vmdk

import (
	"bufio"
	"compress/bzip2"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

var zeroBuf = make([]byte, 1<<20)

// hashZeros writes n zero bytes to h without allocating.
func hashZeros(h hash.Hash, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeroBuf)))
		h.Write(zeroBuf[:k])
		n -= k
	}
}

// hashVirtual hashes size bytes of r, reading only the runs and hashing
// zeros for holes and Zero runs, so a mostly empty 16 GiB disk hashes in
// seconds and constant memory.
func hashVirtual(t testing.TB, r io.ReaderAt, size int64, runs []Run) string {
	t.Helper()
	h := sha256.New()
	buf := make([]byte, 1<<20)
	pos := int64(0)
	for _, run := range runs {
		if run.Off < pos {
			t.Fatalf("runs out of order or overlapping at %d", run.Off)
		}
		hashZeros(h, run.Off-pos)
		if run.State == Zero {
			hashZeros(h, run.Len)
		} else {
			for o := run.Off; o < run.Off+run.Len; {
				n := min(int64(len(buf)), run.Off+run.Len-o)
				if _, err := r.ReadAt(buf[:n], o); err != nil {
					t.Fatalf("ReadAt(%d, %d): %v", n, o, err)
				}
				h.Write(buf[:n])
				o += n
			}
		}
		pos = run.Off + run.Len
	}
	if pos > size {
		t.Fatalf("runs end at %d beyond size %d", pos, size)
	}
	hashZeros(h, size-pos)
	return hex.EncodeToString(h.Sum(nil))
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
		t.Fatalf("EXPECTED.tsv: %v (is the shared folder beside the repo?)", err)
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
