//go:build unix

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/scan"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// vmcryptBinary builds the command once per test binary (the real main,
// for signal tests).
func vmcryptBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vmcrypt-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "vmcrypt")
		if runtime.GOOS == "windows" {
			binPath += ".exe"
		}
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = errors.New(string(out))
		}
	})
	if binErr != nil {
		t.Fatalf("building vmcrypt: %v", binErr)
	}
	return binPath
}

// temps lists vmcrypt temporaries in dir.
func temps(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if outfile.IsTemp(e.Name()) {
			out = append(out, e.Name())
		}
	}
	return out
}

// bigPlainDisk writes a plain streamOptimized disk of size bytes of
// random data (slow enough to export that a signal lands mid-way), and
// the raw image beside it.
func bigPlainDisk(t *testing.T, dir string, size int64) (disk, raw string) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	raw = filepath.Join(dir, "big.raw")
	if err := os.WriteFile(raw, b, 0o644); err != nil {
		t.Fatal(err)
	}
	disk = filepath.Join(dir, "big.vmdk")
	if err := vmdk.Write(context.Background(), disk, bytes.NewReader(b), size, nil, &vmdk.WriteOptions{Subformat: vmdk.SubformatStreamOptimized}); err != nil {
		t.Fatal(err)
	}
	return disk, raw
}

// startAndSignal runs the binary, waits until a temporary appears in
// watch, sends sig, and returns the exit code.
func startAndSignal(t *testing.T, watch string, sig os.Signal, args ...string) int {
	t.Helper()
	cmd := exec.Command(vmcryptBinary(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for len(temps(t, watch)) == 0 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no temporary appeared in %s: %s", watch, stderr.String())
		}
		time.Sleep(2 * time.Millisecond)
	}
	cmd.Process.Signal(sig)
	err := cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return -int(ws.Signal())
		}
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Fatalf("the command finished before the signal: %s", stderr.String())
	return 0
}

// 1. SIGINT or SIGTERM during vmdk export and fixture: exit 130, no
// temporary (of decrypted data) left; a SIGKILLed run's temporary is
// removed by the next run into the same folder.
func TestSignalsLeaveNoTemp(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGINT to another process on Windows")
	}
	src := t.TempDir()
	disk, raw := bigPlainDisk(t, src, 384<<20)
	for _, sig := range []os.Signal{os.Interrupt, syscall.SIGTERM} {
		out := t.TempDir()
		code := startAndSignal(t, out, sig, "vmdk", "export", disk, "-o", filepath.Join(out, "d.img"))
		if code != exitInterrupted {
			t.Fatalf("%v: exit %d, want %d", sig, code, exitInterrupted)
		}
		if n := dirNames(t, out); len(n) != 0 {
			t.Fatalf("%v: left %v", sig, n)
		}
	}
	// kill -9: no cleanup ran; the next export into the folder removes
	// the temporary and says so.
	out := t.TempDir()
	if code := startAndSignal(t, out, syscall.SIGKILL, "vmdk", "export", disk, "-o", filepath.Join(out, "d.img")); code != -int(syscall.SIGKILL) {
		t.Fatalf("SIGKILL: %d", code)
	}
	if len(temps(t, out)) == 0 {
		t.Fatal("SIGKILL left no temporary: the test proves nothing")
	}
	small := filepath.Join(src, "small.vmdk")
	if err := vmdk.Write(context.Background(), small, bytes.NewReader(make([]byte, 1<<20)), 1<<20, nil, nil); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, "vmdk", "export", small, "-o", filepath.Join(out, "s.img"))
	if code != exitOK || !strings.Contains(stderr, "removed") {
		t.Fatalf("next run: exit %d: %s", code, stderr)
	}
	if n := temps(t, out); len(n) != 0 {
		t.Fatalf("stale temporaries left: %v", n)
	}
	// The fixture generator: a large disk, interrupted.
	parent := t.TempDir()
	code = startAndSignal(t, parent, os.Interrupt, "fixture", filepath.Join(parent, "fx"), "--provider", "passphrase", "--from", raw)
	if code != exitInterrupted {
		t.Fatalf("fixture: exit %d", code)
	}
	if n := dirNames(t, parent); len(n) != 0 {
		t.Fatalf("fixture left %v", n)
	}
}

// 3. scan: a folder it cannot read is counted and named (run as an
// unprivileged user, so that permissions bite).
func TestScanUnreadableFolder(t *testing.T) {
	if runtime.GOOS == "windows" || os.Geteuid() != 0 {
		t.Skip("needs root to run the scan as another user")
	}
	root, err := os.MkdirTemp("", "scan-perm-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(root)
	os.Chmod(root, 0o755)
	os.Mkdir(filepath.Join(root, "secret"), 0o700)
	os.WriteFile(filepath.Join(root, "secret", "x.vmx"), []byte("a = \"b\"\n"), 0o600)
	bin := vmcryptBinary(t)
	os.Chmod(filepath.Dir(bin), 0o755)
	cmd := exec.Command(bin, "scan", root, "--json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v %s", err, out)
	}
	var rep scan.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Summary.UnreadableFolders != 1 || len(rep.Unreadable) != 1 || !strings.HasPrefix(rep.Unreadable[0], "secret") {
		t.Fatalf("unreadable folders: %d %q", rep.Summary.UnreadableFolders, rep.Unreadable)
	}
}
