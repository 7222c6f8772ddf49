//go:build linux

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

// Benchmarks of vmcrypt serve and vmcrypt mount, each against its peers in
// the same run: the vmcrypt binary (built here) serves or mounts a 1 GiB
// encrypted disk (fully allocated, random data, monolithicSparse), the peers
// read the same plaintext as a raw file. Everything is in the page cache
// (the encrypted VMDK and the plain raw are read once first).

const vwBenchSize = 1 << 30

// vwBenchSetup writes a random 1 GiB raw disk and encrypts it into a VM.
// It returns the plain raw, the VM folder and the key options.
func vwBenchSetup(b *testing.B, size int64) (plain, vmDir string, keys []string) {
	b.Helper()
	dir := b.TempDir()
	plain = filepath.Join(dir, "plain.raw")
	f, err := os.Create(plain)
	if err != nil {
		b.Fatal(err)
	}
	r := rand.NewChaCha8([32]byte{13})
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		r.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	fx, err := fixtures.Generate(filepath.Join(dir, "fx"), fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicSparse, From: plain, Seed: 1330})
	if err != nil {
		b.Fatal(err)
	}
	fx.Close()
	vmDir = filepath.Join(fx.Dir, fixtures.VMDir)
	vwWarm(b, plain)
	vwWarm(b, filepath.Join(vmDir, "fixture.vmdk"))
	return plain, vmDir, recKeyArgs(fx)
}

// vwWarm reads a file once so the page cache holds it.
func vwWarm(b *testing.B, p string) {
	b.Helper()
	vwTime(b, "dd", "if="+p, "of=/dev/null", "bs=4M")
}

// vwBinary builds the vmcrypt binary (benchmarks measure the real
// process: its CPU and memory, not the test binary's).
func vwBinary(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "vmcrypt")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v: %s", err, out)
	}
	return bin
}

// vwProc is a background process of a benchmark, stopped with it.
type vwProc struct {
	cmd    *exec.Cmd
	stderr *vwLockedBuffer
}

func vwStartProc(b *testing.B, name string, args ...string) *vwProc {
	b.Helper()
	p := &vwProc{cmd: exec.Command(name, args...), stderr: &vwLockedBuffer{}}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		p.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-done
		}
	})
	return p
}

// running reports whether the process is alive (not exited, not a zombie).
func (p *vwProc) running() bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// vwServe runs `vmcrypt serve` on a socket and returns the export's URI.
func vwServe(b *testing.B, bin, vmDir string, keys []string) (string, *vwProc) {
	b.Helper()
	sock := filepath.Join(vwShortDir(b), "s.sock")
	p := vwStartProc(b, bin, append([]string{"serve", vmDir, "--socket", sock}, keys...)...)
	vwWaitFor(b, "vmcrypt serve", p.running, p.stderr, func() bool { _, err := os.Stat(sock); return err == nil })
	return vwNbdURI(sock, "fixture.raw"), p
}

// vwNbdkit serves a plain file with nbdkit's file plugin, read-only.
func vwNbdkit(b *testing.B, path string) (string, string, *vwProc) {
	b.Helper()
	sock := filepath.Join(vwShortDir(b), "k.sock")
	p := vwStartProc(b, vwPeer(b, "nbdkit", "nbdkit"), "-r", "-f", "-e", "x", "-U", sock, "file", "file="+path)
	vwWaitFor(b, "nbdkit", p.running, p.stderr, func() bool { _, err := os.Stat(sock); return err == nil })
	return vwNbdURI(sock, "x"), sock, p
}

// vwMountProc runs `vmcrypt mount` and returns the mounted disk.
func vwMountProc(b *testing.B, bin, vmDir string, keys []string) (string, *vwProc) {
	b.Helper()
	mnt := filepath.Join(b.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	p := vwStartProc(b, bin, append([]string{"mount", vmDir, mnt}, keys...)...)
	vwWaitFor(b, "vmcrypt mount", p.running, p.stderr, func() bool { return strings.Contains(p.stderr.String(), "mounted ") })
	return filepath.Join(mnt, "fixture.raw"), p
}

// vwNbdfuse mounts an NBD export as a file with nbdfuse (read-only).
func vwNbdfuse(b *testing.B, sock string) string {
	b.Helper()
	mnt := filepath.Join(b.TempDir(), "nbdfuse")
	os.Mkdir(mnt, 0o755)
	pid := filepath.Join(b.TempDir(), "nbdfuse.pid")
	p := vwStartProc(b, vwPeer(b, "nbdfuse", "libnbd-bin"), "-r", "-P", pid, mnt+"/disk", "--unix", sock)
	vwWaitFor(b, "nbdfuse", p.running, p.stderr, func() bool { _, err := os.Stat(pid); return err == nil })
	b.Cleanup(func() { exec.Command("fusermount3", "-u", mnt).Run() })
	return filepath.Join(mnt, "disk")
}

// vwTime runs a command and returns its wall time.
func vwTime(b *testing.B, name string, args ...string) time.Duration {
	b.Helper()
	t0 := time.Now()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %q: %v: %s", name, args, err, out)
	}
	return time.Since(t0)
}

