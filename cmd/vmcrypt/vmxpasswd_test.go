package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The peer that decrypts Workstation data files with the VM's password
// (docs/formats.md §9): heeeyaaaa/vmem-decrypt, run by Debian's python3 (it
// needs python3-cryptography).
const (
	vmemDecryptDefault = "../../../shared/peers/vmem-decrypt/vmem_decrypt.py"
	peerPython         = "/usr/bin/python3"
)

// vmemDecrypt runs the peer; it fails the test when the peer is missing.
func vmemDecrypt(t *testing.T, args ...string) (ok bool, out string) {
	t.Helper()
	script := os.Getenv("VMCRYPT_VMEM_DECRYPT")
	if script == "" {
		script = vmemDecryptDefault
	}
	if _, err := os.Stat(script); err != nil {
		t.Fatalf("peer vmem_decrypt.py is needed (set VMCRYPT_VMEM_DECRYPT): %v", err)
	}
	if _, err := os.Stat(peerPython); err != nil {
		t.Fatalf("peer needs %s with python3-cryptography: %v", peerPython, err)
	}
	cmd := exec.Command(peerPython, append([]string{script}, args...)...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		if strings.Contains(string(b), "No module named 'cryptography'") {
			t.Fatalf("peer needs python3-cryptography: %s", b)
		}
		return false, string(b)
	}
	return true, string(b)
}

// passFixture generates a passphrase fixture and returns the VM folder,
// the manifest and the passphrase file.
func passFixture(t *testing.T, r fixtures.Recipe) (string, *fixtures.Manifest, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "fx")
	fx, err := fixtures.Generate(out, r)
	if err != nil {
		t.Fatal(err)
	}
	fx.Close()
	m := fx.Manifest
	sec := ""
	if m.Secrets.PassphraseFile != "" {
		sec = filepath.Join(out, m.Secrets.PassphraseFile)
	}
	return filepath.Join(out, fixtures.VMDir), m, sec
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// folderSums hashes every file of a folder.
func folderSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range dirNames(t, dir) {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = sha(b)
	}
	return out
}

func sameSums(t *testing.T, what string, a, b map[string]string) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d files, then %d: %v / %v", what, len(a), len(b), a, b)
	}
	for n, s := range a {
		if b[n] != s {
			t.Fatalf("%s: %s changed", what, n)
		}
	}
}

