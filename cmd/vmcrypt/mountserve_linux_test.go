//go:build linux

package main

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

const vwFixturesRoot = "../../fixtures/testdata"

// TestServeMountCheckedInFixtures: every checked-in fixture that opens,
// served and mounted with its secrets. Through NBD: nbdinfo --list names
// every export (DISK.raw, DISK@1.raw for a snapshot), qemu-img convert
// and nbdcopy give the sha256 of fixture.json (the disk, and the base
// disk as the snapshot state), nbdinfo --map reports the holes qemu-img
// map finds in the VMDK itself, and the holes read as zeros. Through
// FUSE: sha256sum of every file (disk, snapshot state, .nvram, .vswp,
// .vmsn) is the manifest's, the decrypted settings end NAME.vmx, and
// SEEK_DATA/SEEK_HOLE follow the VMDK's map. Both stop on an interrupt
// (exit 130); the VM folder is unchanged and nothing is left behind.
func TestServeMountCheckedInFixtures(t *testing.T) {
	ents, err := os.ReadDir(vwFixturesRoot)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		dir := filepath.Join(vwFixturesRoot, e.Name())
		m, err := fixtures.LoadManifest(dir)
		if err != nil || m.Expect != fixtures.ExpectOpens {
			continue
		}
		n++
		t.Run(e.Name(), func(t *testing.T) {
			mnt := vwMountDir(t)
			work := t.TempDir()
			vwGuardNoWrites(t, dir)
			vmDir := filepath.Join(dir, fixtures.VMDir)
			keys := vwManifestKeyArgs(dir, m)
			top, base := vwFixtureVMDKs(vmDir, m.Recipe.Snapshot)
			const size = 1 << 20
			wantExports := []string{"fixture.raw"}
			if m.Recipe.Snapshot {
				wantExports = append(wantExports, "fixture@1.raw")
			}

			r, sock := vwStartServe(t, vmDir, keys...)
			var list []struct {
				ExportName string `json:"export-name"`
				Size       int64  `json:"export-size"`
			}
			var listing struct {
				Exports *[]struct {
					ExportName string `json:"export-name"`
					Size       int64  `json:"export-size"`
				} `json:"exports"`
			}
			listing.Exports = &list
			out := vwRunPeer(t, vwPeer(t, "nbdinfo", "libnbd-bin"), "--list", "--json", "nbd+unix://?socket="+sock)
			if err := json.Unmarshal([]byte(out), &listing); err != nil {
				t.Fatalf("nbdinfo --list --json: %v\n%s", err, out)
			}
			var got []string
			for _, x := range list {
				got = append(got, x.ExportName)
				if x.Size != size {
					t.Fatalf("export %s size %d", x.ExportName, x.Size)
				}
			}
			if !slices.Equal(got, wantExports) {
				t.Fatalf("nbdinfo --list: %q, want %q", got, wantExports)
			}
			raw := filepath.Join(work, "disk.raw")
			vwRunPeer(t, vwPeer(t, "qemu-img", "qemu-utils"), "convert", "-f", "raw", "-O", "raw", vwNbdURI(sock, "fixture.raw"), raw)
			if s := vwFileSHA(t, raw); (s == m.SHA256.Disk) == (m.Tamper != nil) {
				t.Fatalf("qemu-img convert over NBD: sha256 %s, manifest %s (tampered %v)", s, m.SHA256.Disk, m.Tamper != nil)
			}
			b, _ := os.ReadFile(raw)
			nm := vwNbdMap(t, vwNbdURI(sock, "fixture.raw"), size)
			vwSameMap(t, "nbdinfo --map fixture.raw", nm, vwQemuMap(t, top, size))
			vwHolesAreZero(t, "fixture.raw", nm, b)
			if m.Recipe.Snapshot {
				braw := filepath.Join(work, "base.raw")
				vwRunPeer(t, vwPeer(t, "nbdcopy", "libnbd-bin"), vwNbdURI(sock, "fixture@1.raw"), braw)
				if s := vwFileSHA(t, braw); s != m.SHA256.BaseDisk {
					t.Fatalf("nbdcopy of fixture@1.raw: sha256 %s, manifest base disk %s", s, m.SHA256.BaseDisk)
				}
				vwSameMap(t, "nbdinfo --map fixture@1.raw", vwNbdMap(t, vwNbdURI(sock, "fixture@1.raw"), size), vwQemuMap(t, base, size))
			}
			vwStopServe(t, r)

			mr := vwStartMount(t, vmDir, mnt, keys...)
			disk := filepath.Join(mnt, "fixture.raw")
			if s := vwSha256sum(t, disk); s != vwFileSHA(t, raw) {
				t.Fatalf("mounted fixture.raw sha256 %s differs from the NBD copy", s)
			}
			sums := map[string]string{"fixture.nvram": m.SHA256.NVRAM, "fixture.vswp": m.SHA256.VSWP, "fixture-Snapshot1.vmsn": m.SHA256.VMSN, "fixture@1.raw": m.SHA256.BaseDisk}
			for name, want := range sums {
				if want != "" {
					if s := vwSha256sum(t, filepath.Join(mnt, name)); s != want {
						t.Fatalf("mounted %s: sha256 %s, manifest %s", name, s, want)
					}
				}
			}
			if !vwEndsWithSHA(t, filepath.Join(mnt, "fixture.vmx"), m.SHA256.VMXBody) {
				t.Fatal("mounted fixture.vmx does not end with the decrypted settings of the manifest")
			}
			seek := vwSeekMap(t, disk, size)
			want := vwQemuMap(t, top, size)
			for i := range seek {
				if (seek[i] == 'd') != (want[i] == 'd') {
					t.Fatalf("SEEK_DATA/SEEK_HOLE: sector %d is %c, qemu-img map says %c", i, seek[i], want[i])
				}
			}
			// A mount point in use cannot be removed; the mount goes on.
			if err := os.Remove(mnt); !errors.Is(err, syscall.EBUSY) {
				t.Fatalf("removing the mount point: %v, want EBUSY", err)
			}
			if s := vwSha256sum(t, disk); s != vwFileSHA(t, raw) {
				t.Fatal("the mount changed after the removal attempt")
			}
			vwUnmount(t, mr, mnt)
		})
	}
	if n < 15 {
		t.Fatalf("only %d checked-in fixtures open", n)
	}
}

