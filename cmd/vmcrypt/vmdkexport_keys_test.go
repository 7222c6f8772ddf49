package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

// `vmdk export` of an encrypted disk with its key gives the plaintext (raw
// and VMDK); without a key it is refused (exit 5); a wrong one is exit 3.
func TestVMDKExportEncrypted(t *testing.T) {
	for i, c := range []struct{ provider, disk string }{
		{fixtures.ProviderPassphrase, vmdk.SubformatMonolithicSparse},
		{fixtures.ProviderKMS, vmdk.SubformatStreamOptimized},
	} {
		fx := recFixture(t, fixtures.Recipe{Provider: c.provider, Disk: c.disk, Seed: uint64(80 + i), Snapshot: i == 0})
		disk := filepath.Join(fx.Dir, fixtures.VMDir, filepath.Base(fx.Manifest.Keys.Disks[0].File))
		if fx.Manifest.Recipe.Snapshot {
			disk = filepath.Join(fx.Dir, fixtures.VMDir, fixtures.DefaultName+"-000001.vmdk")
		}
		out := t.TempDir()
		raw := filepath.Join(out, "d.raw")
		code, _, stderr := runCLI(t, append([]string{"vmdk", "export", disk, "-o", raw}, recKeyArgs(fx)...)...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if got := recSums(t, out)["d.raw"]; got != fx.Manifest.SHA256.Disk {
			t.Fatalf("raw export sha256 %s, want %s", got, fx.Manifest.SHA256.Disk)
		}
		vm := filepath.Join(out, "d.vmdk")
		if code, _, stderr := runCLI(t, append([]string{"vmdk", "export", disk, "-o", vm, "--format", "vmdk"}, recKeyArgs(fx)...)...); code != exitOK {
			t.Fatalf("vmdk export: exit %d: %s", code, stderr)
		}
		d, err := vmdk.Open(vm, nil)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256Reader(t, d, d.Size())
		d.Close()
		if h != fx.Manifest.SHA256.Disk {
			t.Fatal("vmdk export content differs")
		}
		nokey := filepath.Join(out, "nokey.raw")
		if code, _, _ := runCLI(t, "vmdk", "export", disk, "-o", nokey); code != exitKeyNotFound {
			t.Fatalf("no key: exit %d, want %d", code, exitKeyNotFound)
		}
		if _, err := os.Stat(nokey); err == nil {
			t.Fatal("no key: an output file was written")
		}
	}
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Seed: 90, Negative: fixtures.NegWrongPassphrase})
	out := t.TempDir()
	disk := filepath.Join(fx.Dir, fixtures.VMDir, fixtures.DefaultName+".vmdk")
	if code, _, _ := runCLI(t, append([]string{"vmdk", "export", disk, "-o", filepath.Join(out, "x.raw")}, recKeyArgs(fx)...)...); code != exitWrongKey {
		t.Fatalf("wrong passphrase: exit %d, want %d", code, exitWrongKey)
	}
	if n := recNames(t, out); len(n) != 0 {
		t.Fatalf("refused export left %v", n)
	}
}

func sha256Reader(t *testing.T, r io.ReaderAt, size int64) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(r, 0, size)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
