package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/vmdk"
)

const vecDir = "../../vmx/testdata/vectors/"

// noEnvPassphrase makes sure VMCRYPT_PASSPHRASE does not leak in.
func noEnvPassphrase(t *testing.T) {
	t.Setenv(envPassphrase, "x")
	os.Unsetenv(envPassphrase)
}

// vmFixture copies a vector VMX into a fresh folder, optionally changed.
func vmFixture(t *testing.T, vector string, change func(string) string) string {
	t.Helper()
	b, err := os.ReadFile(vecDir + vector)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if change != nil {
		s = change(s)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "vm.vmx")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func passFile(t *testing.T, pass string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pass.txt")
	if err := os.WriteFile(p, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// dirNames lists a folder, to prove nothing (not even a temp file) was left.
func dirNames(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

func TestVMXDecryptCLI(t *testing.T) {
	noEnvPassphrase(t)
	in := vmFixture(t, "workstation-encrypted.vmx", nil)
	dir := filepath.Dir(in)
	out := filepath.Join(dir, "out.vmx")

	// Wrong passphrase: 3, and no output file, no temp file.
	code, _, _ := runCLI(t, "vmx", "decrypt", in, "-o", out, "--passphrase-file", passFile(t, "wrong"))
	if code != exitWrongKey {
		t.Fatalf("wrong passphrase: exit %d, want %d", code, exitWrongKey)
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Fatalf("wrong passphrase left files: %v", names)
	}
	// Right passphrase (flags before or after the VMX).
	code, _, stderr := runCLI(t, "vmx", "decrypt", "--passphrase-file", passFile(t, "password"), in, "-o", out)
	if code != 0 {
		t.Fatalf("decrypt: exit %d: %s", code, stderr)
	}
	b, _ := os.ReadFile(out)
	if !bytes.HasPrefix(b, []byte(".encoding = \"UTF-8\"\ndisplayName = \"Encrypted VM\"\n")) {
		t.Fatalf("output starts %q", b[:60])
	}
	sum := sha256.Sum256(b[len(".encoding = \"UTF-8\"\ndisplayName = \"Encrypted VM\"\n"):])
	if hex.EncodeToString(sum[:]) != "750c6db6913bfc255c6510e50629dadbb9df61f8b55701b3668898cac4705e73" {
		t.Fatal("decrypted settings differ from the documented sha256")
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != 0o600 {
		t.Fatalf("output mode %v", st.Mode())
	}
	// Existing output without --force: usage error, file untouched.
	os.WriteFile(out, []byte("keep"), 0o600)
	if code, _, _ := runCLI(t, "vmx", "decrypt", in, "-o", out, "--passphrase-file", passFile(t, "password")); code != exitUsage {
		t.Fatalf("existing output: exit %d", code)
	}
	if b, _ := os.ReadFile(out); string(b) != "keep" {
		t.Fatal("existing output overwritten without --force")
	}
	if code, _, _ := runCLI(t, "vmx", "decrypt", in, "-o", out, "--force", "--passphrase-file", passFile(t, "password")); code != 0 {
		t.Fatalf("--force: exit %d", code)
	}
	// The passphrase from the environment.
	t.Setenv(envPassphrase, "password")
	if code, _, _ := runCLI(t, "vmx", "decrypt", in, "-o", filepath.Join(dir, "env.vmx")); code != 0 {
		t.Fatalf("env passphrase: exit %d", code)
	}
	// Never over the input.
	if code, _, _ := runCLI(t, "vmx", "decrypt", in, "-o", in, "--force"); code != exitUsage {
		t.Fatalf("output = input: exit %d", code)
	}
	if code, _, _ := runCLI(t, "vmx", "decrypt", in); code != exitUsage {
		t.Fatalf("no -o: exit %d", code)
	}
}

// keySafeOf returns the key-safe value of the workstation vector.
func wsKeySafe(t *testing.T) string {
	b, _ := os.ReadFile(vecDir + "workstation-encrypted.vmx")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "encryption.keySafe = \""); ok {
			return strings.TrimSuffix(v, "\"")
		}
	}
	t.Fatal("no key safe")
	return ""
}

func TestCorruptInputExit5(t *testing.T) {
	noEnvPassphrase(t)
	ks := wsKeySafe(t)
	i := strings.Index(ks, ",HMAC%2dSHA%2d1,") + len(",HMAC%2dSHA%2d1,")
	blob := ks[i : len(ks)-2]
	cases := map[string]func(string) string{
		"flipped byte in encryption.data": func(s string) string {
			j := strings.Index(s, "encryption.data = \"") + len("encryption.data = \"") + 200
			c := byte('A')
			if s[j] == 'A' {
				c = 'B'
			}
			return s[:j] + string(c) + s[j+1:]
		},
		"truncated base64 in encryption.data": func(s string) string {
			k := strings.LastIndex(s, "\"")
			return s[:k-3] + s[k:]
		},
		"encryption.data cut to a bad length": func(s string) string {
			j := strings.Index(s, "encryption.data = \"") + len("encryption.data = \"")
			k := strings.Index(s[j:], "\"") + j
			raw, _ := base64.StdEncoding.DecodeString(s[j:k])
			return s[:j] + base64.StdEncoding.EncodeToString(raw[:len(raw)-5]) + s[k:]
		},
		"truncated base64 in the key safe": func(s string) string {
			return strings.Replace(s, blob, blob[:len(blob)-7], 1)
		},
		"key-safe blob of impossible length": func(s string) string {
			raw, _ := base64.StdEncoding.DecodeString(strings.NewReplacer("%2b", "+", "%2f", "/", "%3d", "=").Replace(blob))
			nb := strings.NewReplacer("+", "%2b", "/", "%2f", "=", "%3d").Replace(base64.StdEncoding.EncodeToString(raw[:110]))
			return strings.Replace(s, blob, nb, 1)
		},
		"unknown cipher": func(s string) string {
			return strings.Replace(s, "cipher%3dAES%2d256", "cipher%3dAES%2d128", 1)
		},
		"unknown pass2key": func(s string) string {
			return strings.Replace(s, "PBKDF2%2dHMAC%2dSHA%2d1", "PBKDF2%2dHMAC%2dSHA%2d512", 1)
		},
		"PBKDF2 rounds above the cap": func(s string) string {
			return strings.Replace(s, "rounds%3d10000", "rounds%3d2000000000", 1)
		},
		"unknown MAC": func(s string) string {
			return strings.Replace(s, ",HMAC%2dSHA%2d1,", ",HMAC%2dMD5,", 1)
		},
		"key safe grammar": func(s string) string {
			return strings.Replace(s, "vmware:key/list/(pair/(", "vmware:key/list/(pair/((", 1)
		},
	}
	for name, change := range cases {
		in := vmFixture(t, "workstation-encrypted.vmx", change)
		out := filepath.Join(filepath.Dir(in), "out.vmx")
		start := time.Now()
		code, _, stderr := runCLI(t, "vmx", "decrypt", in, "-o", out, "--passphrase-file", passFile(t, "password"))
		if code != exitCorrupt {
			t.Errorf("%s: exit %d, want %d (%s)", name, code, exitCorrupt, stderr)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: output written", name)
		}
		if name == "PBKDF2 rounds above the cap" && time.Since(start) > time.Second {
			t.Errorf("rounds above the cap refused after %v, want at once", time.Since(start))
		}
		if code, _, _ := runCLI(t, "unlock", in, "--passphrase-file", passFile(t, "password")); code != exitCorrupt {
			t.Errorf("unlock, %s: exit %d", name, code)
		}
	}
}

func TestUnlockCLI(t *testing.T) {
	noEnvPassphrase(t)
	in := vmFixture(t, "xts-selfgen.vmx", nil)
	code, stdout, stderr := runCLI(t, "unlock", in, "--passphrase-file", passFile(t, "password"))
	if code != 0 || !strings.Contains(stdout, "opened by passphrase") {
		t.Fatalf("unlock: %d %s %s", code, stdout, stderr)
	}
	if names := dirNames(t, filepath.Dir(in)); len(names) != 1 {
		t.Fatalf("unlock wrote files: %v", names)
	}
	if code, _, _ := runCLI(t, "unlock", in, "--passphrase-file", passFile(t, "Password")); code != exitWrongKey {
		t.Fatalf("wrong passphrase: exit %d", code)
	}
	// No source and no terminal: key not supplied (exit 4), not a hang.
	if code, _, _ := runCLI(t, "unlock", in); code != exitKeyNotFound {
		t.Fatalf("no passphrase: exit %d", code)
	}
	// Folder with two VMX files: usage error.
	dir := filepath.Dir(in)
	os.WriteFile(filepath.Join(dir, "b.vmx"), []byte("a = \"b\"\n"), 0o644)
	if code, _, stderr := runCLI(t, "unlock", dir, "--passphrase-file", passFile(t, "password")); code != exitUsage || !strings.Contains(stderr, "b.vmx") {
		t.Fatalf("two VMX: exit %d %s", code, stderr)
	}
}

// hashLines reads the expected lines of passphrase-hashes.tsv.
func hashLines(t *testing.T) (hashcat, john string) {
	f, err := os.Open(vecDir + "passphrase-hashes.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), "\t")
		switch {
		case strings.HasPrefix(p[0], "hashcat-27400 (from workstation"):
			hashcat = p[1]
		case strings.HasPrefix(p[0], "john-vmx (from workstation"):
			john = p[1]
		}
	}
	if hashcat == "" || john == "" {
		t.Fatal("hash vectors missing")
	}
	return
}

func TestVMXHashCLI(t *testing.T) {
	hc, john := hashLines(t)
	in := vecDir + "workstation-encrypted.vmx"
	if code, out, _ := runCLI(t, "vmx", "hash", in); code != 0 || out != hc+"\n" {
		t.Fatalf("hashcat: %d %q", code, out)
	}
	if code, out, _ := runCLI(t, "vmx", "hash", in, "--format", "john"); code != 0 || out != john+"\n" {
		t.Fatalf("john: %d %q", code, out)
	}
	if code, _, _ := runCLI(t, "vmx", "hash", "--format", "john", vecDir+"xts-selfgen.vmx"); code != exitCorrupt {
		t.Fatalf("john for XTS: exit %d, want %d", code, exitCorrupt)
	}
	if code, _, _ := runCLI(t, "vmx", "hash", "--format", "md5", in); code != exitUsage {
		t.Fatalf("bad format: exit %d", code)
	}
}

func TestVMXEncryptCLI(t *testing.T) {
	noEnvPassphrase(t)
	in := vmFixture(t, "workstation-encrypted.vmx", nil)
	dir := filepath.Dir(in)
	plain := filepath.Join(dir, "plain.vmx")
	if code, _, e := runCLI(t, "vmx", "decrypt", in, "-o", plain, "--passphrase-file", passFile(t, "password")); code != 0 {
		t.Fatal(e)
	}
	x, _ := os.ReadFile(plain)
	utf := "p\u00e4ssw\u00f6rd \u65e5\u672c" // NFC, as typed
	for _, cipher := range []string{"aes-256", "xts-aes-256"} {
		enc := filepath.Join(dir, cipher+".vmx")
		back := filepath.Join(dir, cipher+"-back.vmx")
		if code, _, e := runCLI(t, "vmx", "encrypt", plain, "-o", enc, "--passphrase-file", passFile(t, utf), "--cipher", cipher, "--rounds", "2000"); code != 0 {
			t.Fatalf("encrypt %s: %s", cipher, e)
		}
		if code, _, _ := runCLI(t, "vmx", "decrypt", enc, "-o", back, "--passphrase-file", passFile(t, "pa\u0308ssw\u00f6rd \u65e5\u672c")); code != exitWrongKey {
			t.Fatalf("NFD spelling of the passphrase: exit %d, want %d", code, exitWrongKey)
		}
		if code, _, e := runCLI(t, "vmx", "decrypt", enc, "-o", back, "--passphrase-file", passFile(t, utf)); code != 0 {
			t.Fatalf("decrypt %s: %s", cipher, e)
		}
		y, _ := os.ReadFile(back)
		if !bytes.Equal(x, y) {
			t.Fatalf("%s: decrypt(encrypt(x)) != x", cipher)
		}
		if code, out, _ := runCLI(t, "vmx", "hash", enc); code != 0 || !strings.HasPrefix(out, "$vmx$0$2000$") {
			t.Fatalf("hash of the new VMX: %q", out)
		}
	}
	if code, _, _ := runCLI(t, "vmx", "encrypt", plain, "-o", filepath.Join(dir, "r.vmx"), "--passphrase-file", passFile(t, "x"), "--rounds", "20000000"); code != exitUsage {
		t.Fatalf("rounds above cap: exit %d", code)
	}
	if code, _, _ := runCLI(t, "vmx", "encrypt", in, "-o", filepath.Join(dir, "twice.vmx"), "--passphrase-file", passFile(t, "x")); code != exitCorrupt {
		t.Fatalf("encrypting an encrypted VMX: exit %d", code)
	}
}

// jsonReport decodes inspect --json.
func jsonReport(t *testing.T, out string) vmInspectReport {
	var r vmInspectReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, out)
	}
	return r
}

func TestInspectWorkstationJSON(t *testing.T) {
	noEnvPassphrase(t)
	in := vmFixture(t, "workstation-encrypted.vmx", nil)
	code, out, e := runCLI(t, "inspect", in, "--json")
	if code != 0 {
		t.Fatal(e)
	}
	r := jsonReport(t, out)
	if !r.Encrypted || len(r.KeySafe) != 1 || r.KeySafe[0].Type != "phrase" || r.KeySafe[0].Rounds != 10000 ||
		r.KeySafe[0].Cipher != "AES-256" || r.Settings != nil || r.Posture.SettingsRead {
		t.Fatalf("without a key: %+v", r)
	}
	code, out, e = runCLI(t, "inspect", filepath.Dir(in), "--json", "--passphrase-file", passFile(t, "password"))
	if code != 0 {
		t.Fatal(e)
	}
	r = jsonReport(t, out)
	if r.Settings == nil || r.Settings.Firmware != "efi" || len(r.Settings.Disks) != 1 ||
		r.Settings.Disks[0].FileName != "Virtual Disk.vmdk" || r.Settings.Disks[0].Device != "nvme0:0" ||
		r.Posture.Firmware != "efi" || r.Posture.VMotionEncryption != "opportunistic" || r.Unlocked == nil {
		t.Fatalf("with the key: %s", out)
	}
	if code, _, _ := runCLI(t, "inspect", in, "--passphrase-file", passFile(t, "nope")); code != exitWrongKey {
		t.Fatalf("inspect with a wrong passphrase: exit %d", code)
	}
	// Text output works too.
	if code, out, _ := runCLI(t, "inspect", in); code != 0 || !strings.Contains(out, "10000") {
		t.Fatalf("text: %s", out)
	}
}

func TestInspectFolder(t *testing.T) {
	noEnvPassphrase(t)
	in := vmFixture(t, "workstation-encrypted.vmx", func(s string) string {
		return s + "vtpm.present = \"TRUE\"\n"
	})
	dir := filepath.Dir(in)
	magic := append([]byte{0x9e, 0xdd, 0x43, 0x89}, make([]byte, 60)...)
	os.WriteFile(filepath.Join(dir, "vm.nvram"), magic, 0o644)
	os.WriteFile(filepath.Join(dir, "vm-1.vmem"), magic, 0o644)
	os.WriteFile(filepath.Join(dir, "vm.vswp"), make([]byte, 64), 0o644)
	os.WriteFile(filepath.Join(dir, "Virtual Disk.vmdk"), []byte("# Disk DescriptorFile\nversion=1\nencryptionKeys = \"vmware:key/list/()\"\ncreateType=\"monolithicSparse\"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "plain.vmdk"), []byte("# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "plain-flat.vmdk"), make([]byte, 4096), 0o644)
	// A sparse disk with an embedded descriptor.
	if err := vmdk.Write(context.Background(), filepath.Join(dir, "sparse.vmdk"), bytes.NewReader(make([]byte, 1<<20)), 1<<20, nil,
		&vmdk.WriteOptions{EncryptionKeys: "vmware:key/list/()"}); err != nil {
		t.Fatal(err)
	}

	code, out, e := runCLI(t, "inspect", dir, "--json", "--passphrase-file", passFile(t, "password"))
	if code != 0 {
		t.Fatal(e)
	}
	r := jsonReport(t, out)
	want := map[string]string{"vm.vmx": "yes", "vm.nvram": "yes", "vm-1.vmem": "yes", "vm.vswp": "no",
		"Virtual Disk.vmdk": "yes", "plain.vmdk": "no", "plain-flat.vmdk": "?", "sparse.vmdk": "yes"}
	got := map[string]string{}
	for _, f := range r.Files {
		v := "?"
		if f.Encrypted != nil {
			v = map[bool]string{true: "yes", false: "no"}[*f.Encrypted]
		}
		got[f.Name] = v
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("%s: encrypted %s, want %s", n, got[n], w)
		}
	}
	if !r.Posture.VTPM || !r.Posture.MemorySnapshots || !r.Settings.Disks[0].Exists {
		t.Errorf("posture %+v", r.Posture)
	}
	var mem bool
	for _, c := range r.Posture.Conflicts {
		mem = mem || strings.Contains(c, "memory")
	}
	if !mem || len(r.Posture.Conflicts) != 2 {
		t.Errorf("conflicts %q", r.Posture.Conflicts)
	}
	if code, _, _ := runCLI(t, "inspect", filepath.Join(dir, "nothing")); code != exitFailure {
		t.Errorf("missing path: exit %d", code)
	}
}