// vwEndsWithSHA reports whether some tail of the file has the given sha256.
func vwEndsWithSHA(t testing.TB, p, want string) bool {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		h := sha256.Sum256(b[i:])
		if hex.EncodeToString(h[:]) == want {
			return true
		}
	}
	return false
}

// vwSeekMap classifies each sector of a file with SEEK_DATA/SEEK_HOLE:
// 'd' data, 'h' hole.
func vwSeekMap(t testing.TB, p string, size int64) vwSectorMap {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := bytes.Repeat([]byte{'h'}, int(size/512))
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
		for s := d / 512; s < h/512; s++ {
			m[s] = 'd'
		}
		off = h
	}
	return m
}

// vwWriteDisk writes a fixture's plaintext disk to a raw file (the
// expected content peers compare against).
func vwWriteDisk(t testing.TB, d fixtures.Disk, p string) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, io.NewSectionReader(d, 0, d.Size())); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestServeMountGeneratedKinds: generated fixtures of every disk kind and
// provider, each with a snapshot: qemu-img compare of the NBD export and
// of the mounted file against the plaintext the fixture was made from,
// for the disk and for its snapshot state; nbdcopy and qemu-img convert
// give the manifest's sha256; nbdinfo --map matches qemu-img map.
func TestServeMountGeneratedKinds(t *testing.T) {
	qemu := vwPeer(t, "qemu-img", "qemu-utils")
	for i, disk := range []string{vmdk.SubformatMonolithicSparse, vmdk.SubformatMonolithicFlat, vmdk.SubformatStreamOptimized, vmdk.SubformatTwoGbMaxExtentSparse} {
		provider := []string{fixtures.ProviderNKP, fixtures.ProviderPassphrase, fixtures.ProviderKMS, fixtures.ProviderPassphrase}[i]
		layout := []fixtures.Layout{fixtures.LayoutGPTNTFS, fixtures.LayoutMBRExt4}[i%2]
		t.Run(disk, func(t *testing.T) {
			mnt := vwMountDir(t)
			work := t.TempDir()
			const size = 4 << 20
			fx := recFixture(t, fixtures.Recipe{Provider: provider, Disk: disk, Size: size, Layout: layout, Snapshot: true, Memory: i%2 == 1, Seed: uint64(1300 + i)})
			defer fx.Close()
			vwGuardNoWrites(t, fx.Dir)
			vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
			want, wantBase := filepath.Join(work, "want.raw"), filepath.Join(work, "base.raw")
			vwWriteDisk(t, fx.Disk, want)
			vwWriteDisk(t, fx.Base, wantBase)
			top, base := vwFixtureVMDKs(vmDir, true)

			r, sock := vwStartServe(t, vmDir, recKeyArgs(fx)...)
			vwRunPeer(t, qemu, "compare", "-f", "raw", "-F", "raw", vwNbdURI(sock, "fixture.raw"), want)
			vwRunPeer(t, qemu, "compare", "-f", "raw", "-F", "raw", vwNbdURI(sock, "fixture@1.raw"), wantBase)
			got := filepath.Join(work, "got.raw")
			vwRunPeer(t, vwPeer(t, "nbdcopy", "libnbd-bin"), vwNbdURI(sock, "fixture.raw"), got)
			if s := vwFileSHA(t, got); s != fx.Manifest.SHA256.Disk {
				t.Fatalf("nbdcopy: sha256 %s, manifest %s", s, fx.Manifest.SHA256.Disk)
			}
			vwRunPeer(t, qemu, "convert", "-f", "raw", "-O", "raw", vwNbdURI(sock, "fixture@1.raw"), got)
			if s := vwFileSHA(t, got); s != fx.Manifest.SHA256.BaseDisk {
				t.Fatalf("qemu-img convert of the snapshot state: sha256 %s, manifest %s", s, fx.Manifest.SHA256.BaseDisk)
			}
			vwSameMap(t, "fixture.raw", vwNbdMap(t, vwNbdURI(sock, "fixture.raw"), size), vwQemuMap(t, top, size))
			vwSameMap(t, "fixture@1.raw", vwNbdMap(t, vwNbdURI(sock, "fixture@1.raw"), size), vwQemuMap(t, base, size))
			vwStopServe(t, r)

			mr := vwStartMount(t, vmDir, mnt, recKeyArgs(fx)...)
			vwRunPeer(t, qemu, "compare", "-f", "raw", "-F", "raw", filepath.Join(mnt, "fixture.raw"), want)
			vwRunPeer(t, qemu, "compare", "-f", "raw", "-F", "raw", filepath.Join(mnt, "fixture@1.raw"), wantBase)
			vwUnmount(t, mr, mnt)
		})
	}
}

