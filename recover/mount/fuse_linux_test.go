package mount

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary a mount helper (TestStaleMount): it mounts
// at the named folder, prints "ready" and serves until killed.
const helperEnv = "VMCRYPT_MOUNT_TEST_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		mnt, err := Mount(dir, []File{{Name: "x", Size: 3, Data: strings.NewReader("abc")}}, Options{})
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("ready")
		mnt.Wait()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// requireFUSE fails (never skips) when FUSE cannot be served here.
func requireFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("FUSE peer missing: %v (install fuse3, load the fuse module)", err)
	}
	requireTool(t, "fusermount3", "fuse3")
}

func requireTool(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("peer %s missing (apt-get install %s): %v", name, pkg, err)
	}
	return p
}

// eventLog collects Log events.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) log(event string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, strings.TrimSpace(fmt.Sprintln(append([]any{event}, args...)...)))
}

func (l *eventLog) find(prefix string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, e := range l.events {
		if strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
}

// mountT mounts files in a new folder and unmounts at the end of the test.
func mountT(t testing.TB, files []File, opts Options) *Mounted {
	t.Helper()
	requireFUSE(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := Mount(dir, files, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return m
}

// writeSource writes content to a new file, leaving holes where runs say,
// so peers can compare the mount with a plain file.
func writeSource(t testing.TB, name string, content []byte, runs []Run) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(len(content))); err != nil {
		t.Fatal(err)
	}
	if runs == nil {
		runs = []Run{{0, int64(len(content))}}
	}
	for _, r := range runs {
		if _, err := f.WriteAt(content[r.Off:r.End()], r.Off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// The test set: a plain file of odd size, a sparse disk with unaligned runs,
// an empty file, a file that is one hole, and a file in a folder.
const (
	plainSize  = 3<<20 + 123
	sparseSize = 64<<20 + 5
)

var sparseRuns = []Run{
	{0, 1 << 20},              // first MiB (boot area)
	{4<<20 + 512, 100_000},    // unaligned
	{9 << 20, 4096},           // one page
	{32 << 20, 3 << 20},       // middle
	{sparseSize - 5000, 5000}, // tail, unaligned end
}

type testFile struct {
	File
	want []byte
	src  *patternReader
}

func testFiles() []testFile {
	plain := &patternReader{size: plainSize}
	sparse := &patternReader{size: sparseSize, runs: sparseRuns}
	snap := &patternReader{size: 1 << 20}
	return []testFile{
		{File{Name: "plain.bin", Size: plainSize, Data: plain}, expected(plainSize, nil), plain},
		{File{Name: "DISK.raw", Size: sparseSize, Data: sparse, Allocated: sparseRuns}, expected(sparseSize, sparseRuns), sparse},
		{File{Name: "empty", Size: 0, Data: bytes.NewReader(nil)}, []byte{}, nil},
		{File{Name: "hole.raw", Size: 2 << 20, Allocated: []Run{}}, make([]byte, 2<<20), nil},
		{File{Name: "snapshots/DISK@1.raw", Size: 1 << 20, Data: snap, ModTime: time.Unix(1700000000, 0)}, expected(1<<20, nil), snap},
	}
}

func files(tf []testFile) []File {
	out := make([]File, len(tf))
	for i := range tf {
		out[i] = tf[i].File
	}
	return out
}

// TestMountContent: every file reads back exactly (sha256 and cmp against a
// plain copy), sizes and times are exact, holes never reach Data, and the
// listing is complete.
func TestMountContent(t *testing.T) {
	tf := testFiles()
	m := mountT(t, files(tf), Options{})
	cmp := requireTool(t, "cmp", "diffutils")

	var names []string
	err := filepath.WalkDir(m.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(m.Dir(), p)
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(names, ","), "DISK.raw,empty,hole.raw,plain.bin,snapshots/DISK@1.raw"; got != want {
		t.Errorf("files %s, want %s", got, want)
	}

	for _, f := range tf {
		p := filepath.Join(m.Dir(), f.Name)
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != f.Size || st.Mode() != 0o444 {
			t.Errorf("%s: size %d mode %v, want %d 0444", f.Name, st.Size(), st.Mode(), f.Size)
		}
		if !f.ModTime.IsZero() && !st.ModTime().Equal(f.ModTime) {
			t.Errorf("%s: mtime %v, want %v", f.Name, st.ModTime(), f.ModTime)
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if sha(got) != sha(f.want) {
			t.Errorf("%s: sha256 %s, want %s", f.Name, sha(got), sha(f.want))
		}
		src := writeSource(t, "src", f.want, f.Allocated)
		if out, err := exec.Command(cmp, src, p).CombinedOutput(); err != nil {
			t.Errorf("cmp %s: %v: %s", f.Name, err, out)
		}
	}
	// st_blocks shows the allocation: 4 MiB + 100,000 + ... of 64 MiB.
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(m.Dir(), "DISK.raw"), &st); err != nil {
		t.Fatal(err)
	}
	if want := int64((allocatedBytes(&tf[1].File) + 511) / 512); st.Blocks != want {
		t.Errorf("DISK.raw blocks %d, want %d", st.Blocks, want)
	}
	if hr := tf[1].src.holeReads.Load(); hr != 0 {
		t.Errorf("%d reads of holes reached Data", hr)
	}
	if fi, err := os.Stat(filepath.Join(m.Dir(), "snapshots")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o555 {
		t.Errorf("snapshots folder: %v %v", fi, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(m.Dir(), &sfs); err != nil || sfs.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("statfs: flags %#x, %v; want read-only", sfs.Flags, err)
	}
}

// TestQemuImgCompare: qemu-img sees the mounted sparse disk equal to a
// plain sparse copy.
func TestQemuImgCompare(t *testing.T) {
	qemu := requireTool(t, "qemu-img", "qemu-utils")
	tf := testFiles()
	m := mountT(t, files(tf), Options{})
	src := writeSource(t, "disk.raw", tf[1].want, sparseRuns)
	out, err := exec.Command(qemu, "compare", "-f", "raw", "-F", "raw", src, filepath.Join(m.Dir(), "DISK.raw")).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img compare: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "Images are identical") {
		t.Errorf("qemu-img compare: %s", out)
	}
	// And a different image is reported different (the compare can fail).
	other := bytes.Clone(tf[1].want)
	other[32<<20+7] ^= 1
	src2 := writeSource(t, "disk2.raw", other, sparseRuns)
	if err := exec.Command(qemu, "compare", "-q", "-f", "raw", "-F", "raw", src2, filepath.Join(m.Dir(), "DISK.raw")).Run(); err == nil {
		t.Error("qemu-img compare: a one-bit difference went unseen")
	}
}

// TestSeekDataHole: lseek SEEK_DATA/SEEK_HOLE on the mount follow the map:
// checked against a byte scan of the map, and against the kernel's answers
// for a plain sparse file with the same (page-aligned) holes.
func TestSeekDataHole(t *testing.T) {
	const size = 8 << 20
	aligned := []Run{{0, 4096}, {64 << 10, 128 << 10}, {1 << 20, 1 << 20}, {size - 8192, 8192}}
	src := &patternReader{size: size, runs: aligned}
	tf := testFiles()
	fl := append(files(tf), File{Name: "aligned.raw", Size: size, Data: src, Allocated: aligned})
	m := mountT(t, fl, Options{})

	check := func(name string, size int64, runs []Run, peer *os.File) {
		f, err := os.Open(filepath.Join(m.Dir(), name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		offs := []int64{0, 1, size - 1, size, size + 1}
		for _, r := range runs {
			offs = append(offs, r.Off-1, r.Off, r.Off+1, r.End()-1, r.End(), r.End()+1)
		}
		for _, off := range offs {
			if off < 0 {
				continue
			}
			for _, whence := range []int{unix.SEEK_DATA, unix.SEEK_HOLE} {
				got, err := unix.Seek(int(f.Fd()), off, whence)
				want, wantErr := seekWant(size, runs, off, whence)
				if wantErr {
					if !errors.Is(err, unix.ENXIO) {
						t.Errorf("%s: seek(%d, %d) = %d, %v; want ENXIO", name, off, whence, got, err)
					}
				} else if err != nil || got != want {
					t.Errorf("%s: seek(%d, %d) = %d, %v; want %d", name, off, whence, got, err, want)
				}
				if peer != nil {
					pg, perr := unix.Seek(int(peer.Fd()), off, whence)
					if pg != got || !errors.Is(err, perr) && (err != nil || perr != nil) {
						t.Errorf("%s: seek(%d, %d) = %d, %v; kernel on a sparse file says %d, %v", name, off, whence, got, err, pg, perr)
					}
				}
			}
		}
	}
	check("DISK.raw", sparseSize, sparseRuns, nil)
	check("plain.bin", plainSize, nil, nil)
	check("hole.raw", 2<<20, []Run{}, nil)

	peer, err := os.Open(writeSource(t, "aligned.raw", expected(size, aligned), aligned))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	check("aligned.raw", size, aligned, peer)
}

// seekWant is lseek by a walk of the (unmerged) runs in order.
func seekWant(size int64, runs []Run, off int64, whence int) (int64, bool) {
	if off >= size {
		return 0, true
	}
	if runs == nil {
		runs = []Run{{0, size}}
	}
	if whence == unix.SEEK_DATA {
		for _, r := range runs {
			if r.Len > 0 && r.End() > off {
				return max(off, r.Off), false
			}
		}
		return 0, true
	}
	for _, r := range runs {
		if r.Off <= off && off < r.End() {
			off = r.End()
		}
	}
	return off, false
}

// TestReadError: a damaged range fails with EIO and is logged with the file
// and offset; the ranges around it and other files keep working; a panic in
// Data is an EIO too; the server stays up.
func TestReadError(t *testing.T) {
	const size = 16 << 20
	const bad = 5<<20 + 1000 // damaged 10 bytes here
	src := &patternReader{size: size, failOff: bad, failLen: 10, panicOff: 12<<20 + 5}
	var log eventLog
	tf := testFiles()
	fl := append(files(tf), File{Name: "damaged.raw", Size: size, Data: src})
	m := mountT(t, fl, Options{Log: log.log})

	f, err := os.Open(filepath.Join(m.Dir(), "damaged.raw"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := expected(size, nil)
	buf := make([]byte, 4096)
	for _, off := range []int64{bad, bad &^ 4095, 12<<20 + 5, 12 << 20} {
		if _, err := f.ReadAt(buf, off); !errors.Is(err, syscall.EIO) {
			t.Errorf("read at %d: %v, want EIO", off, err)
		}
	}
	// Before and after the damage (a readahead window away), and the end.
	for _, off := range []int64{0, 4 << 20, bad&^(1<<20-1) - 4096, 7 << 20, size - 4096} {
		if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, want[off:off+4096]) {
			t.Errorf("read at %d: %v or wrong bytes", off, err)
		}
	}
	// The damaged range fails again (errors are not cached as data).
	if _, err := f.ReadAt(buf, bad&^4095); !errors.Is(err, syscall.EIO) {
		t.Errorf("second read of the damaged range: %v, want EIO", err)
	}
	got, err := os.ReadFile(filepath.Join(m.Dir(), "plain.bin"))
	if err != nil || sha(got) != sha(tf[0].want) {
		t.Errorf("another file after errors: %v", err)
	}
	errs := log.find("read error")
	if len(errs) == 0 {
		t.Fatal("no read error logged")
	}
	if !strings.Contains(errs[0], "file damaged.raw offset ") {
		t.Errorf("read error log %q does not name file and offset", errs[0])
	}
	if len(log.find("panic")) == 0 {
		t.Error("panic of Data not logged")
	}
}

// TestReadOnly: every way of writing fails with EROFS (or EPERM), and the
// source is never asked to change.
func TestReadOnly(t *testing.T) {
	m := mountT(t, files(testFiles()), Options{})
	p := filepath.Join(m.Dir(), "DISK.raw")
	erofs := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: %v, want EROFS", what, err)
		}
	}
	_, err := os.OpenFile(p, os.O_WRONLY, 0)
	erofs("open write-only", err)
	_, err = os.OpenFile(p, os.O_RDWR, 0)
	erofs("open read-write", err)
	_, err = os.OpenFile(p, os.O_RDONLY|os.O_TRUNC, 0)
	erofs("open truncate", err)
	_, err = os.Create(filepath.Join(m.Dir(), "new"))
	erofs("create", err)
	erofs("mkdir", os.Mkdir(filepath.Join(m.Dir(), "d"), 0o700))
	erofs("truncate", os.Truncate(p, 0))
	erofs("chmod", os.Chmod(p, 0o666))
	erofs("chown", os.Chown(p, 1, 1))
	erofs("chtimes", os.Chtimes(p, time.Now(), time.Now()))
	erofs("remove", os.Remove(p))
	erofs("rmdir", os.Remove(filepath.Join(m.Dir(), "snapshots")))
	erofs("rename", os.Rename(p, filepath.Join(m.Dir(), "x")))
	erofs("link", os.Link(p, filepath.Join(m.Dir(), "x")))
	erofs("symlink", os.Symlink("DISK.raw", filepath.Join(m.Dir(), "x")))
	erofs("mknod", unix.Mknod(filepath.Join(m.Dir(), "x"), unix.S_IFIFO|0o600, 0))
	erofs("setxattr", unix.Setxattr(p, "user.x", []byte("y"), 0))
	erofs("access W_OK", unix.Access(p, unix.W_OK))

	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.WriteAt([]byte("x"), 0)
	if err == nil {
		t.Error("write through a read-only handle succeeded")
	}
	// fallocate on a read-only handle: the kernel says EBADF before asking.
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 4096); !errors.Is(err, syscall.EBADF) && !errors.Is(err, syscall.EROFS) {
		t.Errorf("fallocate: %v, want EBADF or EROFS", err)
	}
}

// TestConcurrentReaders: 8 readers at once get the right bytes, and the
// server passes their requests to Data concurrently.
func TestConcurrentReaders(t *testing.T) {
	const size = 64 << 20
	const readers = 8
	src := &gateReader{patternReader: patternReader{size: size}, want: readers}
	m := mountT(t, []File{{Name: "big.raw", Size: size, Data: src}}, Options{})
	want := expected(size, nil)
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(filepath.Join(m.Dir(), "big.raw"))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			// Each reader walks two eighths of the file from its own, in 64 KiB
			// pieces of odd alignment.
			buf := make([]byte, 64<<10+17)
			for i := range int64(size / readers / len(buf) * 2) {
				off := (int64(r)*size/readers + i*int64(len(buf))) % (size - int64(len(buf)))
				if _, err := f.ReadAt(buf, off); err != nil {
					errs <- fmt.Errorf("reader %d at %d: %w", r, off, err)
					return
				}
				if !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
					errs <- fmt.Errorf("reader %d at %d: wrong bytes", r, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if p := src.peak.Load(); p < readers {
		t.Errorf("at most %d reads reached Data at once, want %d", p, readers)
	}
}

// gateReader holds the first reads until want of them are in flight at once
// (or a second passes), proving the server does not serialise them.
type gateReader struct {
	patternReader
	want     int64
	inflight atomic.Int64
	peak     atomic.Int64
	opened   atomic.Bool
}

func (g *gateReader) ReadAt(p []byte, off int64) (int, error) {
	n := g.inflight.Add(1)
	defer g.inflight.Add(-1)
	for {
		pk := g.peak.Load()
		if n <= pk || g.peak.CompareAndSwap(pk, n) {
			break
		}
	}
	if !g.opened.Load() {
		deadline := time.Now().Add(time.Second)
		for g.peak.Load() < g.want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		g.opened.Store(true)
	}
	return g.patternReader.ReadAt(p, off)
}

// TestUnmountWithOpenFiles: Unmount succeeds while a file is open and being
// read; the folder is empty again, the open file fails instead of hanging,
// and no goroutine is left behind.
func TestUnmountWithOpenFiles(t *testing.T) {
	requireFUSE(t)
	base := runtime.NumGoroutine()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var log eventLog
	m, err := Mount(dir, files(testFiles()), Options{Log: log.log})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "plain.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if _, err := f.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Unmount() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("unmount with an open file: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("unmount with an open file hangs")
	}
	m.Wait()
	if len(log.find("unmount forced")) == 0 {
		t.Error("busy unmount not logged")
	}
	if err := checkMountPoint(dir); err != nil {
		t.Errorf("mount point after unmount: %v", err)
	}
	if _, err := f.ReadAt(buf, 1<<20); err == nil {
		t.Error("read of a file left open after unmount succeeded")
	}
	if err := m.Unmount(); err != nil {
		t.Errorf("second Unmount: %v", err)
	}
	f.Close()
	waitGoroutines(t, base)
}

// TestUnmountFromOutside: rmdir of the mount point is refused; fusermount3
// -u ends Wait, and Unmount is then a no-op.
func TestUnmountFromOutside(t *testing.T) {
	requireFUSE(t)
	base := runtime.NumGoroutine()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	m, err := Mount(dir, files(testFiles()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Removing the mount point while mounted is refused and harms nothing.
	if err := os.Remove(dir); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rmdir of the mount point: %v, want EBUSY", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "snapshots", "DISK@1.raw")); err != nil || len(b) != 1<<20 {
		t.Errorf("read after rmdir attempt: %v", err)
	}
	if out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	waited := make(chan struct{})
	go func() { m.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after fusermount3 -u")
	}
	if err := m.Unmount(); err != nil {
		t.Errorf("Unmount after an outside unmount: %v", err)
	}
	waitGoroutines(t, base)
}

// TestGoroutines: mounting, reading from many goroutines and unmounting,
// three times, leaves the goroutine count where it was.
func TestGoroutines(t *testing.T) {
	requireFUSE(t)
	base := runtime.NumGoroutine()
	for range 3 {
		dir := filepath.Join(t.TempDir(), "mnt")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		tf := testFiles()
		m, err := Mount(dir, files(tf), Options{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := os.ReadFile(filepath.Join(dir, []string{"plain.bin", "snapshots/DISK@1.raw"}[i%2])); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		if err := m.Unmount(); err != nil {
			t.Fatal(err)
		}
		m.Wait()
	}
	waitGoroutines(t, base)
}

func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines after unmount, %d before:\n%s", n, base, buf)
	}
}

// TestMountPointRefused: a folder with files, a file, a missing path and a
// bad file list are refused before anything is mounted.
func TestMountPointRefused(t *testing.T) {
	requireFUSE(t)
	fl := files(testFiles())
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, ".hidden"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Mount(full, fl, Options{}); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("non-empty folder: %v, want ErrNotEmpty", err)
	}
	file := filepath.Join(full, ".hidden")
	if _, err := Mount(file, fl, Options{}); !errors.Is(err, ErrNotDir) {
		t.Errorf("a file: %v, want ErrNotDir", err)
	}
	missing := filepath.Join(full, "missing")
	if _, err := Mount(missing, fl, Options{}); !errors.Is(err, ErrNotDir) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing folder: %v, want ErrNotDir and ErrNotExist", err)
	}
	empty := t.TempDir()
	if _, err := Mount(empty, append(fl, fl[0]), Options{}); !errors.Is(err, ErrBadFile) {
		t.Errorf("duplicate file: %v, want ErrBadFile", err)
	}
	// Mounting over a live mount is refused too: it is not empty.
	m := mountT(t, fl, Options{})
	if _, err := Mount(m.Dir(), fl, Options{}); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("live mount: %v, want ErrNotEmpty", err)
	}
	// The refused folders are untouched.
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("refused mount left %d entries", len(ents))
	}
}

// TestStaleMount: a mount whose server was killed (SIGKILL of a child that
// mounted) is detected as ErrStaleMount, and the advised fusermount3 -u
// clears it so the next mount works.
func TestStaleMount(t *testing.T) {
	requireFUSE(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper: %q", line)
	}
	t.Cleanup(func() { exec.Command("fusermount3", "-u", "-z", dir).Run() })
	if b, err := os.ReadFile(filepath.Join(dir, "x")); err != nil || string(b) != "abc" {
		t.Fatalf("helper mount: %q %v", b, err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	_, err = Mount(dir, files(testFiles()), Options{})
	if !errors.Is(err, ErrStaleMount) {
		t.Fatalf("stale mount point: %v, want ErrStaleMount", err)
	}
	if !strings.Contains(err.Error(), "fusermount3 -u "+dir) {
		t.Errorf("stale mount error does not say how to fix it: %v", err)
	}
	if out, err := exec.Command("fusermount3", "-u", dir).CombinedOutput(); err != nil {
		t.Fatalf("the advised fusermount3 -u: %v: %s", err, out)
	}
	m, err := Mount(dir, files(testFiles()), Options{})
	if err != nil {
		t.Fatalf("mount after clearing the stale mount: %v", err)
	}
	if err := m.Unmount(); err != nil {
		t.Fatal(err)
	}
}

// TestAllowOther: another user reads the files only with AllowOther.
func TestAllowOther(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestAllowOther runs as root (it reads as user nobody)")
	}
	cat := requireTool(t, "cat", "coreutils")
	for _, allow := range []bool{false, true} {
		m := mountT(t, files(testFiles()), Options{AllowOther: allow})
		// Let nobody walk down to the mount point.
		for d := filepath.Dir(m.Dir()); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(cat, filepath.Join(m.Dir(), "snapshots", "DISK@1.raw"))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.Output()
		if allow && (err != nil || sha(out) != sha(expected(1<<20, nil))) {
			t.Errorf("AllowOther: user nobody cannot read: %v", err)
		}
		if !allow && err == nil {
			t.Error("without AllowOther, user nobody reads the mount")
		}
	}
}

// TestReadAhead: the mount's readahead is raised to the asked size.
func TestReadAhead(t *testing.T) {
	m := mountT(t, files(testFiles()), Options{ReadAheadKB: 2048})
	var st unix.Stat_t
	if err := unix.Stat(m.Dir(), &st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != "2048" {
		t.Errorf("read_ahead_kb %s, want 2048", b)
	}
	// max_read is 1 MiB: requests as large as FUSE allows.
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, " "+m.Dir()+" ") {
			if !strings.Contains(l, "max_read=1048576") || !strings.Contains(l, " ro,") {
				t.Errorf("mount options: %s", l)
			}
			return
		}
	}
	t.Errorf("mount %s not in /proc/self/mounts", m.Dir())
}

var _ io.ReaderAt = (*gateReader)(nil)
