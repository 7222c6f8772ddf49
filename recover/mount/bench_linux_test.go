package mount

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/xts"
	"golang.org/x/sys/unix"
)

// benchSize is the size of the file read by the peer benchmarks.
const benchSize = 1 << 30

// benchSetup writes a 1 GiB file, warms its page cache, mounts it through
// this package (Data is the plain file) and through nbdfuse over nbdkit
// file, and returns the three paths to read.
func benchSetup(b *testing.B) (plain, mounted, nbd string) {
	b.Helper()
	requireFUSE(b)
	nbdfuse := requireTool(b, "nbdfuse", "libnbd-bin")
	nbdkit := requireTool(b, "nbdkit", "nbdkit")
	requireTool(b, "dd", "coreutils")
	tmp := b.TempDir()
	plain = filepath.Join(tmp, "plain.raw")
	f, err := os.Create(plain)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for off := int64(0); off < benchSize; off += int64(len(buf)) {
		fillPattern(buf, off)
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	src, err := os.Open(plain)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() })
	dd(b, plain) // warm the page cache

	m := mountT(b, []File{{Name: "DISK.raw", Size: benchSize, Data: src}}, Options{})
	mounted = filepath.Join(m.Dir(), "DISK.raw")

	nbdDir := filepath.Join(tmp, "nbd")
	if err := os.Mkdir(nbdDir, 0o700); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(nbdfuse, "-r", nbdDir, "[", nbdkit, "--exit-with-parent", "-r", "file", plain, "]")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		exec.Command("fusermount3", "-u", nbdDir).Run()
		cmd.Wait()
	})
	nbd = filepath.Join(nbdDir, "nbd")
	for deadline := time.Now().Add(10 * time.Second); ; {
		if st, err := os.Stat(nbd); err == nil && st.Size() == benchSize {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("nbdfuse did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return plain, mounted, nbd
}

// dropCache forgets the cached pages of a FUSE file, so the next read goes
// to its server again.
func dropCache(b *testing.B, path string) {
	b.Helper()
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Fatal(err)
	}
}

// dd reads path with dd bs=1M and returns how long it took.
func dd(b *testing.B, path string) time.Duration {
	b.Helper()
	t0 := time.Now()
	if out, err := exec.Command("dd", "if="+path, "of=/dev/null", "bs=1M").CombinedOutput(); err != nil {
		b.Fatalf("dd %s: %v: %s", path, err, out)
	}
	return time.Since(t0)
}

// BenchmarkSequentialRead: dd bs=1M of a 1 GiB mounted file (its page
// cache dropped before each pass, the plain file behind it cached), against
// dd of the plain file from the page cache and of nbdfuse over nbdkit file.
func BenchmarkSequentialRead(b *testing.B) {
	plain, mounted, nbd := benchSetup(b)
	b.SetBytes(benchSize)
	b.ResetTimer()
	// The three are interleaved so that load from elsewhere hits them alike.
	var mnt, page, peer time.Duration
	for range b.N {
		b.StopTimer()
		dropCache(b, mounted)
		b.StartTimer()
		mnt += dd(b, mounted)
		b.StopTimer()
		page += dd(b, plain)
		dropCache(b, nbd)
		peer += dd(b, nbd)
		b.StartTimer()
	}
	b.StopTimer()
	mbps := func(d time.Duration) float64 { return float64(b.N) * benchSize / 1e6 / d.Seconds() }
	b.ReportMetric(mbps(mnt), "MB/s-mount")
	b.ReportMetric(mbps(page), "MB/s-pagecache")
	b.ReportMetric(mbps(peer), "MB/s-nbdfuse")
	b.ReportMetric(page.Seconds()/mnt.Seconds(), "x-vs-pagecache")
	b.ReportMetric(peer.Seconds()/mnt.Seconds(), "x-vs-nbdfuse")
}

// xtsReader decrypts its source on read, as a decrypted disk view does (the
// bytes are noise: this measures work, not content).
type xtsReader struct {
	src *os.File
	c   *xts.Cipher
}

func (x *xtsReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := x.src.ReadAt(p, off)
	if n == len(p) && off%xts.SectorSize == 0 && n%xts.SectorSize == 0 {
		x.c.DecryptSectors(p, p, uint64(off/xts.SectorSize))
		return n, nil
	}
	return n, err
}

// BenchmarkSequentialReadXTS: dd bs=1M of a 1 GiB file whose Data decrypts
// XTS-AES-256 on every read, with the kernel's 128 KiB readahead, 1 MiB and
// the default 4 MiB, against dd of the plain file from the page cache.
func BenchmarkSequentialReadXTS(b *testing.B) {
	plain, _, _ := benchSetup(b)
	src, err := os.Open(plain)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	key := make([]byte, 64)
	for i := range key {
		key[i] = byte(i*7 + 1)
	}
	c, err := xts.New(key)
	if err != nil {
		b.Fatal(err)
	}
	for _, ra := range []int{-1, 1024, 4096} {
		b.Run(fmt.Sprintf("readahead=%d", ra), func(b *testing.B) {
			m := mountT(b, []File{{Name: "DISK.raw", Size: benchSize, Data: &xtsReader{src, c}}}, Options{ReadAheadKB: ra})
			mounted := filepath.Join(m.Dir(), "DISK.raw")
			b.SetBytes(benchSize)
			b.ResetTimer()
			var mnt, page time.Duration
			for range b.N {
				b.StopTimer()
				dropCache(b, mounted)
				b.StartTimer()
				mnt += dd(b, mounted)
				b.StopTimer()
				page += dd(b, plain)
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)*benchSize/1e6/mnt.Seconds(), "MB/s-mount")
			b.ReportMetric(page.Seconds()/mnt.Seconds(), "x-vs-pagecache")
		})
	}
}