// vwSecretText is the guest file the forensic tools must find.
const vwSecretText = "vmcrypt mount evidence: the quick brown fox 7f3a\n"

// vwExt4Start is the partition's first sector (1 MiB).
const vwExt4Start = 2048

// vwMakeExt4Image builds a 24 MiB raw disk: an MBR with one Linux partition
// at 1 MiB holding a 16 MiB ext4 file system (mkfs.ext4 -d) with
// evidence/secret.txt, and holes elsewhere.
func vwMakeExt4Image(t testing.TB, dir string) string {
	t.Helper()
	mkfs := vwPeer(t, "mkfs.ext4", "e2fsprogs")
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "evidence"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "evidence", "secret.txt"), []byte(vwSecretText), 0o600); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 1<<20)
	rand.Read(blob)
	if err := os.WriteFile(filepath.Join(tree, "evidence", "blob.bin"), blob, 0o600); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, "plain.raw")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(24 << 20); err != nil {
		t.Fatal(err)
	}
	var mbr [512]byte
	e := mbr[446:462]
	e[4] = 0x83
	binary.LittleEndian.PutUint32(e[8:], vwExt4Start)
	binary.LittleEndian.PutUint32(e[12:], 16<<20/512)
	mbr[510], mbr[511] = 0x55, 0xaa
	if _, err := f.WriteAt(mbr[:], 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", "-E", fmt.Sprintf("offset=%d", vwExt4Start*512), "-d", tree, "-L", "evidence", img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if err := os.RemoveAll(tree); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestForensicExt4: a real ext4 file system encrypted into a VM
// (fixtures.Recipe{From: image}, as `vmcrypt fixture --from` does). The
// VM folder holds the guest file's text nowhere (grep). Through the mount,
// Sleuth Kit (mmls, fls, icat) and debugfs read the file back, and
// ewfacquire makes an E01 that ewfverify passes with the plain image's MD5;
// through NBD, nbdcopy and the same tools do.
func TestForensicExt4(t *testing.T) {
	mmls := vwPeer(t, "mmls", "sleuthkit")
	fls := vwPeer(t, "fls", "sleuthkit")
	icat := vwPeer(t, "icat", "sleuthkit")
	debugfs := vwPeer(t, "debugfs", "e2fsprogs")
	ewfacquire := vwPeer(t, "ewfacquire", "ewf-tools")
	ewfverify := vwPeer(t, "ewfverify", "ewf-tools")
	grep := vwPeer(t, "grep", "grep")

	mnt := vwMountDir(t)
	work := t.TempDir()
	img := vwMakeExt4Image(t, work)
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicSparse, From: img, Seed: 1313})
	defer fx.Close()
	plain, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	vwGuardNoWrites(t, fx.Dir)
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)

	// The cold copy: the text is nowhere in the VM folder.
	cmd := exec.Command(grep, "-r", "-a", "-l", "-F", strings.TrimSpace(vwSecretText), vmDir)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("grep of the VM folder: %v (exit 1 = not found wanted): %s", err, out)
	}

	// readBack runs Sleuth Kit and debugfs on a raw disk.
	readBack := func(disk string) {
		t.Helper()
		if out := vwRunPeer(t, mmls, disk); !regexp.MustCompile(`0000002048\s+0000034815\s+0000032768\s+Linux \(0x83\)`).MatchString(out) {
			t.Fatalf("mmls %s does not show the partition:\n%s", disk, out)
		}
		listing := vwRunPeer(t, fls, "-r", "-p", "-o", fmt.Sprint(vwExt4Start), disk)
		m := regexp.MustCompile(`(?m)^r/r (\d+):\tevidence/secret\.txt$`).FindStringSubmatch(listing)
		if m == nil {
			t.Fatalf("fls does not list evidence/secret.txt:\n%s", listing)
		}
		if got := vwRunPeer(t, icat, "-o", fmt.Sprint(vwExt4Start), disk, m[1]); got != vwSecretText {
			t.Fatalf("icat: %q, want %q", got, vwSecretText)
		}
		if got := vwRunPeer(t, debugfs, "-R", "cat /evidence/secret.txt", fmt.Sprintf("%s?offset=%d", disk, vwExt4Start*512)); got != vwSecretText {
			t.Fatalf("debugfs cat: %q, want %q", got, vwSecretText)
		}
	}

	mr := vwStartMount(t, vmDir, mnt, recKeyArgs(fx)...)
	disk := filepath.Join(mnt, "fixture.raw")
	readBack(disk)
	target := filepath.Join(work, "evidence")
	acq := vwRunPeer(t, ewfacquire, "-u", "-q", "-t", target, "-f", "encase6", "-c", "fast", "-d", "sha256",
		"-C", "case-13", "-D", "encrypted VM through vmcrypt mount", "-e", "examiner", "-E", "ev-1", "-N", "no plaintext at rest",
		"-m", "fixed", "-M", "physical", disk)
	wantMD5 := fmt.Sprintf("%x", md5.Sum(plain))
	if !strings.Contains(acq, "MD5 hash calculated over data:\t\t"+wantMD5) {
		t.Fatalf("ewfacquire MD5 differs from the plain image's %s:\n%s", wantMD5, acq)
	}
	ver := vwRunPeer(t, ewfverify, "-q", target+".E01")
	if !strings.Contains(ver, "MD5 hash stored in file:\t\t"+wantMD5) || !strings.Contains(ver, "MD5 hash calculated over data:\t\t"+wantMD5) ||
		!strings.Contains(ver, "ewfverify: SUCCESS") {
		t.Fatalf("ewfverify:\n%s", ver)
	}
	vwUnmount(t, mr, mnt)

	r, sock := vwStartServe(t, vmDir, recKeyArgs(fx)...)
	copied := filepath.Join(work, "copy.raw")
	vwRunPeer(t, vwPeer(t, "nbdcopy", "libnbd-bin"), vwNbdURI(sock, "fixture.raw"), copied)
	readBack(copied)
	if vwFileSHA(t, copied) != vwFileSHA(t, img) {
		t.Fatal("the NBD copy differs from the plain image")
	}
	vwStopServe(t, r)
}

