package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
)

func TestFixtureCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "fx")
	// Flags after OUTDIR, as the README writes them.
	code, stdout, stderr := runCLI(t, "fixture", out, "--provider", "kms", "--disk", "monolithicFlat", "--size", "1M", "--seed", "9", "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var m fixtures.Manifest
	if err := json.Unmarshal([]byte(stdout), &m); err != nil {
		t.Fatalf("--json output: %v", err)
	}
	onDisk, err := fixtures.LoadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.SHA256 != onDisk.SHA256 || m.Recipe != onDisk.Recipe || m.Recipe.Seed != 9 || m.Recipe.Size != 1<<20 || m.Recipe.Provider != "kms" {
		t.Fatalf("printed manifest %+v differs from fixture.json %+v", m.Recipe, onDisk.Recipe)
	}
	if _, err := os.Stat(filepath.Join(out, m.Secrets.KEKFile)); err != nil {
		t.Fatal(err)
	}
	// The same recipe from its recorded command gives the same disk.
	out2 := filepath.Join(t.TempDir(), "fx")
	if code, _, stderr := runCLI(t, append([]string{"fixture", out2}, m.Recipe.Args()...)...); code != exitOK {
		t.Fatalf("rerun from the recipe: exit %d: %s", code, stderr)
	}
	m2, _ := fixtures.LoadManifest(out2)
	if m2.SHA256 != m.SHA256 || m2.Keys.KeyID != m.Keys.KeyID {
		t.Fatal("rerunning the recorded command made another fixture")
	}
	// Refusals.
	for _, args := range [][]string{
		{"fixture", filepath.Join(t.TempDir(), "a")},                                             // no provider
		{"fixture", filepath.Join(t.TempDir(), "b"), "--provider", "kms", "--cipher", "aes-256"}, // aes-256 is passphrase only
		{"fixture", filepath.Join(t.TempDir(), "c"), "--provider", "passphrase", "--size", "1000"},
		{"fixture", filepath.Join(t.TempDir(), "d"), "--provider", "passphrase", "--negative", "other-kdk"},
		{"fixture", "--provider", "passphrase"}, // no OUTDIR
		{"fixture", filepath.Join(t.TempDir(), "e"), "--provider", "passphrase", "--no-such-flag"},
	} {
		if code, _, _ := runCLI(t, args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, _, _ := runCLI(t, "fixture", out, "--provider", "passphrase"); code != exitFailure {
		t.Errorf("a non-empty OUTDIR: exit %d, want %d", code, exitFailure)
	}
}
