package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// nkpLock returns a lock function wrapping keys under a fresh KEK whose
// NKP key id is made with kdk (damage, if set, alters the key id bytes).
func nkpLocker(t *testing.T, kdk *nkp.KDK, damage func([]byte)) func(*keysafe.Key) (*keysafe.Locator, error) {
	return func(k *keysafe.Key) (*keysafe.Locator, error) {
		kek := make([]byte, 32)
		rand.Read(kek)
		kid, err := kdk.Wrap(kek)
		if err != nil {
			t.Fatal(err)
		}
		id := kid.String()
		if damage != nil {
			b := kid.Bytes()
			damage(b)
			bad, err := nkp.ParseKeyID(b)
			if err != nil {
				t.Fatal(err)
			}
			id = bad.String()
		}
		p, err := keysafe.LockFQID(k, "local", id, kek, rand.Reader)
		if err != nil {
			return nil, err
		}
		return keysafe.NewList(p), nil
	}
}

// nkpMakeVM writes an encrypted VM (VMX + one 1 MiB disk) whose VMX key
// safe is made by vmLock and whose disk encryptionKeys by diskLock. The
// disk data is not encrypted: verify only checks keys.
func nkpMakeVM(t *testing.T, dir, name string, vmLock, diskLock func(*keysafe.Key) (*keysafe.Locator, error)) string {
	t.Helper()
	vmDir := filepath.Join(dir, name)
	if err := os.MkdirAll(vmDir, 0o700); err != nil {
		t.Fatal(err)
	}
	diskKey := &keysafe.Key{Cipher: keysafe.CipherXTSAES256, Bytes: make([]byte, 64)}
	rand.Read(diskKey.Bytes)
	dl, err := diskLock(diskKey)
	if err != nil {
		t.Fatal(err)
	}
	const size = 1 << 20
	if err := vmdk.Write(context.Background(), filepath.Join(vmDir, name+".vmdk"), bytes.NewReader(make([]byte, size)), size, nil,
		&vmdk.WriteOptions{EncryptionKeys: dl.String(), IOFilters: "vmwarevmcrypt"}); err != nil {
		t.Fatal(err)
	}
	plain, err := vmx.ParseBytes([]byte(".encoding = \"UTF-8\"\ndisplayName = \"" + name + "\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\n" +
		"scsi0.present = \"TRUE\"\nscsi0:0.present = \"TRUE\"\nscsi0:0.fileName = \"" + name + ".vmdk\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	enc, _, err := vmx.Encrypt(plain, vmLock, vmx.EncryptOptions{Cipher: keysafe.CipherXTSAES256}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(vmDir, name+".vmx")
	if err := os.WriteFile(p, enc.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type nkpVerifyOut struct {
	Backup string          `json:"backup"`
	KDKs   []string        `json:"kdks"`
	VMs    []nkpVerifyRow  `json:"vms"`
	Raw    json.RawMessage `json:"-"`
}

func nkpRunVerify(t *testing.T, args ...string) (int, nkpVerifyOut) {
	t.Helper()
	code, stdout, stderr := runCLI(t, append([]string{"nkp", "verify"}, append(args, "--json")...)...)
	var out nkpVerifyOut
	if stdout != "" {
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Fatalf("json: %v\n%s\n%s", err, stdout, stderr)
		}
	}
	return code, out
}

func TestNKPVerify(t *testing.T) {
	nkpClearEnv(t)
	dir := t.TempDir()
	pwf := nkpSecretFile(t, dir, "s3cret")
	kdkA, _ := nkp.NewKDK("nkp-a")
	kdkB, _ := nkp.NewKDK("nkp-b")
	raw, err := nkp.Marshal(kdkA, []byte("s3cret"), &nkp.WriteOptions{Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(dir, "a.p12")
	os.WriteFile(backup, raw, 0o600)

	lockA, lockB := nkpLocker(t, kdkA, nil), nkpLocker(t, kdkB, nil)
	good := nkpMakeVM(t, dir, "good", lockA, lockA)
	otherKDK := nkpMakeVM(t, dir, "other", lockB, lockB)
	diskOther := nkpMakeVM(t, dir, "diskother", lockA, lockB)
	damaged := nkpMakeVM(t, dir, "damaged", lockA, nkpLocker(t, kdkA, func(b []byte) { b[0x40] ^= 1 }))

	// A VM whose VMX and disk open: exit 0, two keys opened. By folder and by .vmx.
	code, out := nkpRunVerify(t, backup, filepath.Dir(good), "--password-file", pwf)
	if code != exitOK || len(out.VMs) != 1 || out.VMs[0].Status != "ok" || out.VMs[0].Opened != 2 || out.KDKs[0] != kdkA.ID.String() {
		t.Fatalf("good VM: exit %d %+v", code, out)
	}
	if code, _ := nkpRunVerify(t, backup, good, "--password-file", pwf); code != exitOK {
		t.Fatalf("good .vmx: exit %d", code)
	}
	// Another KDK: exit 4 and the KDK it needs.
	code, out = nkpRunVerify(t, backup, otherKDK, "--password-file", pwf)
	if code != exitKeyNotFound || out.VMs[0].Status != "wrong backup" || len(out.VMs[0].NeedsKDK) != 1 || out.VMs[0].NeedsKDK[0] != kdkB.ID.String() {
		t.Fatalf("other KDK: exit %d %+v", code, out)
	}
	// The VMX opens, the disk needs KDK B: exit 4, needs B.
	code, out = nkpRunVerify(t, backup, diskOther, "--password-file", pwf)
	if code != exitKeyNotFound || out.VMs[0].Opened != 1 || out.VMs[0].NeedsKDK[0] != kdkB.ID.String() || out.VMs[0].Disks[0].Status != "wrong backup" {
		t.Fatalf("disk of another KDK: exit %d %+v", code, out)
	}
	// A damaged disk key id (right KDK, failing tag): corrupt, exit 5.
	code, out = nkpRunVerify(t, backup, damaged, "--password-file", pwf)
	if code != exitCorrupt || out.VMs[0].Status != "corrupt" {
		t.Fatalf("damaged key id: exit %d %+v", code, out)
	}
	// Several VMs: one row each, exit of the worst (corrupt over wrong backup).
	code, out = nkpRunVerify(t, backup, good, otherKDK, damaged, "--password-file", pwf)
	if code != exitCorrupt || len(out.VMs) != 3 || out.VMs[0].Exit != 0 || out.VMs[1].Exit != 4 || out.VMs[2].Exit != 5 {
		t.Fatalf("three VMs: exit %d %+v", code, out)
	}
	code, _ = nkpRunVerify(t, backup, good, otherKDK, "--password-file", pwf)
	if code != exitKeyNotFound {
		t.Fatalf("good + other: exit %d", code)
	}
	// The text table too.
	code, stdout, _ := runCLI(t, "nkp", "verify", backup, good, otherKDK, "--password-file", pwf)
	if code != exitKeyNotFound || !bytes.Contains([]byte(stdout), []byte(kdkB.ID.String())) {
		t.Fatalf("text: exit %d\n%s", code, stdout)
	}
	// Wrong backup password: exit 3. Truncated backup: exit 5.
	if code, _, _ := runCLI(t, "nkp", "verify", backup, good, "--password-file", nkpSecretFile(t, dir, "nope")); code != exitWrongKey {
		t.Fatalf("wrong password: exit %d", code)
	}
	cut := filepath.Join(dir, "cut.p12")
	os.WriteFile(cut, raw[:len(raw)-30], 0o600)
	if code, _, _ := runCLI(t, "nkp", "verify", cut, good, "--password-file", pwf); code != exitCorrupt {
		t.Fatalf("truncated backup: exit %d", code)
	}
	// A missing VM path: a row with exit 1; usage without VM paths.
	if code, out := nkpRunVerify(t, backup, filepath.Join(dir, "nope.vmx"), "--password-file", pwf); code != exitFailure || out.VMs[0].Status != "error" {
		t.Fatalf("missing VM: exit %d", code)
	}
	if code, _, _ := runCLI(t, "nkp", "verify", backup); code != exitUsage {
		t.Fatalf("no VM path: exit %d", code)
	}
}

// TestNKPVerifyFixtures runs `nkp verify` over VMs made by the fixture
// generator (package fixtures: VMX, disk and snapshot delta each locked by
// an NKP key id): the good one opens all three keys; the other-kdk
// negative's backup exits 4 naming the KDK in the manifest; the
// wrong-nkp-password negative exits 3; a KMS-locked VM is not NKP (5).
func TestNKPVerifyFixtures(t *testing.T) {
	nkpClearEnv(t)
	dir := t.TempDir()
	gen := func(name string, r fixtures.Recipe) *fixtures.Fixture {
		r.Seed, r.Disk = 7, vmdk.SubformatMonolithicSparse
		fx, err := fixtures.Generate(filepath.Join(dir, name), r)
		if err != nil {
			t.Fatal(err)
		}
		return fx
	}
	good := gen("good", fixtures.Recipe{Provider: fixtures.ProviderNKP, Snapshot: true})
	other := gen("other", fixtures.Recipe{Provider: fixtures.ProviderNKP, Negative: fixtures.NegOtherKDK})
	wrongPW := gen("wrongpw", fixtures.Recipe{Provider: fixtures.ProviderNKP, Negative: fixtures.NegWrongNKPPassword})
	kms := gen("kms", fixtures.Recipe{Provider: fixtures.ProviderKMS})
	sec := func(fx *fixtures.Fixture, rel string) string { return filepath.Join(fx.Dir, rel) }
	vm := func(fx *fixtures.Fixture) string { return sec(fx, fx.Manifest.VMX) }

	code, out := nkpRunVerify(t, sec(good, good.Manifest.Secrets.NKPBackup), vm(good), "--password-file", sec(good, good.Manifest.Secrets.NKPPasswordFile))
	if code != exitOK || out.VMs[0].Opened != 3 || out.KDKs[0] != good.Manifest.Keys.KDKID {
		t.Fatalf("good fixture: exit %d %+v", code, out)
	}
	code, out = nkpRunVerify(t, sec(other, other.Manifest.Secrets.NKPBackup), vm(other), "--password-file", sec(other, other.Manifest.Secrets.NKPPasswordFile))
	if code != other.Manifest.ExitCode || code != exitKeyNotFound || len(out.VMs[0].NeedsKDK) == 0 || out.VMs[0].NeedsKDK[0] != other.Manifest.Keys.KDKID {
		t.Fatalf("other-kdk fixture: exit %d %+v", code, out)
	}
	code, _, _ = runCLI(t, "nkp", "verify", sec(wrongPW, wrongPW.Manifest.Secrets.NKPBackup), vm(wrongPW), "--password-file", sec(wrongPW, wrongPW.Manifest.Secrets.NKPPasswordFile))
	if code != wrongPW.Manifest.ExitCode || code != exitWrongKey {
		t.Fatalf("wrong-nkp-password fixture: exit %d", code)
	}
	code, out = nkpRunVerify(t, sec(good, good.Manifest.Secrets.NKPBackup), vm(kms), "--password-file", sec(good, good.Manifest.Secrets.NKPPasswordFile))
	if code != exitCorrupt || out.VMs[0].Status != "unsupported" {
		t.Fatalf("KMS-locked VM: exit %d %+v", code, out)
	}
}