// vwDrop drops a file's pages from the page cache (GNU dd's nocache: a
// FUSE file is then read through its server again).
func vwDrop(b *testing.B, p string) {
	b.Helper()
	vwTime(b, "dd", "if="+p, "iflag=nocache", "count=0", "status=none")
}

// vwBest is the best of n runs of f.
func vwBest(n int, f func() time.Duration) time.Duration {
	best := time.Duration(1 << 62)
	for range n {
		best = min(best, f())
	}
	return best
}

func vwMBs(d time.Duration) float64 { return vwBenchSize / d.Seconds() / 1e6 }

// BenchmarkServeNbdcopy: nbdcopy of the 1 GiB encrypted disk from
// `vmcrypt serve` to null:, against nbdkit's file plugin serving the plain
// raw (goal >= 0.8x), and `vmcrypt vmdk export` of the same disk to a raw
// file; best of 3 runs each.
func BenchmarkServeNbdcopy(b *testing.B) {
	nbdcopy := vwPeer(b, "nbdcopy", "libnbd-bin")
	bin := vwBinary(b)
	plain, vmDir, keys := vwBenchSetup(b, vwBenchSize)
	ours, _ := vwServe(b, bin, vmDir, keys)
	theirs, _, _ := vwNbdkit(b, plain)
	out := filepath.Join(b.TempDir(), "export.raw")
	b.ResetTimer()
	for range b.N {
		o := vwBest(3, func() time.Duration { return vwTime(b, nbdcopy, ours, "null:") })
		k := vwBest(3, func() time.Duration { return vwTime(b, nbdcopy, theirs, "null:") })
		e := vwBest(3, func() time.Duration {
			os.Remove(out)
			return vwTime(b, bin, append([]string{"vmdk", "export", filepath.Join(vmDir, "fixture.vmdk"), "-o", out}, keys...)...)
		})
		b.ReportMetric(vwMBs(o), "MB/s")
		b.ReportMetric(vwMBs(k), "nbdkit-MB/s")
		b.ReportMetric(vwMBs(e), "vmdk-export-MB/s")
		b.ReportMetric(k.Seconds()/o.Seconds(), "x-vs-nbdkit")
		b.ReportMetric(e.Seconds()/o.Seconds(), "x-vs-vmdk-export")
	}
	b.SetBytes(vwBenchSize)
}

// BenchmarkMountDD: dd bs=1M of the mounted DISK.raw (its pages dropped
// before each run, so every byte goes through FUSE and is decrypted),
// against dd of the plain raw from the page cache (goal >= 0.5x) and of
// nbdfuse over nbdkit's file plugin (pages dropped too; goal >= 1x); best
// of 3 runs each. warm-MB/s is a second read of the mounted file, served
// from the kernel's page cache (the mount keeps it between opens).
func BenchmarkMountDD(b *testing.B) {
	bin := vwBinary(b)
	plain, vmDir, keys := vwBenchSetup(b, vwBenchSize)
	disk, _ := vwMountProc(b, bin, vmDir, keys)
	_, sock, _ := vwNbdkit(b, plain)
	nf := vwNbdfuse(b, sock)
	dd := func(p string, drop bool) time.Duration {
		if drop {
			vwDrop(b, p)
		}
		return vwTime(b, "dd", "if="+p, "of=/dev/null", "bs=1M")
	}
	b.ResetTimer()
	for range b.N {
		m := vwBest(3, func() time.Duration { return dd(disk, true) })
		w := vwBest(3, func() time.Duration { return dd(disk, false) })
		c := vwBest(3, func() time.Duration { return dd(plain, false) })
		n := vwBest(3, func() time.Duration { return dd(nf, true) })
		b.ReportMetric(vwMBs(m), "MB/s")
		b.ReportMetric(vwMBs(w), "warm-MB/s")
		b.ReportMetric(vwMBs(c), "pagecache-MB/s")
		b.ReportMetric(vwMBs(n), "nbdfuse-MB/s")
		b.ReportMetric(c.Seconds()/m.Seconds(), "x-vs-pagecache")
		b.ReportMetric(n.Seconds()/m.Seconds(), "x-vs-nbdfuse")
	}
	b.SetBytes(vwBenchSize)
}

