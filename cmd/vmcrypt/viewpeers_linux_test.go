//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/fixtures"
)

// Helpers of the mount and serve peer tests: the command run in-process
// (runContext with a context the test cancels, as SIGINT does) or as a
// child process (the test binary re-executed as vmcrypt, for real
// signals), guards that prove nothing was written, and peer tools.

// The test binary runs as vmcrypt when VMCRYPT_TEST_EXEC=1 (subprocess
// tests send it real signals).
func init() {
	if os.Getenv("VMCRYPT_TEST_EXEC") == "1" {
		os.Exit(runContext(context.Background(), append([]string{"vmcrypt"}, os.Args[1:]...), os.Stdout, os.Stderr))
	}
}

// vwPeer returns the path of a peer tool; a missing peer fails the test.
func vwPeer(t testing.TB, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("peer %s missing (apt-get install %s; make peers): %v", name, pkg, err)
	}
	return p
}

// vwRunPeer runs a peer and returns its stdout; a failure fails the test.
func vwRunPeer(t testing.TB, name string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// vwLockedBuffer is a bytes.Buffer safe for concurrent writes.
type vwLockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *vwLockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *vwLockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// vwCliRun is vmcrypt running in-process in the background.
type vwCliRun struct {
	cancel   context.CancelFunc
	finished chan struct{}
	code     int
	stderr   *vwLockedBuffer
}

// vwStartCLI runs vmcrypt args in-process; cancelling stands for SIGINT.
// It is stopped when the test ends.
func vwStartCLI(t *testing.T, args ...string) *vwCliRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &vwCliRun{cancel: cancel, finished: make(chan struct{}), stderr: &vwLockedBuffer{}}
	go func() {
		r.code = runContext(ctx, append([]string{"vmcrypt"}, args...), io.Discard, r.stderr)
		close(r.finished)
	}()
	t.Cleanup(func() { r.stop(t) })
	return r
}

func (r *vwCliRun) running() bool {
	select {
	case <-r.finished:
		return false
	default:
		return true
	}
}

// wait returns the exit code once the run ends.
func (r *vwCliRun) wait(t testing.TB) int {
	t.Helper()
	select {
	case <-r.finished:
		return r.code
	case <-time.After(30 * time.Second):
		t.Fatalf("vmcrypt did not stop within 30s:\n%s", r.stderr)
	}
	return -1
}

// stop interrupts the run and returns its exit code.
func (r *vwCliRun) stop(t testing.TB) int {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

// vwWaitFor polls cond until it holds; it fails the test when running
// says the command stopped, or after 20 s.
func vwWaitFor(t testing.TB, what string, running func() bool, stderr fmt.Stringer, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if !running() {
			t.Fatalf("vmcrypt stopped before %s:\n%s", what, stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 20s:\n%s", what, stderr)
		}
	}
}

// vwMounted reports whether dir is a mount point (/proc/self/mountinfo).
func vwMounted(t testing.TB, dir string) bool {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 4 && f[4] == abs {
			return true
		}
	}
	return false
}

// vwMountDir makes an empty mount point; when the test ends it must be
// unmounted and empty again.
func vwMountDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if vwMounted(t, dir) {
			exec.Command("fusermount3", "-u", "-z", dir).Run()
			t.Errorf("%s is still mounted when the test ends", dir)
		}
		if ents, err := os.ReadDir(dir); err != nil || len(ents) > 0 {
			t.Errorf("mount point %s after the test: %d entries, %v", dir, len(ents), err)
		}
	})
	return dir
}

// vwStartMount runs vmcrypt mount in-process and waits for report.json.
func vwStartMount(t *testing.T, vmDir, mnt string, keyArgs ...string) *vwCliRun {
	t.Helper()
	r := vwStartCLI(t, append([]string{"mount", vmDir, mnt}, keyArgs...)...)
	vwWaitFor(t, "mount", r.running, r.stderr, func() bool {
		_, err := os.Stat(filepath.Join(mnt, "report.json"))
		return err == nil && vwMounted(t, mnt)
	})
	return r
}