// TestMountServeRefusals: what must mount or serve nothing, with its exit
// code: a wrong passphrase (3), no key or another key (4), a truncated
// disk (5), a mount point that is not an empty folder (2), a non-loopback
// --listen without --listen-any, an existing --socket, conflicting
// options (2). Nothing is mounted, no socket is left, no file is written.
func TestMountServeRefusals(t *testing.T) {
	fx := func(name string) (string, []string) {
		dir := filepath.Join(vwFixturesRoot, name)
		m, err := fixtures.LoadManifest(dir)
		if err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, fixtures.VMDir), vwManifestKeyArgs(dir, m)
	}
	good, goodKeys := fx("passphrase-monolithicSparse")
	wrongPass, wrongPassKeys := fx("neg-wrong-passphrase")
	otherKEK, otherKEKKeys := fx("neg-other-kek")
	truncated, truncatedKeys := fx("neg-truncated-disk")
	mnt := vwMountDir(t)
	work := t.TempDir()
	full := filepath.Join(work, "full")
	os.Mkdir(full, 0o755)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	afile := filepath.Join(work, "file")
	os.WriteFile(afile, nil, 0o644)
	sockDir := vwShortDir(t)
	existing := filepath.Join(sockDir, "taken")
	os.WriteFile(existing, nil, 0o600)
	vwGuardNoWrites(t, filepath.Dir(good), filepath.Dir(wrongPass), filepath.Dir(otherKEK), filepath.Dir(truncated), work, sockDir)
	t.Setenv(envPassphrase, "")
	os.Unsetenv(envPassphrase)

	for _, c := range []struct {
		name string
		code int
		args []string
	}{
		{"mount wrong passphrase", exitWrongKey, append([]string{"mount", wrongPass, mnt}, wrongPassKeys...)},
		{"serve wrong passphrase", exitWrongKey, append([]string{"serve", wrongPass, "--socket", filepath.Join(sockDir, "s")}, wrongPassKeys...)},
		{"mount no key", exitKeyNotFound, []string{"mount", good, mnt}},
		{"serve no key", exitKeyNotFound, []string{"serve", good}},
		{"mount other KEK", exitKeyNotFound, append([]string{"mount", otherKEK, mnt}, otherKEKKeys...)},
		{"serve other KEK", exitKeyNotFound, append([]string{"serve", otherKEK}, otherKEKKeys...)},
		{"mount truncated disk", exitCorrupt, append([]string{"mount", truncated, mnt}, truncatedKeys...)},
		{"serve truncated disk", exitCorrupt, append([]string{"serve", truncated}, truncatedKeys...)},
		{"mount point not empty", exitUsage, append([]string{"mount", good, full}, goodKeys...)},
		{"mount point missing", exitUsage, append([]string{"mount", good, filepath.Join(work, "missing")}, goodKeys...)},
		{"mount point a file", exitUsage, append([]string{"mount", good, afile}, goodKeys...)},
		{"mount one argument", exitUsage, append([]string{"mount", good}, goodKeys...)},
		{"serve non-loopback", exitUsage, append([]string{"serve", good, "--listen", "0.0.0.0:0"}, goodKeys...)},
		{"serve socket exists", exitUsage, append([]string{"serve", good, "--socket", existing}, goodKeys...)},
		{"serve socket and listen", exitUsage, append([]string{"serve", good, "--socket", filepath.Join(sockDir, "s"), "--listen", "127.0.0.1:0"}, goodKeys...)},
		{"serve listen-any alone", exitUsage, append([]string{"serve", good, "--listen-any"}, goodKeys...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, c.args...)
			if code != c.code {
				t.Fatalf("exit %d, want %d: %s", code, c.code, stderr)
			}
			if vwMounted(t, mnt) {
				t.Fatal("something was mounted")
			}
		})
	}
}

