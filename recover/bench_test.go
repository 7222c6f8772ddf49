package recover

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

// The recover benchmarks run the built vmcrypt binary, as a user does, so
// that wall time and peak RSS (rusage Maxrss) are those of the real
// command. Peers are timed in the same run and reported as ratios:
//
//	x-vs-qemu          qemu-img convert -O raw of the plain disk / vmcrypt recover --format raw of the encrypted one (goal >= 0.8)
//	x-jobs2-vs-jobs1   recover --jobs 1 / recover --jobs 2 (goal 1.7)
//	MiB-peak-rss       vmcrypt's peak RSS (goal < 256)

// writeContent writes a raw image of size bytes: data in [0, dataBytes)
// spread as 1 MiB pieces every stride bytes (stride = 1 MiB: fully
// allocated), holes elsewhere. The data is non-zero and does not repeat.
func writeContent(tb testing.TB, path string, size, stride, dataBytes int64) {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	x := uint64(0x9e3779b97f4a7c15)
	var written int64
	for off := int64(0); off < size && written < dataBytes; off += stride {
		for i := 0; i < len(buf); i += 8 {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			binary.LittleEndian.PutUint64(buf[i:], x)
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			tb.Fatal(err)
		}
		written += int64(len(buf))
	}
}

// buildBinary builds cmd/vmcrypt into dir.
func buildBinary(tb testing.TB, dir string) string {
	bin := filepath.Join(dir, "vmcrypt")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/vmcrypt/vmcrypt/cmd/vmcrypt")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runTimed runs a command and returns its wall time and peak RSS (MiB).
func runTimed(tb testing.TB, env []string, name string, args ...string) (time.Duration, float64) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	d := time.Since(t0)
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return d, float64(ru.Maxrss) / 1024
}

type benchVM struct {
	dir, vm, pass, plainVMDK string
}

// makeBenchVM makes a passphrase fixture VM whose disk (monolithicSparse)
// holds the raw image at raw, and the same disk written plain.
func makeBenchVM(tb testing.TB, dir, raw string) benchVM {
	fxDir := filepath.Join(dir, "fx")
	fx, err := fixtures.Generate(fxDir, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicSparse, From: raw, Seed: 1, Partial: false})
	if err != nil {
		tb.Fatal(err)
	}
	pass, err := os.ReadFile(filepath.Join(fxDir, fx.Manifest.Secrets.PassphraseFile))
	if err != nil {
		tb.Fatal(err)
	}
	rd, err := fixtures.OpenRaw(raw)
	if err != nil {
		tb.Fatal(err)
	}
	defer rd.Close()
	var runs []vmdk.Run
	for _, a := range rd.Allocated() {
		runs = append(runs, vmdk.Run{Off: a[0], Len: a[1], State: vmdk.Data})
	}
	plain := filepath.Join(dir, "plain.vmdk")
	if err := vmdk.Write(plain, rd, rd.Size(), runs, &vmdk.WriteOptions{Jobs: 2}); err != nil {
		tb.Fatal(err)
	}
	return benchVM{dir: dir, vm: filepath.Join(fxDir, fixtures.VMDir), pass: strings.TrimSpace(string(pass)), plainVMDK: plain}
}

func (v benchVM) recover(tb testing.TB, bin string, jobs int) (time.Duration, float64) {
	out := filepath.Join(v.dir, fmt.Sprintf("out-%d", time.Now().UnixNano()))
	defer os.RemoveAll(out)
	args := []string{"recover", v.vm, "-o", out, "--format", "raw", "--quiet"}
	if jobs > 0 {
		args = append(args, "--jobs", fmt.Sprint(jobs))
	}
	return runTimed(tb, []string{"VMCRYPT_PASSPHRASE=" + v.pass}, bin, args...)
}

func (v benchVM) qemu(tb testing.TB, qemu string) time.Duration {
	out := filepath.Join(v.dir, "q.raw")
	defer os.Remove(out)
	d, _ := runTimed(tb, nil, qemu, "convert", "-O", "raw", v.plainVMDK, out)
	return d
}

func minDur(a, b time.Duration) time.Duration { return min(a, b) }

// BenchmarkRecoverVsQemu: a 2 GiB fully allocated encrypted monolithicSparse
// disk, recovered to raw, against qemu-img convert -O raw of the same disk
// written plain; then --jobs 2 against --jobs 1, and peak RSS.
func BenchmarkRecoverVsQemu(b *testing.B) {
	qemu, err := exec.LookPath("qemu-img")
	if err != nil {
		b.Fatal("qemu-img is needed (make peers)")
	}
	dir := b.TempDir()
	bin := buildBinary(b, dir)
	raw := filepath.Join(dir, "content.raw")
	writeContent(b, raw, 2<<30, 1<<20, 2<<30)
	v := makeBenchVM(b, dir, raw)
	os.Remove(raw)
	b.ResetTimer()
	for b.Loop() {
		// Warm the page cache, then take the best of two of each.
		v.qemu(b, qemu)
		tq := minDur(v.qemu(b, qemu), v.qemu(b, qemu))
		t0, rss0 := v.recover(b, bin, 0)
		t0b, rss0b := v.recover(b, bin, 0)
		tr := minDur(t0, t0b)
		t1a, _ := v.recover(b, bin, 1)
		t1b, _ := v.recover(b, bin, 1)
		t2a, _ := v.recover(b, bin, 2)
		t2b, _ := v.recover(b, bin, 2)
		t1, t2 := minDur(t1a, t1b), minDur(t2a, t2b)
		b.ReportMetric(tq.Seconds()/tr.Seconds(), "x-vs-qemu")
		b.ReportMetric(t1.Seconds()/t2.Seconds(), "x-jobs2-vs-jobs1")
		b.ReportMetric(max(rss0, rss0b), "MiB-peak-rss-2G")
		b.ReportMetric(tq.Seconds(), "s-qemu")
		b.ReportMetric(tr.Seconds(), "s-recover")
		b.ReportMetric(float64(2<<30)/tr.Seconds()/(1<<20), "MiB/s-recover")
		b.ReportMetric(t1.Seconds(), "s-jobs1")
		b.ReportMetric(t2.Seconds(), "s-jobs2")
	}
}

// BenchmarkRecoverRSS16G: a 16 GiB virtual disk with 384 MiB allocated
// (1 MiB every 42 MiB): peak RSS of recover, raw and vmdk outputs.
func BenchmarkRecoverRSS16G(b *testing.B) {
	dir := b.TempDir()
	bin := buildBinary(b, dir)
	raw := filepath.Join(dir, "content.raw")
	writeContent(b, raw, 16<<30, 42<<20, 384<<20)
	v := makeBenchVM(b, dir, raw)
	os.Remove(raw)
	b.ResetTimer()
	for b.Loop() {
		t, rss := v.recover(b, bin, 0)
		out := filepath.Join(dir, "outv")
		_, rssV := runTimed(b, []string{"VMCRYPT_PASSPHRASE=" + v.pass}, bin, "recover", v.vm, "-o", out, "--quiet")
		os.RemoveAll(out)
		b.ReportMetric(rss, "MiB-peak-rss-16G-raw")
		b.ReportMetric(rssV, "MiB-peak-rss-16G-vmdk")
		b.ReportMetric(t.Seconds(), "s-recover-raw")
	}
}
