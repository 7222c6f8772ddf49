//go:build linux

package vmdk

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// benchRaw writes a 1 GiB raw disk image of mixed content, per 1 MiB
// chunk: a quarter random (incompressible), half text-like (compressible),
// a quarter zeros (written as a hole).
func benchRaw(b *testing.B, path string, size int64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(1, 1))
	chunk := make([]byte, 1<<20)
	words := []string{"vmcrypt ", "sector ", "grain ", "the ", "disk ", "0x1f2e ", "recover ", "\n"}
	for off := int64(0); off < size; off += int64(len(chunk)) {
		switch (off >> 20) % 4 {
		case 0:
			for i := 0; i+8 <= len(chunk); i += 8 {
				v := rng.Uint64()
				for k := range 8 {
					chunk[i+k] = byte(v >> (8 * k))
				}
			}
		case 1, 2:
			for i := 0; i < len(chunk); {
				i += copy(chunk[i:], words[rng.IntN(len(words))])
			}
		case 3:
			continue // hole
		}
		if _, err := f.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkWriteStream writes a 1 GiB raw image as streamOptimized with
// Write and with `qemu-img convert -O vmdk -o subformat=streamOptimized`,
// timing both in the same run; x-vs-qemu is qemu's time over ours.
func BenchmarkWriteStream(b *testing.B) { benchWriteVsQemu(b, SubformatStreamOptimized) }

// BenchmarkWriteSubformats does the same for the other subformats.
func BenchmarkWriteSubformats(b *testing.B) {
	for _, sf := range []string{SubformatMonolithicSparse, SubformatMonolithicFlat, SubformatTwoGbMaxExtentSparse} {
		b.Run(sf, func(b *testing.B) { benchWriteVsQemu(b, sf) })
	}
}

func benchWriteVsQemu(b *testing.B, sf string) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		b.Fatal("qemu-img is required (scripts/peers.sh installs it)")
	}
	const size = 1 << 30
	dir := b.TempDir()
	raw := filepath.Join(dir, "in.raw")
	benchRaw(b, raw, size)
	src, err := os.Open(raw)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	b.SetBytes(size)
	b.ResetTimer()
	var ours, theirs time.Duration
	var ourSize, theirSize int64
	for i := 0; i < b.N; i++ {
		od, qd := filepath.Join(dir, "ours"), filepath.Join(dir, "qemu")
		os.RemoveAll(od)
		os.RemoveAll(qd)
		os.Mkdir(od, 0o755)
		os.Mkdir(qd, 0o755)
		t0 := time.Now()
		if err := Write(context.Background(), filepath.Join(od, "d.vmdk"), src, size, nil, &WriteOptions{Subformat: sf}); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		b.StopTimer()
		t1 := time.Now()
		if o, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+sf, raw, filepath.Join(qd, "d.vmdk")).CombinedOutput(); err != nil {
			b.Fatalf("qemu-img: %v\n%s", err, o)
		}
		theirs += time.Since(t1)
		ourSize, theirSize = duSize(od), duSize(qd)
		b.StartTimer()
	}
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "x-vs-qemu")
	b.ReportMetric(float64(ourSize)/float64(theirSize), "size-vs-qemu")
}

// duSize is the space the files of dir take on disk (holes excluded).
func duSize(dir string) int64 {
	ents, _ := os.ReadDir(dir)
	var n int64
	for _, e := range ents {
		if st, err := os.Stat(filepath.Join(dir, e.Name())); err == nil {
			n += allocatedBytes(st)
		}
	}
	return n
}