// decryptVMX runs `vmx decrypt` and returns the exit code and the output.
func decryptVMX(t *testing.T, path, passFile string) (int, []byte) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "dec.vmx")
	code, _, stderr := runCLI(t, "vmx", "decrypt", path, "-o", out, "--passphrase-file", passFile)
	if code != 0 {
		return code, []byte(stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return 0, b
}

func parseVMX(t *testing.T, path string) *vmx.File {
	t.Helper()
	f, err := vmx.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// onlyKeySafeChanged: the two VMX files have the same lines byte for byte
// except encryption.keySafe, which differs.
func onlyKeySafeChanged(t *testing.T, a, b *vmx.File) {
	t.Helper()
	if len(a.Lines) != len(b.Lines) || a.BOM != b.BOM {
		t.Fatalf("%d lines -> %d", len(a.Lines), len(b.Lines))
	}
	changed := 0
	for i := range a.Lines {
		x, y := a.Lines[i], b.Lines[i]
		if x.Raw == y.Raw && x.EOL == y.EOL {
			if x.Kind == vmx.Setting && strings.EqualFold(x.Key, vmx.KeyKeySafe) {
				t.Fatal("the key safe did not change")
			}
			continue
		}
		if !strings.EqualFold(x.Key, vmx.KeyKeySafe) || x.Key != y.Key || x.EOL != y.EOL {
			t.Fatalf("line %d changed: %q", i+1, x.Key)
		}
		changed++
	}
	if changed != 1 {
		t.Fatalf("%d lines changed", changed)
	}
}

func hashLine(t *testing.T, path string) string {
	t.Helper()
	code, out, stderr := runCLI(t, "vmx", "hash", path)
	if code != 0 {
		t.Fatalf("vmx hash: exit %d: %s", code, stderr)
	}
	return out
}

// After passwd: the old passphrase gives exit 3 and the new one opens; the
// encryption.data line, the disks' data and the data files are byte for
// byte the same; each disk's encryptionKeys opens with the new passphrase
// only; the hashcat line changes; the peer vmem-decrypt decrypts the .nvram
// and the .vmsn with the new passphrase to the plaintexts the fixture
// recorded, and refuses the old one.
func TestVMXPasswdFixture(t *testing.T) {
	noEnvPassphrase(t)
	vm, m, oldFile := passFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Cipher: fixtures.CipherAES256,
		Disk: vmdk.SubformatMonolithicSparse, Size: 1 << 20, Snapshot: true, Memory: true, VTPM: true, Seed: 1501})
	in := filepath.Join(vm, "fixture.vmx")
	newFile := passFile(t, "n\u00e9w passphrase")
	before := folderSums(t, vm)
	for _, n := range []string{"fixture.nvram", "fixture-Snapshot1.vmsn", "fixture.vmsd", "fixture.vswp", "fixture-000001.vmdk"} {
		if before[n] == "" {
			t.Fatalf("fixture lacks %s", n)
		}
	}
	oldVMX := parseVMX(t, in)
	hash1 := hashLine(t, in)
	oldPass, _ := os.ReadFile(oldFile)
	oldPass = bytes.TrimSuffix(oldPass, []byte("\n"))
	if ok, out := vmemDecrypt(t, "--vmx", in, "--password", string(oldPass), filepath.Join(vm, "fixture.nvram"), filepath.Join(t.TempDir(), "x")); !ok {
		t.Fatalf("the peer does not read the fixture before the change: %s", out)
	}
	diskBytes := map[string][]byte{}
	for _, n := range []string{"fixture.vmdk", "fixture-000001.vmdk"} {
		diskBytes[n], _ = os.ReadFile(filepath.Join(vm, n))
	}

	code, stdout, stderr := runCLI(t, "vmx", "passwd", in, "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", newFile)
	if code != 0 {
		t.Fatalf("passwd: exit %d: %s", code, stderr)
	}
	if strings.Count(stdout, "encryptionKeys rewrapped") != 2 {
		t.Fatalf("the two disk links are not listed as rewrapped:\n%s", stdout)
	}
	after := folderSums(t, vm)
	for _, n := range []string{"fixture.vmx.vmcrypt-bak", "fixture.vmdk.descriptor.vmcrypt-bak", "fixture-000001.vmdk.descriptor.vmcrypt-bak"} {
		if after[n] == "" {
			t.Fatalf("no backup %s: %v", n, after)
		}
		delete(after, n)
	}
	for _, n := range []string{"fixture.nvram", "fixture-Snapshot1.vmsn", "fixture.vmsd", "fixture.vswp"} {
		if after[n] != before[n] {
			t.Fatalf("data file %s changed", n)
		}
	}
	if len(after) != len(before) {
		t.Fatalf("files %v, were %v", after, before)
	}
	if b, _ := os.ReadFile(filepath.Join(vm, "fixture.vmx.vmcrypt-bak")); sha(b) != before["fixture.vmx"] {
		t.Fatal("the backup is not the original")
	}
	// The VMX: only the key safe changed; old 3, new opens to the same settings.
	onlyKeySafeChanged(t, oldVMX, parseVMX(t, in))
	if code, _ := decryptVMX(t, in, oldFile); code != exitWrongKey {
		t.Fatalf("old passphrase: exit %d, want %d", code, exitWrongKey)
	}
	code, dec := decryptVMX(t, in, newFile)
	if code != 0 {
		t.Fatalf("new passphrase: exit %d: %s", code, dec)
	}
	if _, body, _ := bytes.Cut(dec, []byte("vtpm.present = \"TRUE\"\n")); sha(body) != m.SHA256.VMXBody {
		t.Fatal("decrypted settings differ from the fixture's")
	}
	if hashLine(t, in) == hash1 {
		t.Fatal("the hashcat line did not change")
	}
	// The disks: the same bytes outside the descriptor area, keys that
	// open with the new passphrase only (unlock opens every link).
	for n, old := range diskBytes {
		cur, _ := os.ReadFile(filepath.Join(vm, n))
		off, size, emb, err := vmdk.DescriptorArea(bytes.NewReader(cur), int64(len(cur)), n)
		if err != nil || !emb || len(cur) != len(old) || !bytes.Equal(cur[:off], old[:off]) || !bytes.Equal(cur[off+size:], old[off+size:]) {
			t.Fatalf("%s: bytes outside its descriptor changed (%v)", n, err)
		}
	}
	if code, _, stderr := runCLI(t, "unlock", in, "--passphrase-file", newFile); code != 0 {
		t.Fatalf("unlock with the new passphrase: exit %d: %s", code, stderr)
	}
	// The peer, with the new passphrase, on the .nvram and the .vmsn.
	newPass := "n\u00e9w passphrase"
	for n, want := range map[string]string{"fixture.nvram": m.SHA256.NVRAM, "fixture-Snapshot1.vmsn": m.SHA256.VMSN} {
		out := filepath.Join(t.TempDir(), n+".plain")
		if ok, msg := vmemDecrypt(t, "--vmx", in, "--password", newPass, filepath.Join(vm, n), out); !ok {
			t.Fatalf("peer on %s with the new passphrase: %s", n, msg)
		}
		b, _ := os.ReadFile(out)
		if sha(b) != want {
			t.Fatalf("peer decrypts %s to other bytes", n)
		}
		if ok, _ := vmemDecrypt(t, "--vmx", in, "--password", string(oldPass), filepath.Join(vm, n), out+"2"); ok {
			t.Fatalf("peer opens %s with the old passphrase", n)
		}
	}
}

