package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/nkp"
)

const nkpTestdata = "../../nkp/testdata"

// nkpClearEnv unsets the secret environment variables for one test (they
// are restored after it).
func nkpClearEnv(t *testing.T) {
	t.Helper()
	for _, v := range []string{envNKPPassword, envPassphrase} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
}

func nkpSecretFile(t *testing.T, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "pw-"+strings.ReplaceAll(content, "/", "_")+".txt")
	if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNKPCreateInspect(t *testing.T) {
	nkpClearEnv(t)
	dir := t.TempDir()
	pwf := nkpSecretFile(t, dir, "s3cret")
	out := filepath.Join(dir, "backup.p12")
	code, stdout, stderr := runCLI(t, "nkp", "create", out, "--provider", "nkp-prod", "--password-file", pwf)
	if code != exitOK {
		t.Fatalf("create: %d %s", code, stderr)
	}
	id, err := nkp.ParseUUID(strings.TrimSpace(stdout))
	if err != nil {
		t.Fatalf("create printed %q", stdout)
	}
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi.Mode(), err)
	}
	// No temp files left behind.
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Fatalf("%d files in the folder", len(ents))
	}
	// Refuses to overwrite without --force.
	before, _ := os.ReadFile(out)
	if code, _, _ := runCLI(t, "nkp", "create", out, "--provider", "x", "--password-file", pwf); code != exitUsage {
		t.Fatalf("overwrite without --force: exit %d", code)
	}
	if after, _ := os.ReadFile(out); string(after) != string(before) {
		t.Fatal("the refused create changed the file")
	}
	if code, _, _ := runCLI(t, "nkp", "create", out); code != exitUsage {
		t.Fatalf("create without --provider: exit %d", code)
	}

	// inspect with the password: KDK id and provider, and no secret.
	code, stdout, stderr = runCLI(t, "nkp", "inspect", out, "--password-file", pwf, "--json")
	if code != exitOK {
		t.Fatalf("inspect: %d %s", code, stderr)
	}
	var rep nkpInspectReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.KDKs) != 1 || rep.KDKs[0].ID != id.String() || rep.KDKs[0].Provider != "nkp-prod" || rep.MAC.Algorithm != "HMAC-SHA-256" {
		t.Fatalf("report %+v", rep)
	}
	kdks, _ := nkpMustBackup(t, out).Open([]byte("s3cret"))
	if hexKey := kdks[0].Key; strings.Contains(stdout, string(hexKey)) || strings.Contains(strings.ToLower(stdout), nkpHex(hexKey)) {
		t.Fatal("inspect printed the KDK")
	}
	// The text form as well.
	if code, stdout, _ = runCLI(t, "nkp", "inspect", out, "--password-file", pwf); code != exitOK || !strings.Contains(stdout, id.String()) {
		t.Fatalf("text inspect: %d\n%s", code, stdout)
	}
	// Without the password: the structure, exit 0.
	if code, stdout, _ = runCLI(t, "nkp", "inspect", out, "--json"); code != exitOK {
		t.Fatalf("inspect without password: %d", code)
	}
	rep = nkpInspectReport{}
	json.Unmarshal([]byte(stdout), &rep)
	if len(rep.KDKs) != 0 || rep.Containers[0].Bags[0].FriendlyName != id.String() || rep.MAC.Iterations != 10000 {
		t.Fatalf("no-password report %+v", rep)
	}
	// Wrong password: exit 3, by file and by environment.
	if code, stdout, _ = runCLI(t, "nkp", "inspect", out, "--password-file", nkpSecretFile(t, dir, "wrong")); code != exitWrongKey || !strings.Contains(stdout, "HMAC-SHA-256") {
		t.Fatalf("wrong password: exit %d, and the structure must still print:\n%s", code, stdout)
	}
	t.Setenv(envNKPPassword, "wrong")
	if code, _, _ = runCLI(t, "nkp", "inspect", out); code != exitWrongKey {
		t.Fatalf("wrong password from env: exit %d", code)
	}
	t.Setenv(envNKPPassword, "s3cret")
	if code, _, _ = runCLI(t, "nkp", "inspect", out); code != exitOK {
		t.Fatalf("password from env: exit %d", code)
	}
	// --force replaces it with a new KDK.
	code, stdout, _ = runCLI(t, "nkp", "create", out, "--provider", "p2", "--force")
	if code != exitOK || strings.TrimSpace(stdout) == id.String() {
		t.Fatalf("create --force: %d %s", code, stdout)
	}
}

func nkpHex(b []byte) string {
	const hx = "0123456789abcdef"
	s := make([]byte, 0, 2*len(b))
	for _, c := range b {
		s = append(s, hx[c>>4], hx[c&15])
	}
	return string(s)
}