// TestDamagedGrain: a streamOptimized disk with a damaged compressed grain
// in the middle (neg-flip-grain-stream) is served and mounted; reads of
// that grain fail (NBD error through qemu-io, EIO through the mount), the
// log names the disk and the offset, reads of the other grains work and
// the server stays up.
func TestDamagedGrain(t *testing.T) {
	qemuIO := vwPeer(t, "qemu-io", "qemu-utils")
	dd := vwPeer(t, "dd", "coreutils")
	dir := filepath.Join(vwFixturesRoot, "neg-flip-grain-stream")
	m, err := fixtures.LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	vmDir := filepath.Join(dir, fixtures.VMDir)
	mnt := vwMountDir(t)
	vwGuardNoWrites(t, dir)
	keys := vwManifestKeyArgs(dir, m)
	dataGrains := func(qm vwSectorMap) []int64 {
		var g []int64
		for s := 0; s < len(qm); s += 128 {
			if qm[s] == 'd' {
				g = append(g, int64(s)*512)
			}
		}
		return g
	}
	grains := dataGrains(vwQemuMap(t, filepath.Join(vmDir, "fixture.vmdk"), 1<<20))
	logOffset := regexp.MustCompile(`read error: .*\b(?:export|file)=fixture\.raw offset=(\d+)`)

	r, sock := vwStartServe(t, vmDir, keys...)
	var bad, good []int64
	for _, g := range grains {
		cmd := exec.Command(qemuIO, "-r", "-f", "raw", "-c", fmt.Sprintf("read %d 65536", g), vwNbdURI(sock, "fixture.raw"))
		out, err := cmd.CombinedOutput()
		switch {
		case err == nil && !strings.Contains(string(out), "failed"):
			good = append(good, g)
		case vwIsIOError(string(out)):
			bad = append(bad, g)
		default:
			t.Fatalf("qemu-io read %d: %v: %s", g, err, out)
		}
	}
	if len(bad) == 0 || len(good) == 0 {
		t.Fatalf("%d bad and %d good grains over NBD: want some of each", len(bad), len(good))
	}
	lm := logOffset.FindStringSubmatch(r.stderr.String())
	if lm == nil || lm[1] != fmt.Sprint(bad[0]) {
		t.Fatalf("the log does not name fixture.raw at offset %d:\n%s", bad[0], r.stderr)
	}
	if out := vwRunPeer(t, vwPeer(t, "nbdinfo", "libnbd-bin"), "--list", "nbd+unix://?socket="+sock); !strings.Contains(out, "fixture.raw") || !r.running() {
		t.Fatalf("the server stopped serving after the read errors:\n%s", out)
	}
	vwStopServe(t, r)

	mr := vwStartMount(t, vmDir, mnt, keys...)
	disk := filepath.Join(mnt, "fixture.raw")
	for _, g := range grains {
		out, err := exec.Command(dd, "if="+disk, "of=/dev/null", "bs=64K", "iflag=direct", fmt.Sprintf("skip=%d", g/65536), "count=1").CombinedOutput()
		isBad := slices.Contains(bad, g)
		switch {
		case isBad && (err == nil || !vwIsIOError(string(out))):
			t.Fatalf("dd of the damaged grain at %d: %v, want EIO: %s", g, err, out)
		case !isBad && err != nil:
			t.Fatalf("dd of the good grain at %d: %v: %s", g, err, out)
		}
	}
	if lm := logOffset.FindStringSubmatch(mr.stderr.String()); lm == nil || lm[1] != fmt.Sprint(bad[0]) {
		t.Fatalf("the mount log does not name fixture.raw at offset %d:\n%s", bad[0], mr.stderr)
	}
	if !vwMounted(t, mnt) || !mr.running() {
		t.Fatal("the mount went away after a read error")
	}
	vwUnmount(t, mr, mnt)
}

