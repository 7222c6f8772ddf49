//go:build linux

package nbd

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Benchmarks against nbdkit's file plugin serving the same plain file, in
// the same run: nbdcopy of 1 GiB to null:, and fio's nbd engine doing
// random 4 KiB reads with 1 and 8 readers (one connection each). The file
// is in the page cache for both servers.

const benchSize = 1 << 30

// benchFile writes benchSize random bytes and reads them back once so the
// page cache holds them.
func benchFile(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "plain.raw")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{42})
	buf := make([]byte, 4<<20)
	for off := int64(0); off < benchSize; off += int64(len(buf)) {
		r.Read(buf)
		if _, err := f.WriteAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	for off := int64(0); off < benchSize; off += int64(len(buf)) {
		if _, err := f.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
	return path
}

// serveFile serves path as export "x" on a private socket; it stops with
// the benchmark.
func serveFile(b *testing.B, path string) string {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := ListenUnix("", "nbd.sock")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	s := &Server{Exports: []Export{{Name: "x", Size: benchSize, Data: f}}}
	go func() { done <- s.Serve(ctx, ln) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
		f.Close()
	})
	return fmt.Sprintf("nbd+unix:///x?socket=%s", ln.Path)
}

// serveNbdkit runs nbdkit's file plugin, read-only, on a socket, and
// returns its URI and PID.
func serveNbdkit(b *testing.B, path string) (string, int) {
	b.Helper()
	sock := filepath.Join(b.TempDir(), "nbdkit.sock")
	cmd := exec.Command("nbdkit", "-r", "-f", "-e", "x", "-U", sock, "file", "file="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("nbdkit did not start: %s", stderr.Bytes())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Sprintf("nbd+unix:///x?socket=%s", sock), cmd.Process.Pid
}

// selfCPU is this process's user+system CPU time (the in-process server;
// peers run as child processes and are not counted).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pidCPU is a process's user+system CPU time from /proc (10 ms ticks).
func pidCPU(b *testing.B, pid int) time.Duration {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the ")" that ends the command name: utime is the 12th,
	// stime the 13th.
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+stt) * 10 * time.Millisecond
}

func timeCmd(b *testing.B, name string, args ...string) time.Duration {
	b.Helper()
	t0 := time.Now()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		b.Fatalf("%s %q: %v: %s", name, args, err, out)
	}
	return time.Since(t0)
}

// BenchmarkNbdcopyVsNbdkit: nbdcopy (its defaults: 4 connections, 64
// requests of 256 KiB in flight) of a 1 GiB export to null:, best of 3
// alternating runs per server, and each server's CPU time per GiB.
func BenchmarkNbdcopyVsNbdkit(b *testing.B) {
	needPeers(b, "nbdcopy", "nbdkit")
	path := benchFile(b)
	ours := serveFile(b, path)
	theirs, pid := serveNbdkit(b, path)
	b.ResetTimer()
	for range b.N {
		bestOurs, bestKit := time.Duration(1<<62), time.Duration(1<<62)
		var oCPU, kCPU time.Duration
		const runs = 3
		for range runs {
			c0 := selfCPU()
			bestOurs = min(bestOurs, timeCmd(b, "nbdcopy", ours, "null:"))
			oCPU += selfCPU() - c0
			c0 = pidCPU(b, pid)
			bestKit = min(bestKit, timeCmd(b, "nbdcopy", theirs, "null:"))
			kCPU += pidCPU(b, pid) - c0
		}
		b.ReportMetric(float64(benchSize)/bestOurs.Seconds()/1e6, "MB/s")
		b.ReportMetric(float64(benchSize)/bestKit.Seconds()/1e6, "nbdkit-MB/s")
		b.ReportMetric(bestKit.Seconds()/bestOurs.Seconds(), "x-vs-nbdkit")
		b.ReportMetric(oCPU.Seconds()/runs, "cpu-s/GiB")
		b.ReportMetric(kCPU.Seconds()/runs, "nbdkit-cpu-s/GiB")
	}
	b.SetBytes(benchSize)
}

// fioIOPS runs fio's nbd engine: random 4 KiB reads, jobs readers of
// queue depth 1, for 2 seconds.
func fioIOPS(b *testing.B, uri string, jobs int) float64 {
	b.Helper()
	out, err := exec.Command("fio", "--name=r", "--ioengine=nbd", "--uri="+uri, "--rw=randread",
		"--bs=4k", "--numjobs="+strconv.Itoa(jobs), "--iodepth=1", "--time_based", "--runtime=2",
		"--group_reporting", "--output-format=json").Output()
	if err != nil {
		b.Fatalf("fio: %v: %s", err, out)
	}
	// fio prints "connected to NBD server" lines before the JSON.
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

// BenchmarkRandRead4K: IOPS of random 4 KiB reads, against nbdkit, best
// of 3 alternating fio runs per server, and each server's CPU time per
// read (less sensitive to other load on the machine than IOPS).
func BenchmarkRandRead4K(b *testing.B) {
	needPeers(b, "fio", "nbdkit")
	path := benchFile(b)
	ours := serveFile(b, path)
	theirs, pid := serveNbdkit(b, path)
	for _, jobs := range []int{1, 8} {
		b.Run(fmt.Sprintf("readers=%d", jobs), func(b *testing.B) {
			for range b.N {
				var o, k float64
				var oCPU, kCPU time.Duration
				var oIOs, kIOs float64
				for range 3 {
					c0 := selfCPU()
					iops := fioIOPS(b, ours, jobs)
					oCPU += selfCPU() - c0
					oIOs += iops * 2
					o = max(o, iops)
					c0 = pidCPU(b, pid)
					iops = fioIOPS(b, theirs, jobs)
					kCPU += pidCPU(b, pid) - c0
					kIOs += iops * 2
					k = max(k, iops)
				}
				b.ReportMetric(o, "IOPS")
				b.ReportMetric(k, "nbdkit-IOPS")
				b.ReportMetric(o/k, "x-vs-nbdkit")
				b.ReportMetric(oCPU.Seconds()/oIOs*1e6, "cpu-us/read")
				b.ReportMetric(kCPU.Seconds()/kIOs*1e6, "nbdkit-cpu-us/read")
			}
		})
	}
}
