package vmdk

import (
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
func BenchmarkWriteStream(b *testing.B) {
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
		out := filepath.Join(dir, "ours.vmdk")
		t0 := time.Now()
		if err := Write(out, src, size, nil, &WriteOptions{Subformat: SubformatStreamOptimized, Overwrite: true}); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		b.StopTimer()
		qout := filepath.Join(dir, "qemu.vmdk")
		t1 := time.Now()
		if o, err := exec.Command("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, qout).CombinedOutput(); err != nil {
			b.Fatalf("qemu-img: %v\n%s", err, o)
		}
		theirs += time.Since(t1)
		if st, err := os.Stat(out); err == nil {
			ourSize = st.Size()
		}
		if st, err := os.Stat(qout); err == nil {
			theirSize = st.Size()
		}
		os.Remove(qout)
		b.StartTimer()
	}
	b.ReportMetric(theirs.Seconds()/ours.Seconds(), "x-vs-qemu")
	b.ReportMetric(float64(ourSize)/float64(theirSize), "size-vs-qemu")
}
