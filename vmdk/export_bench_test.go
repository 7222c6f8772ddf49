//go:build linux

package vmdk

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"

	"syscall"
	"testing"
	"time"
)

// writeBenchRaw writes a 1 GiB sparse raw file: 3 of every 4 MiB hold
// data, each 4 KiB block half random bytes and half a repeating pattern
// (deflate shrinks it to a bit over half), the rest are holes.
func writeBenchRaw(b *testing.B, path string, size int64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewPCG(42, 42))
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += 4 << 20 {
		for i := 0; i < len(buf); i += 8 {
			if (i/2048)%2 == 0 {
				v := r.Uint64()
				for k := range 8 {
					buf[i+k] = byte(v >> (8 * k))
				}
			} else {
				for k := range 8 {
					buf[i+k] = byte(i / 4096)
				}
			}
		}
		if _, err := f.WriteAt(buf[:3<<20], off); err != nil {
			b.Fatal(err)
		}
	}
}

// peakHeap samples the live heap every few milliseconds until stop.
func peakHeap(stop <-chan struct{}) <-chan uint64 {
	out := make(chan uint64, 1)
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

// selfCPU is the user+system CPU time of this process so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkExportVsQemu times vmcrypt's export to a sparse raw file and
// `qemu-img convert -O raw` of the same 1 GiB monolithicSparse and
// streamOptimized images in the same run, and reports qemu's time over
// ours (x-vs-qemu, wall clock, higher is better), the same for CPU time
// (cpu-x-vs-qemu: less sensitive to a loaded machine, but it does not
// count our parallelism), and the peak live heap.
func BenchmarkExportVsQemu(b *testing.B) {
	dir := b.TempDir()
	raw := filepath.Join(dir, "src.raw")
	const size = 1 << 30
	writeBenchRaw(b, raw, size)
	imgs := map[string]string{}
	for _, sub := range []string{"monolithicSparse", "streamOptimized"} {
		img := filepath.Join(dir, sub+".vmdk")
		qemuTool(b, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat="+sub, raw, img)
		imgs[sub] = img
	}
	os.Remove(raw)
	// Outputs go to tmpfs when there is one, so that both tools are timed
	// on reading and inflating rather than on the disk's writeback.
	outDir := dir
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		outDir, err = os.MkdirTemp("/dev/shm", "vmcrypt-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(outDir) })
	}
	for _, sub := range []string{"monolithicSparse", "streamOptimized"} {
		img := imgs[sub]
		b.Run(sub, func(b *testing.B) {
			qemuTool(b, "qemu-img", "convert", "-O", "raw", img, filepath.Join(dir, "warm.raw")) // page cache
			os.Remove(filepath.Join(dir, "warm.raw"))
			var ours, theirs, oursCPU, theirsCPU time.Duration
			var peak uint64
			var qemuRSS int64
			b.ResetTimer()
			for range b.N {
				out := filepath.Join(outDir, "ours.raw")
				runtime.GC()
				stop := make(chan struct{})
				pk := peakHeap(stop)
				cpu0 := selfCPU()
				start := time.Now()
				d, err := Open(img, nil)
				if err != nil {
					b.Fatal(err)
				}
				runs, err := d.Allocated()
				if err != nil {
					b.Fatal(err)
				}
				if err := ExportRaw(context.Background(), out, d, d.Size(), runs, nil); err != nil {
					b.Fatal(err)
				}
				d.Close()
				ours += time.Since(start)
				oursCPU += selfCPU() - cpu0
				close(stop)
				peak = max(peak, <-pk)
				os.Remove(out)

				qout := filepath.Join(outDir, "qemu.raw")
				start = time.Now()
				cmd := exec.Command("qemu-img", "convert", "-O", "raw", img, qout)
				if o, err := cmd.CombinedOutput(); err != nil {
					b.Fatalf("qemu-img: %v %s", err, o)
				}
				theirs += time.Since(start)
				if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
					qemuRSS = max(qemuRSS, ru.Maxrss)
				}
				theirsCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
				os.Remove(qout)
			}
			b.StopTimer()
			b.ReportMetric(theirs.Seconds()/ours.Seconds(), "x-vs-qemu")
			b.ReportMetric(theirsCPU.Seconds()/oursCPU.Seconds(), "cpu-x-vs-qemu")
			b.ReportMetric(float64(size)/(1<<20)/(ours.Seconds()/float64(b.N)), "MiB/s")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(qemuRSS)/1024, "qemu-maxrss-MiB")
		})
	}
}