// vwSubprocess is vmcrypt running as a child process (the test binary
// re-executed), for real signals.
type vwSubprocess struct {
	cmd    *exec.Cmd
	stderr *vwLockedBuffer
	done   chan struct{}
	err    error
}

func vwStartSubprocess(t *testing.T, args ...string) *vwSubprocess {
	t.Helper()
	p := &vwSubprocess{cmd: exec.Command(os.Args[0], args...), stderr: &vwLockedBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), "VMCRYPT_TEST_EXEC=1")
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if p.running() {
			p.cmd.Process.Kill()
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				t.Errorf("vmcrypt (pid %d) did not exit 10s after SIGKILL", p.cmd.Process.Pid)
			}
		}
	})
	return p
}

func (p *vwSubprocess) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig and returns the exit code.
func (p *vwSubprocess) signal(t *testing.T, sig os.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	return p.wait(t)
}

func (p *vwSubprocess) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("vmcrypt did not stop:\n%s", p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

// TestSignals runs the built command as a process: SIGINT unmounts and
// exits 130; fusermount3 -u ends the mount with exit 0; a killed mount
// leaves a stale folder, which the next mount explains (exit 1); SIGTERM
// stops serve with exit 130 and removes its socket and private folder
// (made in TMPDIR, which must be empty again).
func TestSignals(t *testing.T) {
	fusermount := vwPeer(t, "fusermount3", "fuse3")
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderKMS, Disk: vmdk.SubformatTwoGbMaxExtentSparse, Size: 2 << 20, Snapshot: true, Seed: 1314})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	keys := recKeyArgs(fx)
	mnts := []string{vwMountDir(t), vwMountDir(t), vwMountDir(t)}
	vwGuardNoWrites(t, fx.Dir)
	startedMount := func(mnt string) *vwSubprocess {
		p := vwStartSubprocess(t, append([]string{"mount", vmDir, mnt}, keys...)...)
		// Mounted, and the command said so: its start-up (which touches
		// the mount itself) is over.
		vwWaitFor(t, "mount", p.running, p.stderr, func() bool {
			_, err := os.Stat(filepath.Join(mnt, "fixture.raw"))
			return err == nil && vwMounted(t, mnt) && strings.Contains(p.stderr.String(), "mounted "+vmDir)
		})
		return p
	}

	p := startedMount(mnts[0])
	if s := vwSha256sum(t, filepath.Join(mnts[0], "fixture.raw")); s != fx.Manifest.SHA256.Disk {
		t.Fatalf("mounted disk sha256 %s, manifest %s", s, fx.Manifest.SHA256.Disk)
	}
	if code := p.signal(t, os.Interrupt); code != exitInterrupted || vwMounted(t, mnts[0]) {
		t.Fatalf("SIGINT: exit %d (want %d), still mounted %v:\n%s", code, exitInterrupted, vwMounted(t, mnts[0]), p.stderr)
	}

	p = startedMount(mnts[1])
	// Right after mounting, go-fuse's own start-up may still hold a file
	// of the mount for a moment (EBUSY): retry as a user would.
	for i := 0; ; i++ {
		out, err := exec.Command(fusermount, "-u", mnts[1]).CombinedOutput()
		if err == nil {
			break
		}
		if i == 40 || !strings.Contains(string(out), "busy") {
			t.Fatalf("fusermount3 -u: %v: %s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code := p.wait(t); code != 0 {
		t.Fatalf("fusermount3 -u: exit %d, want 0:\n%s", code, p.stderr)
	}

	p = startedMount(mnts[2])
	p.cmd.Process.Kill()
	p.wait(t)
	if _, err := os.ReadDir(mnts[2]); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("after SIGKILL the mount point answers %v, want ENOTCONN (stale)", err)
	}
	code, _, stderr := runCLI(t, append([]string{"mount", vmDir, mnts[2]}, keys...)...)
	if code != exitFailure || !strings.Contains(stderr, "fusermount3 -u "+mnts[2]) {
		t.Fatalf("mount on a stale folder: exit %d (want %d) and the command that clears it: %s", code, exitFailure, stderr)
	}
	vwRunPeer(t, fusermount, "-u", mnts[2])

	s := vwStartSubprocess(t, append([]string{"serve", vmDir}, keys...)...)
	re := regexp.MustCompile(`nbd\+unix:///fixture\.raw\?socket=(\S+)`)
	var sock string
	vwWaitFor(t, "serve", s.running, s.stderr, func() bool {
		m := re.FindStringSubmatch(s.stderr.String())
		if m != nil {
			sock = m[1]
		}
		return m != nil
	})
	if !strings.HasPrefix(sock, os.Getenv("TMPDIR")+"/vmcrypt-nbd-") {
		t.Fatalf("socket %s is not in a new folder of TMPDIR", sock)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v, mode %v", sock, err, st.Mode())
	}
	if st, err := os.Stat(filepath.Dir(sock)); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("socket folder: %v, mode %v", err, st.Mode())
	}
	got := filepath.Join(t.TempDir(), "d.raw")
	vwRunPeer(t, vwPeer(t, "nbdcopy", "libnbd-bin"), "nbd+unix:///fixture.raw?socket="+sock, got)
	if vwFileSHA(t, got) != fx.Manifest.SHA256.Disk {
		t.Fatal("nbdcopy from the serve process: wrong sha256")
	}
	if code := s.signal(t, syscall.SIGTERM); code != exitInterrupted {
		t.Fatalf("SIGTERM: exit %d, want %d:\n%s", code, exitInterrupted, s.stderr)
	}
	if _, err := os.Lstat(filepath.Dir(sock)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket folder left behind: %v", err)
	}
}

