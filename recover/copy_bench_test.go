//go:build linux

package recover

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDiskCopy decrypts a 512 MiB fully allocated encrypted
// monolithicSparse disk to a sparse raw file in-process with 1 and 2 jobs,
// reporting wall and CPU time (CPU time per GiB does not depend on how
// busy the machine is).
func BenchmarkDiskCopy(b *testing.B) {
	dir := b.TempDir()
	raw := filepath.Join(dir, "content.raw")
	writeContent(b, raw, 512<<20, 1<<20, 512<<20)
	v := makeBenchVM(b, dir, raw)
	os.Remove(raw)
	od, err := vm.OpenDisk(context.Background(), filepath.Join(v.vm, "fixture.vmdk"), keys.NewResolver(keys.NewPassphrase([]byte(v.pass))), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer od.Close()
	d := od.Plain
	run := func(jobs int) (time.Duration, time.Duration) {
		out := filepath.Join(dir, "out.img")
		defer os.Remove(out)
		f, err := os.Create(out)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		f.Truncate(d.Size())
		c0, t0 := cpuTime(), time.Now()
		if _, err := vmdk.Copy(context.Background(), f, d, d.Size(), d.Runs(), &vmdk.CopyOptions{Jobs: jobs, Hash: true}); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0), cpuTime() - c0
	}
	run(2) // warm
	b.ResetTimer()
	for b.Loop() {
		w1, c1 := run(1)
		w2, c2 := run(2)
		gib := float64(d.Size()) / (1 << 30)
		b.ReportMetric(w1.Seconds()/w2.Seconds(), "x-jobs2-vs-jobs1")
		b.ReportMetric(float64(d.Size())/w1.Seconds()/(1<<20), "MiB/s-jobs1")
		b.ReportMetric(float64(d.Size())/w2.Seconds()/(1<<20), "MiB/s-jobs2")
		b.ReportMetric(c1.Seconds()/gib, "cpu-s/GiB-jobs1")
		b.ReportMetric(c2.Seconds()/gib, "cpu-s/GiB-jobs2")
	}
}
