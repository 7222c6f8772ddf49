package mount

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// secretText is the guest file the forensic tools must find.
const secretText = "the quick brown fox: vmcrypt evidence 7f3a\n"

// partStart is where the ext4 partition starts (sector 2048, 1 MiB).
const partStart = 2048

// makeExt4Disk builds a 40 MiB raw disk: an MBR with one Linux partition at
// 1 MiB holding a 32 MiB ext4 file system (mkfs.ext4 -d) with
// evidence/secret.txt and a 3 MiB random file. It returns the image path and
// the random file's content.
func makeExt4Disk(t *testing.T) (string, []byte) {
	t.Helper()
	mkfs := requireTool(t, "mkfs.ext4", "e2fsprogs")
	tmp := t.TempDir()
	tree := filepath.Join(tmp, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "evidence"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "evidence", "secret.txt"), []byte(secretText), 0o600); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 3<<20)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(tree, "evidence", "blob.bin"), blob, 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(tmp, "disk.raw")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(40 << 20); err != nil {
		t.Fatal(err)
	}
	// MBR: one primary partition, type 0x83, LBA start 2048, 65536 sectors.
	var mbr [512]byte
	e := mbr[446:462]
	e[4] = 0x83
	binary.LittleEndian.PutUint32(e[8:], partStart)
	binary.LittleEndian.PutUint32(e[12:], 65536)
	mbr[510], mbr[511] = 0x55, 0xaa
	if _, err := f.WriteAt(mbr[:], 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(mkfs, "-q", "-F", "-E", fmt.Sprintf("offset=%d", partStart*512),
		"-d", tree, "-L", "vmcrypt", img, "32M").CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	return img, blob
}

// fileRuns reads a file's allocation with SEEK_DATA/SEEK_HOLE.
func fileRuns(t *testing.T, f *os.File, size int64) []Run {
	t.Helper()
	runs := []Run{}
	for off := int64(0); off < size; {
		d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		h, err := unix.Seek(int(f.Fd()), d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, Run{d, h - d})
		off = h
	}
	return runs
}

// TestForensicPeers: a raw disk with an ext4 partition, served as DISK.raw
// with its real holes, reads back through Sleuth Kit (mmls, fls, icat),
// debugfs, qemu-img, and ewfacquire makes an E01 that ewfverify passes with
// the source image's MD5 — evidence acquisition through the mount.
func TestForensicPeers(t *testing.T) {
	mmls := requireTool(t, "mmls", "sleuthkit")
	fls := requireTool(t, "fls", "sleuthkit")
	icat := requireTool(t, "icat", "sleuthkit")
	debugfs := requireTool(t, "debugfs", "e2fsprogs")
	ewfacquire := requireTool(t, "ewfacquire", "ewf-tools")
	ewfverify := requireTool(t, "ewfverify", "ewf-tools")
	qemu := requireTool(t, "qemu-img", "qemu-utils")

	img, blob := makeExt4Disk(t)
	before, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	size := int64(len(before))
	runs := fileRuns(t, src, size)
	if len(runs) < 2 {
		t.Fatalf("source image has no holes (%d runs): the test would prove less", len(runs))
	}
	m := mountT(t, []File{{Name: "DISK.raw", Size: size, Data: src, Allocated: runs}}, Options{})
	disk := filepath.Join(m.Dir(), "DISK.raw")

	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, ee.Stderr)
			}
			t.Fatalf("%s: %v", name, err)
		}
		return string(out)
	}

	// Sleuth Kit: the partition table, the file names, the file contents.
	if out := run(mmls, disk); !regexp.MustCompile(`0000002048\s+0000067583\s+0000065536\s+Linux \(0x83\)`).MatchString(out) {
		t.Errorf("mmls does not show the partition:\n%s", out)
	}
	listing := run(fls, "-r", "-p", "-o", fmt.Sprint(partStart), disk)
	inode := func(path string) string {
		m := regexp.MustCompile(`(?m)^r/r (\d+):\t` + regexp.QuoteMeta(path) + `$`).FindStringSubmatch(listing)
		if m == nil {
			t.Fatalf("fls does not list %s:\n%s", path, listing)
		}
		return m[1]
	}
	if got := run(icat, "-o", fmt.Sprint(partStart), disk, inode("evidence/secret.txt")); got != secretText {
		t.Errorf("icat secret.txt = %q, want %q", got, secretText)
	}
	if got := run(icat, "-o", fmt.Sprint(partStart), disk, inode("evidence/blob.bin")); got != string(blob) {
		t.Errorf("icat blob.bin: %d bytes, sha256 %s, want %s", len(got), sha([]byte(got)), sha(blob))
	}

	// debugfs (read-only by default) through e2fsprogs' offset option.
	if got := run(debugfs, "-R", "cat /evidence/secret.txt", fmt.Sprintf("%s?offset=%d", disk, partStart*512)); got != secretText {
		t.Errorf("debugfs cat = %q, want %q", got, secretText)
	}

	// qemu-img sees the mount equal to the source.
	if out := run(qemu, "compare", "-f", "raw", "-F", "raw", img, disk); !strings.Contains(out, "Images are identical") {
		t.Errorf("qemu-img compare: %s", out)
	}

	// ewfacquire, unattended, then ewfverify: the E01 holds the source's MD5.
	target := filepath.Join(t.TempDir(), "evidence")
	acq := run(ewfacquire, "-u", "-q", "-t", target, "-f", "encase6", "-c", "fast", "-d", "sha256",
		"-C", "case-13", "-D", "vmcrypt mount test", "-e", "examiner", "-E", "ev-1", "-N", "through FUSE",
		"-m", "fixed", "-M", "physical", disk)
	wantMD5 := fmt.Sprintf("%x", md5.Sum(before))
	if !strings.Contains(acq, "MD5 hash calculated over data:\t\t"+wantMD5) ||
		!strings.Contains(acq, "SHA256 hash calculated over data:\t"+sha(before)) {
		t.Errorf("ewfacquire hashes differ from the source (md5 %s):\n%s", wantMD5, acq)
	}
	ver := run(ewfverify, "-q", target+".E01")
	if !strings.Contains(ver, "MD5 hash stored in file:\t\t"+wantMD5) ||
		!strings.Contains(ver, "MD5 hash calculated over data:\t\t"+wantMD5) ||
		!strings.Contains(ver, "ewfverify: SUCCESS") {
		t.Errorf("ewfverify:\n%s", ver)
	}

	// The source image was only read.
	after, err := os.ReadFile(img)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("source image changed: %v", err)
	}
}