// TestServeTCPAndHostileClients: --listen on loopback serves nbd://;
// --listen-any prints a warning; 100 connections opened and dropped
// (some with garbage) and a client that disconnects mid-read do not stop
// the server, a full copy still gives the right sha256, and once stopped
// no goroutine of the server is left.
func TestServeTCPAndHostileClients(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicSparse, Size: 8 << 20, Seed: 1315})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	work := t.TempDir()
	vwGuardNoWrites(t, fx.Dir)
	before := runtime.NumGoroutine()

	for _, any := range []bool{false, true} {
		args := append([]string{"serve", vmDir, "--listen", "127.0.0.1:0"}, recKeyArgs(fx)...)
		if any {
			args = append([]string{"serve", vmDir, "--listen", "0.0.0.0:0", "--listen-any"}, recKeyArgs(fx)...)
		}
		r := vwStartCLI(t, args...)
		re := regexp.MustCompile(`nbd://[^/ ]+:(\d+)/fixture\.raw`)
		var port string
		vwWaitFor(t, "listening", r.running, r.stderr, func() bool {
			m := re.FindStringSubmatch(r.stderr.String())
			if m != nil {
				port = m[1]
			}
			return m != nil
		})
		if any != strings.Contains(r.stderr.String(), "WARNING") {
			t.Fatalf("--listen-any %v, warning printed %v:\n%s", any, !any, r.stderr)
		}
		addr := "127.0.0.1:" + port
		for i := range 100 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if i%3 == 0 {
				c.Write(bytes.Repeat([]byte{0xff}, 200))
			}
			c.Close()
		}
		// A client that starts a copy and goes away mid-read.
		cp := exec.Command(vwPeer(t, "nbdcopy", "libnbd-bin"), "--requests=64", "nbd://"+addr+"/fixture.raw", filepath.Join(work, "partial.raw"))
		if err := cp.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		cp.Process.Kill()
		cp.Wait()
		got := filepath.Join(work, "tcp.raw")
		vwRunPeer(t, vwPeer(t, "nbdcopy", "libnbd-bin"), "nbd://"+addr+"/fixture.raw", got)
		if vwFileSHA(t, got) != fx.Manifest.SHA256.Disk {
			t.Fatal("copy over TCP after hostile clients: wrong sha256")
		}
		vwStopServe(t, r)
	}
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the servers stopped, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
	}
}