// A split disk: its descriptor file is rewrapped (backup NAME.vmdk.vmcrypt-bak),
// its extent is not touched.
func TestVMXPasswdDescriptorFile(t *testing.T) {
	noEnvPassphrase(t)
	vm, _, oldFile := passFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatTwoGbMaxExtentSparse, Size: 1 << 20, Seed: 1502})
	in := filepath.Join(vm, "fixture.vmx")
	before := folderSums(t, vm)
	oldDesc, _ := os.ReadFile(filepath.Join(vm, "fixture.vmdk"))
	newFile := passFile(t, "new")
	if code, _, stderr := runCLI(t, "vmx", "passwd", in, "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", newFile, "--rounds", "20000"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	after := folderSums(t, vm)
	if after["fixture.vmdk.vmcrypt-bak"] != before["fixture.vmdk"] || after["fixture.vmx.vmcrypt-bak"] != before["fixture.vmx"] {
		t.Fatal("backups missing or wrong")
	}
	if after["fixture-s001.vmdk"] != before["fixture-s001.vmdk"] || after["fixture.nvram"] != before["fixture.nvram"] || after["fixture.vswp"] != before["fixture.vswp"] {
		t.Fatal("extent or data file changed")
	}
	newDesc, _ := os.ReadFile(filepath.Join(vm, "fixture.vmdk"))
	ol, nl := strings.Split(string(oldDesc), "\n"), strings.Split(string(newDesc), "\n")
	if len(ol) != len(nl) {
		t.Fatal("descriptor line count changed")
	}
	for i := range ol {
		if ol[i] != nl[i] && !strings.HasPrefix(ol[i], "encryptionKeys=") {
			t.Fatalf("descriptor line %d changed", i+1)
		}
	}
	if !strings.Contains(string(newDesc), "rounds%3d20000") {
		t.Fatal("--rounds not applied to the disk's pair")
	}
	if code, _, _ := runCLI(t, "unlock", in, "--passphrase-file", newFile); code != 0 {
		t.Fatalf("unlock with the new passphrase: exit %d", code)
	}
	if code, _, _ := runCLI(t, "unlock", in, "--passphrase-file", oldFile); code != exitWrongKey {
		t.Fatalf("unlock with the old passphrase: exit %d", code)
	}
}