// vwUnmount interrupts a mount run: exit 130, the folder unmounted.
func vwUnmount(t *testing.T, r *vwCliRun, mnt string) {
	t.Helper()
	if code := r.stop(t); code != exitInterrupted {
		t.Fatalf("mount stopped with exit %d, want %d:\n%s", code, exitInterrupted, r.stderr)
	}
	if vwMounted(t, mnt) {
		t.Fatalf("%s still mounted after the interrupt", mnt)
	}
}

// vwShortDir makes a folder with a short path (Unix socket paths are capped
// at 103 bytes; test temp folders are long), removed when the test ends.
func vwShortDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("/tmp", "vmv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// vwStartServe runs vmcrypt serve in-process on a socket and waits for it.
func vwStartServe(t *testing.T, vmDir string, keyArgs ...string) (*vwCliRun, string) {
	t.Helper()
	sock := filepath.Join(vwShortDir(t), "s.sock")
	r := vwStartCLI(t, append([]string{"serve", vmDir, "--socket", sock}, keyArgs...)...)
	vwWaitFor(t, "socket", r.running, r.stderr, func() bool {
		st, err := os.Stat(sock)
		return err == nil && st.Mode().Type() == fs.ModeSocket
	})
	t.Cleanup(func() {
		if _, err := os.Lstat(sock); err == nil {
			t.Errorf("socket %s left behind", sock)
		}
	})
	return r, sock
}

// vwStopServe interrupts a serve run: exit 130.
func vwStopServe(t *testing.T, r *vwCliRun) {
	t.Helper()
	if code := r.stop(t); code != exitInterrupted {
		t.Fatalf("serve stopped with exit %d, want %d:\n%s", code, exitInterrupted, r.stderr)
	}
}

func vwNbdURI(sock, export string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", export, sock)
}

// vwTreeState is what a guard remembers of a file.
type vwTreeState struct {
	size  int64
	mode  fs.FileMode
	mtime time.Time
	sum   string
}

func vwSnapshotTree(t testing.TB, root string) map[string]vwTreeState {
	t.Helper()
	out := map[string]vwTreeState{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := d.Info()
		if err != nil {
			return err
		}
		s := vwTreeState{size: st.Size(), mode: st.Mode(), mtime: st.ModTime()}
		if st.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			s.sum = hex.EncodeToString(h[:])
		}
		if d.IsDir() {
			s.mtime = time.Time{} // atime-free, but a folder's mtime is checked through its entries
		}
		out[p] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// vwGuardTree fails the test if anything under root differs when the test
// ends: a file added, removed or changed (content, size, mode, mtime).
func vwGuardTree(t *testing.T, root string) {
	t.Helper()
	before := vwSnapshotTree(t, root)
	t.Cleanup(func() {
		after := vwSnapshotTree(t, root)
		for p, b := range before {
			if a, ok := after[p]; !ok || a != b {
				t.Errorf("%s changed: before %+v, after %+v (present %v)", p, b, a, ok)
			}
		}
		for p := range after {
			if _, ok := before[p]; !ok {
				t.Errorf("%s was created", p)
			}
		}
	})
}

// vwGuardNoWrites makes TMPDIR a new empty folder that must be empty when
// the test ends (the default socket folder is made there and must be
// removed), and guards the fixture folders and the working folder.
// Call it after the test's first t.TempDir (later ones reuse its parent).
func vwGuardNoWrites(t *testing.T, roots ...string) {
	t.Helper()
	tmp := vwShortDir(t)
	t.Setenv("TMPDIR", tmp)
	vwGuardTree(t, tmp)
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	vwGuardTree(t, wd)
	for _, r := range roots {
		vwGuardTree(t, r)
	}
}

func vwFileSHA(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("reading %s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// vwSha256sum is the peer's digest of a file.
func vwSha256sum(t testing.TB, p string) string {
	t.Helper()
	out := vwRunPeer(t, vwPeer(t, "sha256sum", "coreutils"), p)
	return strings.Fields(out)[0]
}

// vwManifestKeyArgs are the key options of a checked-in fixture folder.
func vwManifestKeyArgs(dir string, m *fixtures.Manifest) []string {
	var a []string
	if p := m.Secrets.PassphraseFile; p != "" {
		a = append(a, "--passphrase-file", filepath.Join(dir, p))
	}
	if p := m.Secrets.KEKFile; p != "" {
		a = append(a, "--kek", filepath.Join(dir, p))
	}
	if p := m.Secrets.NKPBackup; p != "" {
		a = append(a, "--nkp-backup", filepath.Join(dir, p), "--nkp-password-file", filepath.Join(dir, m.Secrets.NKPPasswordFile))
	}
	return a
}

// vwSectorMap classifies each 512-byte sector of a disk: 'h' hole (not
// allocated anywhere), 'z' allocated zeros, 'd' data.
type vwSectorMap []byte

// vwNbdMap reads an export's base:allocation with nbdinfo --map --json.
func vwNbdMap(t testing.TB, uri string, size int64) vwSectorMap {
	t.Helper()
	var ents []struct {
		Offset, Length int64
		Type           int
	}
	out := vwRunPeer(t, vwPeer(t, "nbdinfo", "libnbd-bin"), "--map", "--json", uri)
	if err := json.Unmarshal([]byte(out), &ents); err != nil {
		t.Fatalf("nbdinfo --map --json: %v\n%s", err, out)
	}
	m := make(vwSectorMap, size/512)
	var at int64
	for _, e := range ents {
		if e.Offset != at || e.Length <= 0 || e.Offset+e.Length > size {
			t.Fatalf("nbdinfo --map: entry %+v after %d (size %d)", e, at, size)
		}
		c := byte('d')
		switch {
		case e.Type&1 != 0:
			c = 'h'
		case e.Type&2 != 0:
			c = 'z'
		}
		for s := e.Offset / 512; s < (e.Offset+e.Length)/512; s++ {
			m[s] = c
		}
		at += e.Length
	}
	if at != size {
		t.Fatalf("nbdinfo --map covers %d of %d bytes", at, size)
	}
	return m
}

// vwQemuMap reads the allocation of a VMDK (and its parents) with qemu-img
// map: the map is structure, readable without the key.
func vwQemuMap(t testing.TB, vmdkPath string, size int64) vwSectorMap {
	t.Helper()
	var ents []struct {
		Start, Length int64
		Present, Zero bool
	}
	out := vwRunPeer(t, vwPeer(t, "qemu-img", "qemu-utils"), "map", "--output=json", "-f", "vmdk", vmdkPath)
	if err := json.Unmarshal([]byte(out), &ents); err != nil {
		t.Fatalf("qemu-img map: %v\n%s", err, out)
	}
	m := make(vwSectorMap, size/512)
	for _, e := range ents {
		c := byte('d')
		switch {
		case !e.Present:
			c = 'h'
		case e.Zero:
			c = 'z'
		}
		for s := e.Start / 512; s < (e.Start+e.Length)/512 && s < int64(len(m)); s++ {
			m[s] = c
		}
	}
	return m
}

// vwSameMap fails the test unless two sector maps agree.
func vwSameMap(t testing.TB, what string, got, want vwSectorMap) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d sectors, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: sector %d (offset %d) is %c, qemu-img map says %c", what, i, int64(i)*512, got[i], want[i])
		}
	}
}

// vwFixtureVMDKs names the top and base VMDK of a fixture's disk.
func vwFixtureVMDKs(vmDir string, snapshot bool) (top, base string) {
	base = filepath.Join(vmDir, "fixture.vmdk")
	top = base
	if snapshot {
		top = filepath.Join(vmDir, "fixture-000001.vmdk")
	}
	return top, base
}

// vwHolesAreZero fails the test unless every hole sector of m reads as
// zeros in the raw copy b.
func vwHolesAreZero(t testing.TB, what string, m vwSectorMap, b []byte) {
	t.Helper()
	for i, c := range m {
		if c != 'd' && !vwAllZero(b[i*512:(i+1)*512]) {
			t.Fatalf("%s: sector %d is reported %c but holds data", what, i, c)
		}
	}
}

func vwAllZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

var vwErrRe = regexp.MustCompile(`(?i)input/output error|I/O error`)

// vwIsIOError reports whether a peer's output says EIO.
func vwIsIOError(out string) bool { return vwErrRe.MatchString(out) }
