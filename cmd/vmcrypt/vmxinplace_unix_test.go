//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

// interruptSelf sends SIGINT to this process and waits until the in-place
// change has seen it (it holds signals from its first backup to its last
// rename).
func interruptSelf() error {
	n := vmxSignals.Load()
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if vmxSignals.Load() > n {
			return nil
		}
	}
	return fmt.Errorf("SIGINT was not delivered")
}

// A real SIGINT between the backups and the renames leaves the VM exactly
// as it was, with no backup and no temporary file; so does a failure after
// some files were already changed (they are put back). A SIGINT during the
// renames lets the change finish: never a half-changed VM.
func TestVMXInPlaceSignals(t *testing.T) {
	noEnvPassphrase(t)
	t.Cleanup(func() { vmxCommitHook = nil })
	vm, _, oldFile := passFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicSparse,
		Size: 1 << 20, Seed: 1507})
	in := filepath.Join(vm, "fixture.vmx")
	newFile := passFile(t, "new")
	before := folderSums(t, vm)
	passwd := func() int {
		code, _, _ := runCLI(t, "vmx", "passwd", in, "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", newFile)
		return code
	}
	var seen []string
	for _, c := range []struct {
		name string
		hook func(stage string) error
	}{
		{"SIGINT after the backups", func(s string) error {
			if s == "backups" {
				return interruptSelf()
			}
			return nil
		}},
		{"SIGINT after the new contents are synced, before the renames", func(s string) error {
			seen = append(seen, s)
			if s == "temps" {
				return interruptSelf()
			}
			return nil
		}},
		{"a failure after the disk was changed, before the VMX", func(s string) error {
			if s == "committed 0" {
				return errors.New("simulated failure")
			}
			return nil
		}},
	} {
		vmxCommitHook = c.hook
		want := exitInterrupted // SIGINT is 130 in every command
		if strings.HasPrefix(c.name, "a failure") {
			want = exitFailure
		}
		if code := passwd(); code != want {
			t.Fatalf("%s: exit %d, want %d", c.name, code, want)
		}
		sameSums(t, c.name, before, folderSums(t, vm))
		if code, _ := decryptVMX(t, in, oldFile); code != 0 {
			t.Fatalf("%s: the old passphrase no longer opens", c.name)
		}
	}
	if len(seen) != 2 || seen[0] != "backups" || seen[1] != "temps" {
		t.Fatalf("stages %v", seen)
	}
	// SIGINT during the renames: held until they are all done.
	vmxCommitHook = func(s string) error {
		if s == "committed 0" {
			return interruptSelf()
		}
		return nil
	}
	if code := passwd(); code != 0 {
		t.Fatalf("SIGINT during the renames: exit %d", code)
	}
	after := folderSums(t, vm)
	for _, n := range []string{"fixture.vmx.vmcrypt-bak", "fixture.vmdk.descriptor.vmcrypt-bak"} {
		if after[n] == "" {
			t.Fatalf("backup %s missing", n)
		}
	}
	if len(after) != len(before)+2 {
		t.Fatalf("files: %v", after)
	}
	if code, _, _ := runCLI(t, "unlock", in, "--passphrase-file", newFile); code != 0 {
		t.Fatalf("the finished change does not open with the new passphrase: exit %d", code)
	}
}