// The real Workstation VMX takes a new passphrase (-o: the input is not
// touched); its settings decrypt unchanged and the peer recovers the same
// dataFileKey from it with the new passphrase.
func TestVMXPasswdWorkstationVector(t *testing.T) {
	noEnvPassphrase(t)
	src, err := os.ReadFile("testdata/vmxedit/workstation-encrypted.vmx")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "Encrypted VM.vmx")
	os.WriteFile(in, src, 0o644)
	out := filepath.Join(t.TempDir(), "new.vmx")
	oldFile, newFile := passFile(t, "password"), passFile(t, "a much better passphrase")
	code, stdout, stderr := runCLI(t, "vmx", "passwd", in, "-o", out, "--passphrase-file", oldFile, "--new-passphrase-file", newFile)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "Virtual Disk.vmdk: not found") {
		t.Fatalf("the missing disk is not listed:\n%s", stdout)
	}
	if b, _ := os.ReadFile(in); !bytes.Equal(b, src) || len(dirNames(t, dir)) != 1 {
		t.Fatal("the input or its folder changed")
	}
	onlyKeySafeChanged(t, parseVMX(t, in), parseVMX(t, out))
	code, dec := decryptVMX(t, out, newFile)
	if code != 0 {
		t.Fatalf("new passphrase: exit %d", code)
	}
	_, orig := decryptVMX(t, in, oldFile)
	if !bytes.Equal(dec, orig) {
		t.Fatal("decrypted settings changed")
	}
	if sha(bytes.TrimPrefix(dec, []byte(".encoding = \"UTF-8\"\ndisplayName = \"Encrypted VM\"\n"))) != "750c6db6913bfc255c6510e50629dadbb9df61f8b55701b3668898cac4705e73" {
		t.Fatal("settings differ from the documented sha256")
	}
	if code, _ := decryptVMX(t, out, oldFile); code != exitWrongKey {
		t.Fatalf("old passphrase: exit %d", code)
	}
	dfk, _ := base64.StdEncoding.DecodeString("Sz2MzrpfNC4qr0T1oAb93ggFb86IrHWSQTel4Z6Fyds=")
	ok, msg := vmemDecrypt(t, "--vmx", out, "--password", "a much better passphrase", "--print-key")
	if !ok || !strings.Contains(msg, hex.EncodeToString(dfk)) {
		t.Fatalf("peer does not recover the dataFileKey with the new passphrase: %s", msg)
	}
	if ok, _ := vmemDecrypt(t, "--vmx", out, "--password", "password", "--print-key"); ok {
		t.Fatal("peer recovers the key with the old passphrase")
	}
}

