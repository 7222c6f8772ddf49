package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/*.golden")

// TestInspectTextGolden pins the readable report of the real Workstation
// VMX, without and with the passphrase.
func TestInspectTextGolden(t *testing.T) {
	noEnvPassphrase(t)
	in := vmFixture(t, "workstation-encrypted.vmx", nil)
	dir := filepath.Dir(in)
	for _, c := range []struct {
		golden string
		args   []string
	}{
		{"inspect-workstation.golden", []string{"inspect", in}},
		{"inspect-workstation-key.golden", []string{"inspect", in, "--passphrase-file", passFile(t, "password")}},
	} {
		code, out, e := runCLI(t, c.args...)
		if code != 0 {
			t.Fatal(e)
		}
		out = strings.ReplaceAll(out, dir, "VMDIR")
		path := filepath.Join("testdata", c.golden)
		if *updateGolden {
			os.MkdirAll("testdata", 0o755)
			os.WriteFile(path, []byte(out), 0o644)
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if out != string(want) {
			t.Errorf("%s differs:\n%s", c.golden, out)
		}
	}
}

func TestInspectPlainVM(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.vmx"), []byte(".encoding = \"UTF-8\"\r\nfirmware = \"bios\"\r\nuefi.secureBoot.enabled = \"TRUE\"\r\nvtpm.present = \"TRUE\"\r\nscsi0:0.fileName = \"p.vmdk\"\r\nscsi0:0.present = \"TRUE\"\r\n"), 0o644)
	code, out, e := runCLI(t, "inspect", dir, "--json")
	if code != 0 {
		t.Fatal(e)
	}
	r := jsonReport(t, out)
	if r.Encrypted || !r.Posture.SettingsRead || r.Settings == nil || len(r.Settings.Disks) != 1 || r.Settings.Disks[0].Exists {
		t.Fatalf("%s", out)
	}
	if len(r.Posture.Conflicts) != 2 { // vTPM without encryption, Secure Boot without EFI
		t.Fatalf("conflicts %q", r.Posture.Conflicts)
	}
	// A plain VM has nothing to unlock: unsupported input, as for every
	// command that needs an encrypted VM.
	if code, _, _ := runCLI(t, "unlock", dir); code != exitCorrupt {
		t.Fatalf("unlock of a plain VM: exit %d, want %d", code, exitCorrupt)
	}
}

// fqidVM writes a VMX locked by a key provider (MODEL §7) and a KEK file.
func fqidVM(t *testing.T) (vmxPath, kekPath string, kek []byte) {
	kek = make([]byte, 32)
	rand.Read(kek)
	plain, _ := vmx.ParseBytes([]byte(".encoding = \"UTF-8\"\ndisplayName = \"f\"\nfirmware = \"efi\"\nmigrate.encryptionMode = \"required\"\n"))
	lock := func(k *keysafe.Key) (*keysafe.Locator, error) {
		p, err := keysafe.LockFQID(k, "KMS", "a4e7494f-da55-4917-9d90-560c5078866b", kek, rand.Reader)
		return keysafe.NewList(p), err
	}
	enc, _, err := vmx.Encrypt(plain, lock, vmx.EncryptOptions{Cipher: keysafe.CipherXTSAES256}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	vmxPath = filepath.Join(dir, "f.vmx")
	os.WriteFile(vmxPath, enc.Bytes(), 0o644)
	kekPath = filepath.Join(t.TempDir(), "kek.json")
	os.WriteFile(kekPath, []byte(`{"provider": "KMS", "keyId": "a4e7494f-da55-4917-9d90-560c5078866b", "key": "`+base64.StdEncoding.EncodeToString(kek)+`"}`), 0o600)
	return vmxPath, kekPath, kek
}

func TestKeyProviderVMCLI(t *testing.T) {
	noEnvPassphrase(t)
	in, kekPath, kek := fqidVM(t)
	code, out, e := runCLI(t, "unlock", in, "--kek", kekPath)
	if code != 0 || !strings.Contains(out, "fqid KMS/a4e7494f") || !strings.Contains(out, "modelled") {
		t.Fatalf("unlock --kek: %d %s %s", code, out, e)
	}
	// No key at all: exit 4 naming the provider and key id (no prompt).
	code, _, e = runCLI(t, "unlock", in)
	if code != exitKeyNotFound || !strings.Contains(e, "a4e7494f-da55-4917-9d90-560c5078866b") {
		t.Fatalf("no key: exit %d %s", code, e)
	}
	// A passphrase cannot open a key-provider VM: still "not supplied".
	if code, _, _ := runCLI(t, "unlock", in, "--passphrase-file", passFile(t, "x")); code != exitKeyNotFound {
		t.Fatalf("passphrase for a KMS VM: exit %d", code)
	}
	// The right key id with another key: wrong key.
	bad := bytes.Clone(kek)
	bad[5] ^= 1
	badPath := filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(badPath, []byte(`[{"provider": "KMS", "keyId": "a4e7494f-da55-4917-9d90-560c5078866b", "key": "`+base64.StdEncoding.EncodeToString(bad)+`"}]`), 0o600)
	if code, _, _ := runCLI(t, "unlock", in, "--kek", badPath); code != exitWrongKey {
		t.Fatalf("wrong KEK: exit %d", code)
	}
	// Both: the right one wins whatever the order.
	if code, _, _ := runCLI(t, "unlock", in, "--kek", badPath, "--kek", kekPath); code != 0 {
		t.Fatalf("wrong then right KEK: exit %d", code)
	}
	code, out, _ = runCLI(t, "inspect", in, "--json", "--kek", kekPath)
	r := jsonReport(t, out)
	if code != 0 || r.KeySafe[0].Type != "fqid" || r.KeySafe[0].Provider != "KMS" || r.Settings == nil ||
		r.Posture.VMotionEncryption != "required" || len(r.Posture.Conflicts) != 0 || len(r.Notes) == 0 {
		t.Fatalf("inspect: %d %s", code, out)
	}
	if code, _, _ := runCLI(t, "vmx", "hash", in); code != exitCorrupt {
		t.Fatalf("hash of a KMS VM: exit %d", code)
	}
	out2 := filepath.Join(filepath.Dir(in), "dec.vmx")
	if code, _, _ := runCLI(t, "vmx", "decrypt", in, "-o", out2, "--kek", kekPath); code != 0 {
		t.Fatalf("decrypt --kek after the VMX: exit %d", code)
	}
	if _, err := os.Stat(out2); errors.Is(err, os.ErrNotExist) {
		t.Fatal("no output")
	}
}

// unlock also opens the encryptionKeys of the disks the settings name,
// with the same passphrase (its own salt: MODEL §8).
func TestUnlockDisks(t *testing.T) {
	noEnvPassphrase(t)
	diskSafe := func(pass string) string {
		k := &keysafe.Key{Cipher: keysafe.CipherXTSAES256, Bytes: make([]byte, 64)}
		rand.Read(k.Bytes)
		p, err := keysafe.LockPhrase(k, []byte(pass), keysafe.CipherAES256, 1000, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return keysafe.NewList(p).String()
	}
	for _, c := range []struct {
		name, encKeys string
		want          int
	}{
		{"disk key opens", diskSafe("password"), 0},
		{"disk locked by another passphrase", diskSafe("other"), exitWrongKey},
		{"corrupt encryptionKeys", "vmware:key/list/(pair/(", exitCorrupt},
		{"plain disk", "", 0},
		// ddb.iofilters says encrypted, but there is no encryptionKeys:
		// corrupt, as recover and nkp verify say (unlock once skipped it).
		{"marked encrypted without keys", "-", exitCorrupt},
	} {
		in := vmFixture(t, "workstation-encrypted.vmx", nil)
		desc := "# Disk DescriptorFile\nversion=1\n"
		if c.encKeys != "" && c.encKeys != "-" {
			desc += "encryptionKeys = \"" + c.encKeys + "\"\n"
		}
		desc += "createType=\"monolithicFlat\"\nRW 8 FLAT \"Virtual Disk-flat.vmdk\" 0\n"
		if c.encKeys != "" {
			desc += "ddb.iofilters = \"vmwarevmcrypt\"\n"
		}
		os.WriteFile(filepath.Join(filepath.Dir(in), "Virtual Disk.vmdk"), []byte(desc), 0o644)
		os.WriteFile(filepath.Join(filepath.Dir(in), "Virtual Disk-flat.vmdk"), make([]byte, 8*512), 0o644)
		code, out, e := runCLI(t, "unlock", in, "--passphrase-file", passFile(t, "password"))
		if code != c.want {
			t.Errorf("%s: exit %d, want %d: %s %s", c.name, code, c.want, out, e)
		}
		if c.want == 0 && c.encKeys != "" && !strings.Contains(out, "XTS-AES-256 key opened by passphrase") {
			t.Errorf("%s: %s", c.name, out)
		}
	}
}

// A phrase pair refused for its rounds is still listed with them, and
// unlocking it is refused at once (exit 5).
func TestInspectRoundsAboveCap(t *testing.T) {
	b, err := os.ReadFile("../../vmx/testdata/vectors/workstation-encrypted.vmx")
	if err != nil {
		t.Fatal(err)
	}
	hostile := bytes.Replace(b, []byte("rounds%3d10000%3a"), []byte("rounds%3d10000001%3a"), 1)
	if bytes.Equal(hostile, b) {
		t.Fatal("rounds not found in the vector")
	}
	p := filepath.Join(t.TempDir(), "vm.vmx")
	if err := os.WriteFile(p, hostile, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, "inspect", p, "--json")
	if code != exitOK || !strings.Contains(out, `"rounds": 10000001`) || !strings.Contains(out, "above the cap") {
		t.Fatalf("inspect: exit %d, %s %s", code, out, stderr)
	}
	t.Setenv(envPassphrase, "password")
	if code, _, stderr := runCLI(t, "unlock", p); code != exitCorrupt || !strings.Contains(stderr, "above the cap") {
		t.Fatalf("unlock: exit %d, %s", code, stderr)
	}
}

// unlock proves the key of every link of a disk's chain, not only the top
// one: a snapshot whose base is locked by another passphrase fails (3),
// as recover would.
func TestUnlockWholeChain(t *testing.T) {
	noEnvPassphrase(t)
	dir := t.TempDir()
	fx, err := fixtures.Generate(filepath.Join(dir, "fx"), fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicFlat, Snapshot: true, Size: fixtures.MinDiskSize, Seed: 21})
	if err != nil {
		t.Fatal(err)
	}
	vm := filepath.Join(fx.Dir, fixtures.VMDir)
	pass := filepath.Join(fx.Dir, fixtures.SecretsDir, "passphrase.txt")
	if code, out, stderr := runCLI(t, "unlock", vm, "--passphrase-file", pass); code != exitOK || strings.Count(out, "key opened by passphrase") != 2 {
		t.Fatalf("both links: exit %d\n%s%s", code, out, stderr)
	}
	base := filepath.Join(vm, fixtures.DefaultName+".vmdk")
	b, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	d, err := vmdk.ParseDescriptor(b, base)
	if err != nil {
		t.Fatal(err)
	}
	k := &keysafe.Key{Cipher: keysafe.CipherXTSAES256, Bytes: make([]byte, 64)}
	p, err := keysafe.LockPhrase(k, []byte("another passphrase"), keysafe.CipherAES256, 1000, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d.EncryptionKeys = keysafe.NewList(p).String()
	nb, err := d.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(base, nb, 0o644)
	if code, out, stderr := runCLI(t, "unlock", vm, "--passphrase-file", pass); code != exitWrongKey || !strings.Contains(stderr, fixtures.DefaultName+".vmdk") {
		t.Fatalf("base locked by another passphrase: exit %d\n%s%s", code, out, stderr)
	}
}
