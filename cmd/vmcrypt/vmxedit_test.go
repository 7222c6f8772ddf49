package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
)

// vectorVM copies the real Workstation VMX into a fresh folder.
func vectorVM(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("testdata/vmxedit/workstation-encrypted.vmx")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "Encrypted VM.vmx")
	if err := os.WriteFile(p, src, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// lineDiff compares two texts line by line (endings included) and returns
// the lines only in a and only in b, in order.
func lineDiff(a, b []byte) (gone, added []string) {
	as := strings.SplitAfter(string(a), "\n")
	bs := strings.SplitAfter(string(b), "\n")
	count := map[string]int{}
	for _, l := range bs {
		count[l]++
	}
	for _, l := range as {
		if count[l] > 0 {
			count[l]--
			continue
		}
		gone = append(gone, l)
	}
	count = map[string]int{}
	for _, l := range as {
		count[l]++
	}
	for _, l := range bs {
		if count[l] > 0 {
			count[l]--
			continue
		}
		added = append(added, l)
	}
	return gone, added
}

// outerSame: the outer VMX lines are the same except those named, and the
// key-safe line is byte for byte the same.
func outerSame(t *testing.T, a, b *vmx.File, changed ...string) {
	t.Helper()
	ka, _, _, _ := a.Encryption()
	kb, _, _, _ := b.Encryption()
	if ka != kb {
		t.Fatal("the key safe changed")
	}
	gone, added := lineDiff(a.Bytes(), b.Bytes())
	for _, l := range append(gone, added...) {
		ok := false
		for _, k := range changed {
			ok = ok || strings.HasPrefix(l, k+" = ")
		}
		if !ok {
			t.Fatalf("outer line changed: %.60q", l)
		}
	}
}

// After set: decrypting shows exactly the changes, every other line and
// the key-safe line are byte for byte the same.
func TestVMXSet(t *testing.T) {
	noEnvPassphrase(t)
	in := vectorVM(t)
	pw := passFile(t, "password")
	orig, _ := os.ReadFile(in)
	_, dec0 := decryptVMX(t, in, pw)
	out := filepath.Join(t.TempDir(), "out.vmx")
	code, stdout, stderr := runCLI(t, "vmx", "set", in, "memsize=4096", `annotation=say "hi" |x`, "displayName=Renamed VM",
		"--unset", "sound.present", "-o", out, "--passphrase-file", pw)
	if code != 0 {
		t.Fatalf("set: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"memsize: changed (encrypted settings)", "annotation: added (encrypted settings)", "displayName: changed (plain lines)", "sound.present: removed (encrypted settings)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("report lacks %q:\n%s", want, stdout)
		}
	}
	if b, _ := os.ReadFile(in); !bytes.Equal(b, orig) {
		t.Fatal("input changed without --in-place")
	}
	outerSame(t, parseVMX(t, in), parseVMX(t, out), vmx.KeyData, "displayName")
	code, dec1 := decryptVMX(t, out, pw)
	if code != 0 {
		t.Fatalf("decrypt: exit %d", code)
	}
	gone, added := lineDiff(dec0, dec1)
	wantGone := []string{"displayName = \"Encrypted VM\"\n", "sound.present = \"TRUE\"\n", "memsize = \"2048\"\n"}
	wantAdded := []string{"displayName = \"Renamed VM\"\n", "memsize = \"4096\"\n", "annotation = \"say |22hi|22 |7Cx\"\n"}
	if strings.Join(gone, "") != strings.Join(wantGone, "") || strings.Join(added, "") != strings.Join(wantAdded, "") {
		t.Fatalf("decrypted diff: -%q +%q", gone, added)
	}
	// In place: a backup, then the same result.
	if code, _, stderr := runCLI(t, "vmx", "set", in, "memsize=4096", "--in-place", "--passphrase-file", pw); code != 0 {
		t.Fatalf("in place: exit %d: %s", code, stderr)
	}
	if b, _ := os.ReadFile(in + ".vmcrypt-bak"); !bytes.Equal(b, orig) {
		t.Fatal("backup is not the original")
	}
	_, dec2 := decryptVMX(t, in, pw)
	if gone, added := lineDiff(dec0, dec2); len(gone) != 1 || len(added) != 1 || added[0] != "memsize = \"4096\"\n" {
		t.Fatalf("in place diff: -%q +%q", gone, added)
	}
	// A value it already has: nothing written.
	noop := filepath.Join(t.TempDir(), "noop.vmx")
	if code, _, _ := runCLI(t, "vmx", "set", in, "memsize=4096", "-o", noop, "--passphrase-file", pw); code != 0 {
		t.Fatalf("no-op set: exit %d", code)
	}
	if _, err := os.Stat(noop); err == nil {
		t.Fatal("a set that changes nothing wrote a file")
	}
	// Refusals change nothing.
	cur, _ := os.ReadFile(in)
	for _, c := range []struct {
		name string
		args []string
		want int
	}{
		{"dataFileKey", []string{"dataFileKey=type=key:cipher=AES-256:key=AAAA"}, exitUsage},
		{"unset dataFileKey", []string{"--unset", "dataFileKey"}, exitUsage},
		{"cryptoState", []string{"cryptoState=none"}, exitUsage},
		{"the key safe", []string{"encryption.keySafe=x"}, exitUsage},
		{"a key with a blank", []string{"a b=c"}, exitUsage},
		{"not KEY=VALUE", []string{"memsize"}, exitUsage},
		{"nothing to set", nil, exitUsage},
		{"wrong passphrase", []string{"memsize=1", "--passphrase-file", passFile(t, "nope")}, exitWrongKey},
	} {
		args := append([]string{"vmx", "set", in, "--in-place", "--force"}, c.args...)
		if !strings.Contains(strings.Join(c.args, " "), "--passphrase-file") {
			args = append(args, "--passphrase-file", pw)
		}
		if code, _, stderr := runCLI(t, args...); code != c.want {
			t.Errorf("%s: exit %d, want %d: %s", c.name, code, c.want, stderr)
		}
		if b, _ := os.ReadFile(in); !bytes.Equal(b, cur) {
			t.Fatalf("%s: the VMX changed", c.name)
		}
	}
}

// set works on a VM locked by a key provider too (the key options open it).
func TestVMXSetKeyProvider(t *testing.T) {
	out := filepath.Join(t.TempDir(), "fx")
	fx, err := fixtures.Generate(out, fixtures.Recipe{Provider: fixtures.ProviderKMS, Disk: vmdk.SubformatMonolithicSparse, Size: 1 << 20, Seed: 1506})
	if err != nil {
		t.Fatal(err)
	}
	fx.Close()
	in := filepath.Join(out, "vm", "fixture.vmx")
	kek := filepath.Join(out, fx.Manifest.Secrets.KEKFile)
	if code, _, stderr := runCLI(t, "vmx", "set", in, "guestinfo.case=42", "--in-place", "--kek", kek); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	dec := filepath.Join(t.TempDir(), "d.vmx")
	if code, _, _ := runCLI(t, "vmx", "decrypt", in, "-o", dec, "--kek", kek); code != 0 {
		t.Fatal("decrypt")
	}
	if b, _ := os.ReadFile(dec); !bytes.HasSuffix(b, []byte("guestinfo.case = \"42\"\n")) {
		t.Fatal("the setting is not there")
	}
}