// Bad input: each refusal has its exit code and changes nothing.
func TestVMXPasswdRefusals(t *testing.T) {
	noEnvPassphrase(t)
	vm, _, oldFile := passFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicSparse, Size: 1 << 20, Seed: 1503})
	in := filepath.Join(vm, "fixture.vmx")
	kvm, _, _ := passFixture(t, fixtures.Recipe{Provider: fixtures.ProviderKMS, Disk: vmdk.SubformatMonolithicSparse, Size: 1 << 20, Seed: 1504})
	kin := filepath.Join(kvm, "fixture.vmx")
	newFile := passFile(t, "new")
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	out := filepath.Join(t.TempDir(), "out.vmx")
	before, kbefore := folderSums(t, vm), folderSums(t, kvm)
	for _, c := range []struct {
		name string
		args []string
		want int
	}{
		{"wrong old passphrase", []string{"vmx", "passwd", in, "--in-place", "--passphrase-file", passFile(t, "wrong"), "--new-passphrase-file", newFile}, exitWrongKey},
		{"empty new passphrase", []string{"vmx", "passwd", in, "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", empty}, exitUsage},
		{"key-provider VM", []string{"vmx", "passwd", kin, "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", newFile}, exitUsage},
		{"key-provider VM, no passphrase at all", []string{"vmx", "passwd", kin, "--in-place"}, exitUsage},
		{"-o with disks that must change too", []string{"vmx", "passwd", in, "-o", out, "--passphrase-file", oldFile, "--new-passphrase-file", newFile}, exitUsage},
		{"no output", []string{"vmx", "passwd", in, "--passphrase-file", oldFile, "--new-passphrase-file", newFile}, exitUsage},
		{"-o and --in-place", []string{"vmx", "passwd", in, "-o", out, "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", newFile}, exitUsage},
		{"no new passphrase and no terminal", []string{"vmx", "passwd", in, "--in-place", "--passphrase-file", oldFile}, exitUsage},
		{"no old passphrase and no terminal", []string{"vmx", "passwd", in, "--in-place", "--new-passphrase-file", newFile}, exitUsage},
		{"rounds above the cap", []string{"vmx", "passwd", in, "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", newFile, "--rounds", "10000001"}, exitUsage},
		{"-o over the input", []string{"vmx", "passwd", in, "-o", in, "--force", "--passphrase-file", oldFile, "--new-passphrase-file", newFile}, exitUsage},
	} {
		if code, _, stderr := runCLI(t, c.args...); code != c.want {
			t.Errorf("%s: exit %d, want %d: %s", c.name, code, c.want, stderr)
		}
		sameSums(t, c.name, before, folderSums(t, vm))
		sameSums(t, c.name, kbefore, folderSums(t, kvm))
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%s: wrote %s", c.name, out)
		}
	}
	// A backup left by an earlier run is not replaced without --force.
	bak := in + ".vmcrypt-bak"
	os.WriteFile(bak, []byte("earlier"), 0o600)
	if code, _, _ := runCLI(t, "vmx", "passwd", in, "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", newFile); code != exitUsage {
		t.Fatalf("existing backup: exit %d", code)
	}
	if b, _ := os.ReadFile(bak); string(b) != "earlier" {
		t.Fatal("backup replaced")
	}
	os.Remove(bak)
	sameSums(t, "existing backup", before, folderSums(t, vm))
	// A read-only VMX is not changed in place.
	os.Chmod(in, 0o444)
	if code, _, _ := runCLI(t, "vmx", "passwd", in, "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", newFile); code != exitUsage {
		t.Fatalf("read-only VMX: exit %d", code)
	}
	os.Chmod(in, 0o644)
	sameSums(t, "read-only", before, folderSums(t, vm))
	// --allow-empty: an empty passphrase, which then opens the VM.
	if code, _, stderr := runCLI(t, "vmx", "passwd", in, "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", empty, "--allow-empty"); code != 0 {
		t.Fatalf("--allow-empty: exit %d: %s", code, stderr)
	}
	if code, _ := decryptVMX(t, in, empty); code != 0 {
		t.Fatalf("empty passphrase does not open: exit %d", code)
	}
	// and --force replaces the backup of that run.
	if code, _, stderr := runCLI(t, "vmx", "passwd", in, "--in-place", "--force", "--passphrase-file", empty, "--new-passphrase-file", newFile); code != 0 {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	if code, _ := decryptVMX(t, in, newFile); code != 0 {
		t.Fatalf("after --force: exit %d", code)
	}
}

// Only descriptors are read and written: a snapshot whose parentCID does
// not match its parent (which recover refuses without a flag) is rewrapped
// like any other chain.
func TestVMXPasswdCIDMismatch(t *testing.T) {
	noEnvPassphrase(t)
	vm, _, oldFile := passFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicSparse, Size: 1 << 20, Snapshot: true, Seed: 1508})
	delta := filepath.Join(vm, "fixture-000001.vmdk")
	b, _ := os.ReadFile(delta)
	i := bytes.Index(b, []byte("parentCID="))
	copy(b[i+len("parentCID="):], "0badc1d0")
	os.WriteFile(delta, b, 0o644)
	if code, _, _ := runCLI(t, "unlock", filepath.Join(vm, "fixture.vmx"), "--passphrase-file", oldFile); code != exitCorrupt {
		t.Fatalf("the chain should be refused by unlock: exit %d", code)
	}
	newFile := passFile(t, "new")
	if code, _, stderr := runCLI(t, "vmx", "passwd", filepath.Join(vm, "fixture.vmx"), "--in-place", "--passphrase-file", oldFile, "--new-passphrase-file", newFile); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, n := range []string{"fixture.vmdk", "fixture-000001.vmdk"} {
		d, err := vmdk.ReadDescriptor(filepath.Join(vm, n))
		if err != nil {
			t.Fatal(err)
		}
		l, err := keysafe.Parse(d.EncryptionKeys)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keysafe.UnlockPhrase(l.Pairs()[0], []byte("new")); err != nil {
			t.Fatalf("%s: %v", n, err)
		}
	}
}
