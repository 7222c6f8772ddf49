package main

import (
	"crypto/rand"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// kmsLocker locks with a Standard Key Provider KEK (fqid provider/keyID).
func kmsLocker(provider, keyID string, kek []byte) func(*keysafe.Key) (*keysafe.Locator, error) {
	return func(k *keysafe.Key) (*keysafe.Locator, error) {
		p, err := keysafe.LockFQID(k, provider, keyID, kek, rand.Reader)
		if err != nil {
			return nil, err
		}
		return keysafe.NewList(p), nil
	}
}

// TestUnlockWithKEK: a VM locked by a KMS key opens with the matching
// --kek entry (JSON file or folder), fails with exit 4 naming the key id
// when the entry is missing, exit 3 when the entry holds other bytes, and
// exit 5 when the KEK file is damaged.
func TestUnlockWithKEK(t *testing.T) {
	nkpClearEnv(t)
	dir := t.TempDir()
	const keyID = "a4e7494f-da55-4917-9d90-560c5078866b"
	kek := make([]byte, 32)
	rand.Read(kek)
	lock := kmsLocker("KMS", keyID, kek)
	vm := nkpMakeVM(t, dir, "kmsvm", lock, lock)

	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b64 := base64.StdEncoding.EncodeToString
	good := write("good.json", `[{"provider": "KMS", "keyId": "`+keyID+`", "key": "`+b64(kek)+`"}]`)
	missing := write("missing.json", `{"provider": "KMS", "keyId": "another-key", "key": "`+b64(kek)+`"}`)
	other := make([]byte, 32)
	rand.Read(other)
	wrong := write("wrong.json", `{"keyId": "`+keyID+`", "key": "`+b64(other)+`"}`)
	short := write("short.json", `{"keyId": "`+keyID+`", "key": "`+b64(kek[:31])+`"}`)
	folder := filepath.Join(dir, "keks")
	os.Mkdir(folder, 0o700)
	os.WriteFile(filepath.Join(folder, keyID), kek, 0o600)

	if code, _, stderr := runCLI(t, "unlock", vm, "--kek", good); code != exitOK {
		t.Fatalf("matching --kek: exit %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "unlock", vm, "--kek", missing, "--kek", folder); code != exitOK {
		t.Fatalf("--kek folder after a file without the key: exit %d %s", code, stderr)
	}
	code, _, stderr := runCLI(t, "unlock", vm, "--kek", missing)
	if code != exitKeyNotFound || !strings.Contains(stderr, keyID) {
		t.Fatalf("missing entry: exit %d %s", code, stderr)
	}
	if code, _, _ := runCLI(t, "unlock", vm, "--kek", wrong); code != exitWrongKey {
		t.Fatalf("wrong KEK bytes: exit %d", code)
	}
	if code, _, _ := runCLI(t, "unlock", vm, "--kek", short); code != exitCorrupt {
		t.Fatalf("31-byte key: exit %d", code)
	}
	if code, _, _ := runCLI(t, "unlock", vm, "--nkp-password-file", good, "--kek", good); code != exitUsage {
		t.Fatalf("--nkp-password-file without --nkp-backup: exit %d", code)
	}
}

// TestUnlockWithNKPBackup: an NKP-locked VM opens with --nkp-backup and
// the password from --nkp-password-file or VMCRYPT_NKP_PASSWORD; the backup
// of another KDK exits 4 naming the KDK id needed; a wrong password exits 3.
func TestUnlockWithNKPBackup(t *testing.T) {
	nkpClearEnv(t)
	dir := t.TempDir()
	kdkA, _ := nkp.NewKDK("nkp-a")
	kdkB, _ := nkp.NewKDK("nkp-b")
	backup := func(k *nkp.KDK, pw string) string {
		raw, err := nkp.Marshal(k, []byte(pw), &nkp.WriteOptions{Iterations: 1000})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, k.ID.String()+".p12")
		os.WriteFile(p, raw, 0o600)
		return p
	}
	a, b := backup(kdkA, "pw-a"), backup(kdkB, "")
	lock := nkpLocker(t, kdkA, nil)
	vm := nkpMakeVM(t, dir, "nkpvm", lock, lock)
	pwf := nkpSecretFile(t, dir, "pw-a")

	if code, _, stderr := runCLI(t, "unlock", vm, "--nkp-backup", a, "--nkp-password-file", pwf); code != exitOK {
		t.Fatalf("right backup: exit %d %s", code, stderr)
	}
	t.Setenv(envNKPPassword, "pw-a")
	if code, _, stderr := runCLI(t, "unlock", vm, "--nkp-backup", a); code != exitOK {
		t.Fatalf("password from env: exit %d %s", code, stderr)
	}
	if code, _, _ := runCLI(t, "unlock", vm, "--nkp-backup", a, "--nkp-password-file", nkpSecretFile(t, dir, "nope")); code != exitWrongKey {
		t.Fatalf("wrong password: exit %d", code)
	}
	os.Unsetenv(envNKPPassword)
	// Two backups with different passwords: each opens with the one of
	// the given passwords that fits it, in any order.
	empty := nkpSecretFile(t, dir, "")
	for _, order := range [][]string{{pwf, empty}, {empty, pwf}} {
		args := []string{"unlock", vm, "--nkp-backup", b, "--nkp-backup", a, "--nkp-password-file", order[0], "--nkp-password-file", order[1]}
		if code, _, stderr := runCLI(t, args...); code != exitOK {
			t.Fatalf("two backups, two passwords: exit %d %s", code, stderr)
		}
	}
	if code, _, stderr := runCLI(t, "unlock", vm, "--nkp-backup", a, "--nkp-password-file", empty, "--nkp-password-file", nkpSecretFile(t, dir, "nope2")); code != exitWrongKey || !strings.Contains(stderr, "none of the 2 passwords") {
		t.Fatalf("no password fits: exit %d %s", code, stderr)
	}
	code, _, stderr := runCLI(t, "unlock", vm, "--nkp-backup", b)
	if code != exitKeyNotFound || !strings.Contains(stderr, kdkA.ID.String()) {
		t.Fatalf("other KDK: exit %d %s", code, stderr)
	}
}