// BenchmarkRandomRead4K: fio random 4 KiB O_DIRECT reads (every read a FUSE
// request) with 1 and 8 readers, through the mount and through nbdfuse over
// nbdkit file.
func BenchmarkRandomRead4K(b *testing.B) {
	fio := requireTool(b, "fio", "fio")
	_, mounted, nbd := benchSetup(b)
	for _, jobs := range []int{1, 8} {
		b.Run(fmt.Sprintf("readers=%d", jobs), func(b *testing.B) {
			var mnt, peer float64
			for range b.N { // interleaved, as above
				mnt += fioIOPS(b, fio, mounted, jobs)
				b.StopTimer()
				peer += fioIOPS(b, fio, nbd, jobs)
				b.StartTimer()
			}
			b.StopTimer()
			b.ReportMetric(mnt/float64(b.N), "iops-mount")
			b.ReportMetric(peer/float64(b.N), "iops-nbdfuse")
			b.ReportMetric(mnt/peer, "x-vs-nbdfuse")
		})
	}
}

func fioIOPS(b *testing.B, fio, path string, jobs int) float64 {
	b.Helper()
	out, err := exec.Command(fio, "--name=rand", "--filename="+path, "--readonly",
		"--rw=randread", "--bs=4k", "--direct=1", "--ioengine=psync",
		fmt.Sprintf("--numjobs=%d", jobs), "--runtime=2", "--time_based",
		"--group_reporting", "--output-format=json").Output()
	if err != nil {
		b.Fatalf("fio %s: %v: %s", path, err, out)
	}
	var res struct {
		Jobs []struct {
			Read struct {
				IOPS float64 `json:"iops"`
			} `json:"read"`
			Error int `json:"error"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Jobs) != 1 || res.Jobs[0].Error != 0 {
		b.Fatalf("fio %s: %v: %s", path, err, out)
	}
	return res.Jobs[0].Read.IOPS
}

// BenchmarkReadFile: the read path without FUSE, over a map of many runs:
// no allocation per read.
func BenchmarkReadFile(b *testing.B) {
	const size = 1 << 30
	var runs []Run
	for off := int64(0); off < size; off += 1 << 20 {
		runs = append(runs, Run{off, 64 << 10}) // 64 KiB grains, 1 MiB apart
	}
	files, err := validate([]File{{Name: "f", Size: size, Data: &patternReader{size: size}, Allocated: runs}})
	if err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 1<<20)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		off := int64(i%1000) * (1 << 20) / 2
		if err := readFile(&files[0], p, off); err != nil {
			b.Fatal(err)
		}
	}
}