func nkpMustBackup(t *testing.T, path string) *nkp.Backup {
	t.Helper()
	b, _, err := nkpReadBackup(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNKPInspectKeytool: a keytool-made backup, modern and legacy, and a
// Java one with the empty password.
func TestNKPInspectKeytool(t *testing.T) {
	nkpClearEnv(t)
	dir := t.TempDir()
	pwf := nkpSecretFile(t, dir, "secret123")
	for _, c := range []struct{ file, id string }{
		{"keytool-modern.p12", "ec41612e-cc4c-5386-a3a5-f24b43d97d01"},
		{"keytool-legacy.p12", "11111111-2222-3333-4444-555555555555"},
	} {
		code, stdout, stderr := runCLI(t, "nkp", "inspect", filepath.Join(nkpTestdata, c.file), "--password-file", pwf, "--json")
		if code != exitOK || !strings.Contains(stdout, `"id": "`+c.id+`"`) {
			t.Fatalf("%s: %d %s %s", c.file, code, stdout, stderr)
		}
	}
	code, stdout, _ := runCLI(t, "nkp", "inspect", filepath.Join(nkpTestdata, "java-empty-password.p12"), "--json")
	if code != exitOK || !strings.Contains(stdout, "22222222-2222-3333-4444-555555555555") {
		t.Fatalf("empty password: %d %s", code, stdout)
	}
	// A keytool backup of an AES-128 key: the password is right, the key
	// is not a KDK. Unsupported (5), and not "does not open".
	kt := filepath.Join(dir, "kt128.p12")
	if out, err := exec.Command("keytool", "-genseckey", "-keyalg", "AES", "-keysize", "128", "-storetype", "PKCS12",
		"-alias", "95f3aca1-1111-4222-8333-444455556666", "-keystore", kt, "-storepass", "secret123").CombinedOutput(); err != nil {
		t.Fatalf("keytool: %v %s", err, out)
	}
	code, stdout, _ = runCLI(t, "nkp", "inspect", kt, "--password-file", pwf)
	if code != exitCorrupt || strings.Contains(stdout, "does not open") || !strings.Contains(stdout, "not refused") {
		t.Fatalf("AES-128 backup: exit %d\n%s", code, stdout)
	}
}

// TestNKPInspectDamaged: truncations at many cut points exit 5, a flipped
// MAC byte with the right password exits 5, and an iteration count above
// the cap exits 5 at once.
func TestNKPInspectDamaged(t *testing.T) {
	nkpClearEnv(t)
	dir := t.TempDir()
	pwf := nkpSecretFile(t, dir, "secret123")
	raw, err := os.ReadFile(filepath.Join(nkpTestdata, "keytool-modern.p12"))
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, "damaged.p12")
	for n := 0; n < len(raw); n += 7 {
		os.WriteFile(f, raw[:n], 0o600)
		if code, _, _ := runCLI(t, "nkp", "inspect", f, "--password-file", pwf); code != exitCorrupt {
			t.Fatalf("cut at %d: exit %d", n, code)
		}
	}
	c := append([]byte(nil), raw...)
	c[len(c)-10] ^= 1 // inside the MAC value
	os.WriteFile(f, c, 0o600)
	if code, _, _ := runCLI(t, "nkp", "inspect", f, "--password-file", pwf); code != exitCorrupt {
		t.Fatalf("flipped MAC byte: exit %d", code)
	}
	// MAC iterations 10000 (02 02 27 10 at the end) -> a 4-byte count
	// above the cap, lengths adjusted by re-encoding the tail.
	hostile := nkpHostileIterations(t, raw)
	os.WriteFile(f, hostile, 0o600)
	start := time.Now()
	if code, _, _ := runCLI(t, "nkp", "inspect", f, "--password-file", pwf); code != exitCorrupt {
		t.Fatalf("hostile iterations: exit %d", code)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("refusal took %v", d)
	}
}

// nkpHostileIterations rewrites the MAC iteration count of a keytool backup
// (its last element, 02 02 27 10) to 0x7fffffff, fixing the two enclosing
// lengths (PFX 30 82 xx xx; macData 30 4d).
func nkpHostileIterations(t *testing.T, raw []byte) []byte {
	t.Helper()
	n := len(raw)
	if string(raw[n-4:]) != "\x02\x02\x27\x10" || raw[0] != 0x30 || raw[1] != 0x82 {
		t.Fatal("unexpected keytool layout")
	}
	body := append([]byte(nil), raw[4:n-4]...)
	body = append(body, 0x02, 0x04, 0x7f, 0xff, 0xff, 0xff)
	// macData header: find "30 4d 30 31" (77-byte macData of keytool).
	i := strings.LastIndex(string(body), "\x30\x4d\x30\x31")
	if i < 0 {
		t.Fatal("macData not found")
	}
	body[i+1] += 2
	l := len(body)
	return append([]byte{0x30, 0x82, byte(l >> 8), byte(l)}, body...)
}