// vwFio runs fio random 4 KiB reads (queue depth 1 per reader) for 2 s and
// returns the IOPS: on a file with O_DIRECT (args "--filename=..."), or
// through fio's nbd engine ("--ioengine=nbd", "--uri=...").
func vwFio(b *testing.B, jobs int, target ...string) float64 {
	b.Helper()
	args := append([]string{"--name=r", "--rw=randread", "--bs=4k", "--numjobs=" + strconv.Itoa(jobs), "--iodepth=1",
		"--time_based", "--runtime=2", "--group_reporting", "--output-format=json"}, target...)
	out, err := exec.Command(vwPeer(b, "fio", "fio"), args...).Output()
	if err != nil {
		b.Fatalf("fio %q: %v: %s", args, err, out)
	}
	if i := bytes.IndexByte(out, '{'); i > 0 {
		out = out[i:]
	}
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOPS float64 `json:"iops"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Jobs) != 1 || res.Jobs[0].Error != 0 {
		b.Fatalf("fio output: %v: %s", err, out)
	}
	return res.Jobs[0].Read.IOPS
}

// BenchmarkRandRead4K: IOPS of random 4 KiB reads with 1 and 8 readers:
// the mount (O_DIRECT, so each read goes through FUSE and is decrypted)
// against nbdfuse over nbdkit file, and `vmcrypt serve` (fio's nbd engine)
// against nbdkit file.
func BenchmarkRandRead4K(b *testing.B) {
	bin := vwBinary(b)
	plain, vmDir, keys := vwBenchSetup(b, vwBenchSize)
	disk, _ := vwMountProc(b, bin, vmDir, keys)
	ours, _ := vwServe(b, bin, vmDir, keys)
	theirs, sock, _ := vwNbdkit(b, plain)
	nf := vwNbdfuse(b, sock)
	b.ResetTimer()
	for range b.N {
		for _, jobs := range []int{1, 8} {
			file := func(p string) []string { return []string{"--filename=" + p, "--ioengine=psync", "--direct=1"} }
			nbd := func(u string) []string { return []string{"--ioengine=nbd", "--uri=" + u} }
			// Best of 2 alternating runs: the machine is shared.
			var m, f, s, k float64
			for range 2 {
				m = max(m, vwFio(b, jobs, file(disk)...))
				f = max(f, vwFio(b, jobs, file(nf)...))
				s = max(s, vwFio(b, jobs, nbd(ours)...))
				k = max(k, vwFio(b, jobs, nbd(theirs)...))
			}
			j := fmt.Sprintf("-%dj", jobs)
			b.ReportMetric(m, "mount-IOPS"+j)
			b.ReportMetric(f, "nbdfuse-IOPS"+j)
			b.ReportMetric(m/f, "mount-x-vs-nbdfuse"+j)
			b.ReportMetric(s, "serve-IOPS"+j)
			b.ReportMetric(k, "nbdkit-IOPS"+j)
			b.ReportMetric(s/k, "serve-x-vs-nbdkit"+j)
		}
	}
}

// BenchmarkServePeakRSS16G: `vmcrypt serve` of a 16 GiB sparse encrypted
// disk (1 GiB of data in 64 runs of 16 MiB, holes between), copied end to
// end with nbdcopy to null:; the server's peak RSS (VmHWM) stays bounded
// whatever the disk size.
func BenchmarkServePeakRSS16G(b *testing.B) {
	nbdcopy := vwPeer(b, "nbdcopy", "libnbd-bin")
	bin := vwBinary(b)
	dir := b.TempDir()
	plain := filepath.Join(dir, "sparse.raw")
	f, err := os.Create(plain)
	if err != nil {
		b.Fatal(err)
	}
	const size, chunk = 16 << 30, 16 << 20
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	r := rand.NewChaCha8([32]byte{16})
	buf := make([]byte, chunk)
	for off := int64(0); off < size; off += 256 << 20 {
		r.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	f.Close()
	fx, err := fixtures.Generate(filepath.Join(dir, "fx"), fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicSparse, From: plain, Seed: 1316})
	if err != nil {
		b.Fatal(err)
	}
	fx.Close()
	os.Remove(plain)
	uri, p := vwServe(b, bin, filepath.Join(fx.Dir, fixtures.VMDir), recKeyArgs(fx))
	b.ResetTimer()
	for range b.N {
		d := vwTime(b, nbdcopy, uri, "null:")
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			b.Fatal(err)
		}
		var hwm float64
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "VmHWM:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				hwm = kb / 1024
			}
		}
		if hwm == 0 {
			b.Fatalf("no VmHWM in /proc/%d/status", p.cmd.Process.Pid)
		}
		b.ReportMetric(hwm, "peak-RSS-MiB")
		b.ReportMetric(float64(size)/d.Seconds()/1e6, "virtual-MB/s")
	}
}
