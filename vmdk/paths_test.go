package vmdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
	mkfifo(t, filepath.Join(dir, "d-flat.vmdk"))
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

// Repeating one extent line does not multiply the memory of its grain
// maps without bound: past the disk's budget it is refused.
func TestRepeatedExtentMemoryCapped(t *testing.T) {
	dir := t.TempDir()
	const size = 4 << 30 // 128 grain-directory entries of 64 KiB grains
	ext := filepath.Join(dir, "x.vmdk")
	if err := Write(context.Background(), ext, bytes.NewReader(nil), size, []Run{{Off: 0, Len: size, State: Zero}}, &WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	one, err := Open(ext, nil)
	if err != nil {
		t.Fatal(err)
	}
	per := metaBytes(one.Links()[0].exts[0])
	one.Close()
	if per <= 0 {
		t.Fatalf("map bytes of one extent: %d", per)
	}
	defer func(v int64) { maxMetaBytes = v }(maxMetaBytes)
	maxMetaBytes = 2*per + per/2
	open := func(lines int) error {
		desc := "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"twoGbMaxExtentSparse\"\n\n"
		for range lines {
			desc += fmt.Sprintf("RW %d SPARSE \"x.vmdk\"\n", size/SectorSize)
		}
		p := filepath.Join(dir, fmt.Sprintf("d%d.vmdk", lines))
		if err := os.WriteFile(p, []byte(desc), 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := Open(p, nil)
		if err == nil {
			d.Close()
		}
		return err
	}
	if err := open(2); err != nil {
		t.Fatalf("2 lines within the budget: %v", err)
	}
	if err := open(3); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "grain maps") {
		t.Fatalf("3 lines past the budget: %v", err)
	}
}
