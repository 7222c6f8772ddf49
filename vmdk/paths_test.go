package vmdk

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func flatDisk(t *testing.T, dir, extent string) string {
	t.Helper()
	desc := "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW 8 FLAT \"" + extent + "\" 0\n"
	p := filepath.Join(dir, "d.vmdk")
	if err := os.WriteFile(p, []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// An extent that is a FIFO is refused at once (it would block the open),
// not waited on.
func TestExtentFIFORefused(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "d-flat.vmdk"), 0o600); err != nil {
		t.Fatal(err)
	}
	p := flatDisk(t, dir, "d-flat.vmdk")
	done := make(chan error, 1)
	go func() {
		d, err := Open(p, nil)
		if err == nil {
			d.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrUnsupported) {
			t.Fatalf("FIFO extent: %v, want ErrUnsupported", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Open blocked on a FIFO extent")
	}
}

// A symbolic link inside the folder to a file outside it is an unsafe
// path, as an absolute extent name is; a link that stays inside is fine.
func TestExtentSymlinkOutside(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "d-flat.vmdk")); err != nil {
		t.Fatal(err)
	}
	p := flatDisk(t, dir, "d-flat.vmdk")
	if _, err := Open(p, nil); !errors.Is(err, ErrUnsafePath) {
		t.Fatalf("link out of the folder: %v, want ErrUnsafePath", err)
	}
	d, err := Open(p, &OpenOptions{AllowUnsafePaths: true})
	if err != nil {
		t.Fatalf("allowed: %v", err)
	}
	d.Close()
	inside := filepath.Join(dir, "real-flat.bin")
	os.WriteFile(inside, make([]byte, 4096), 0o600)
	os.Remove(filepath.Join(dir, "d-flat.vmdk"))
	if err := os.Symlink("real-flat.bin", filepath.Join(dir, "d-flat.vmdk")); err != nil {
		t.Fatal(err)
	}
	d, err = Open(p, nil)
	if err != nil {
		t.Fatalf("link inside the folder: %v", err)
	}
	d.Close()
}
