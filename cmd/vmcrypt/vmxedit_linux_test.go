package main

// The editor tests run a /bin/sh script with GNU sed and stat as $EDITOR.

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx"
)

// editorScript writes an EDITOR that runs body with the file as $1 and
// records the permissions of the file and its folder.
func editorScript(t *testing.T, body string) (editor, perms string) {
	t.Helper()
	dir := t.TempDir()
	perms = filepath.Join(dir, "perms")
	editor = filepath.Join(dir, "editor.sh")
	s := "#!/bin/sh\nstat -c '%a' \"$1\" \"$(dirname \"$1\")\" > '" + perms + "'\n" + body + "\n"
	if err := os.WriteFile(editor, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
	return editor, perms
}

// edit: $EDITOR gets the decrypted settings in a private file (0600 in a
// 0700 folder, removed afterwards); what it changes is sealed with the same
// keys. A broken edit with no terminal is exit 2 and writes nothing.
func TestVMXEdit(t *testing.T) {
	noEnvPassphrase(t)
	in := vectorVM(t)
	pw := passFile(t, "password")
	run := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", run)
	t.Setenv("VISUAL", "")
	_, dec0 := decryptVMX(t, in, pw)
	orig, _ := os.ReadFile(in)

	ed, perms := editorScript(t, `sed -i 's/^memsize = .*/memsize = "8192"/; s/^numvcpus = .*/# numvcpus was here/' "$1"`)
	t.Setenv("EDITOR", ed)
	out := filepath.Join(t.TempDir(), "out.vmx")
	if code, _, stderr := runCLI(t, "vmx", "edit", in, "-o", out, "--passphrase-file", pw); code != 0 {
		t.Fatalf("edit: exit %d: %s", code, stderr)
	}
	if p, _ := os.ReadFile(perms); string(p) != "600\n700\n" {
		t.Fatalf("the decrypted settings were not private: %q", p)
	}
	if n := dirNames(t, run); len(n) != 0 {
		t.Fatalf("left behind in the temp folder: %v", n)
	}
	outerSame(t, parseVMX(t, in), parseVMX(t, out), vmx.KeyData)
	_, dec1 := decryptVMX(t, out, pw)
	gone, added := lineDiff(dec0, dec1)
	if len(gone) != 2 || len(added) != 2 || !strings.HasPrefix(gone[0], "numvcpus = ") || added[0] != "# numvcpus was here\n" || added[1] != "memsize = \"8192\"\n" {
		t.Fatalf("decrypted diff: -%q +%q", gone, added)
	}

	for _, c := range []struct {
		name, script string
		want         int
	}{
		{"a line that is not key = value", `printf 'this is not a setting\n' >> "$1"`, exitUsage},
		{"an unterminated quote", `printf 'x = "y\n' >> "$1"`, exitUsage},
		{"dataFileKey removed", `sed -i '/^dataFileKey/d' "$1"`, exitUsage},
		{"dataFileKey changed", `sed -i 's/^dataFileKey = .*/dataFileKey = "type=key:cipher=AES-256:key=AAAA"/' "$1"`, exitUsage},
		{"the editor fails", `exit 3`, exitFailure},
		{"the file is removed", `rm "$1"`, exitFailure},
		{"nothing changed", `true`, 0},
		{"nothing changed but a byte-order mark", `printf '\357\273\277' | cat - "$1" > "$1.x" && mv "$1.x" "$1"`, 0},
	} {
		ed, _ := editorScript(t, c.script)
		t.Setenv("EDITOR", ed)
		o := filepath.Join(t.TempDir(), "o.vmx")
		if code, _, stderr := runCLI(t, "vmx", "edit", in, "-o", o, "--passphrase-file", pw); code != c.want {
			t.Errorf("%s: exit %d, want %d: %s", c.name, code, c.want, stderr)
		}
		if _, err := os.Stat(o); err == nil {
			t.Errorf("%s: wrote an output", c.name)
		}
		if n := dirNames(t, run); len(n) != 0 {
			t.Fatalf("%s: left behind in the temp folder: %v", c.name, n)
		}
		if b, _ := os.ReadFile(in); !bytes.Equal(b, orig) {
			t.Fatalf("%s: the input changed", c.name)
		}
	}
	// In place, VISUAL before EDITOR.
	ed, _ = editorScript(t, `sed -i 's/^memsize = .*/memsize = "1024"/' "$1"`)
	t.Setenv("VISUAL", ed)
	t.Setenv("EDITOR", "false")
	if code, _, stderr := runCLI(t, "vmx", "edit", in, "--in-place", "--passphrase-file", pw); code != 0 {
		t.Fatalf("in place: exit %d: %s", code, stderr)
	}
	if b, _ := os.ReadFile(in + ".vmcrypt-bak"); !bytes.Equal(b, orig) {
		t.Fatal("backup is not the original")
	}
	_, dec2 := decryptVMX(t, in, pw)
	if gone, added := lineDiff(dec0, dec2); len(gone) != 1 || added[0] != "memsize = \"1024\"\n" {
		t.Fatalf("in place diff: -%q +%q", gone, added)
	}
}
