package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/recover"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

func recFixture(t *testing.T, r fixtures.Recipe) *fixtures.Fixture {
	t.Helper()
	fx, err := fixtures.Generate(filepath.Join(t.TempDir(), "fx"), r)
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

// recKeyArgs are the key options a fixture's secrets give.
func recKeyArgs(fx *fixtures.Fixture) []string {
	m := fx.Manifest.Secrets
	var a []string
	if m.PassphraseFile != "" {
		a = append(a, "--passphrase-file", filepath.Join(fx.Dir, m.PassphraseFile))
	}
	if m.KEKFile != "" {
		a = append(a, "--kek", filepath.Join(fx.Dir, m.KEKFile))
	}
	if m.NKPBackup != "" {
		a = append(a, "--nkp-backup", filepath.Join(fx.Dir, m.NKPBackup), "--nkp-password-file", filepath.Join(fx.Dir, m.NKPPasswordFile))
	}
	return a
}

func recSums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, f)
		f.Close()
		out[e.Name()] = hex.EncodeToString(h.Sum(nil))
	}
	return out
}

func recNames(t *testing.T, dir string) []string {
	var n []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		n = append(n, e.Name())
	}
	sort.Strings(n)
	return n
}

// Every provider: exit 0, disk content as the manifest says, inputs intact,
// the report present; flags may follow VMPATH.
func TestRecoverCLI(t *testing.T) {
	for i, c := range []struct {
		provider, disk, format string
	}{
		{fixtures.ProviderPassphrase, vmdk.SubformatMonolithicSparse, "vmdk"},
		{fixtures.ProviderKMS, vmdk.SubformatTwoGbMaxExtentSparse, "raw"},
		{fixtures.ProviderNKP, vmdk.SubformatStreamOptimized, "vmdk"},
	} {
		fx := recFixture(t, fixtures.Recipe{Provider: c.provider, Disk: c.disk, Seed: uint64(10 + i), Snapshot: i == 2})
		vm := filepath.Join(fx.Dir, fixtures.VMDir)
		before := recSums(t, vm)
		out := filepath.Join(t.TempDir(), "out")
		args := append([]string{"recover", vm, "-o", out, "--format", c.format, "--jobs", "2", "--quiet"}, recKeyArgs(fx)...)
		code, _, stderr := runCLI(t, args...)
		if code != exitOK {
			t.Fatalf("%s: exit %d: %s", c.provider, code, stderr)
		}
		after := recSums(t, vm)
		for k, v := range before {
			if after[k] != v {
				t.Fatalf("input %s changed", k)
			}
		}
		sums := recSums(t, out)
		if _, ok := sums[recover.ReportName]; !ok {
			t.Fatal("no report")
		}
		if c.format == "raw" && sums[fixtures.DefaultName+".img"] != fx.Manifest.SHA256.Disk {
			t.Fatalf("raw disk sha256 differs")
		}
		if sums[fixtures.DefaultName+".nvram"] != fx.Manifest.SHA256.NVRAM {
			t.Fatal("nvram differs")
		}
		// Again without --force: refused (exit 2), nothing changed; with --force: ok.
		code, _, _ = runCLI(t, args...)
		if code != exitUsage {
			t.Fatalf("existing outputs: exit %d, want %d", code, exitUsage)
		}
		if again := recSums(t, out); len(again) != len(sums) {
			t.Fatalf("refused run changed the output folder: %v", again)
		} else {
			for k, v := range sums {
				if again[k] != v {
					t.Fatalf("refused run changed %s", k)
				}
			}
		}
		code, _, stderr = runCLI(t, append(args, "--force")...)
		if code != exitOK {
			t.Fatalf("--force: exit %d: %s", code, stderr)
		}
		// The VM folder as OUTDIR: refused even with --force, inputs untouched.
		self := append([]string{"recover", vm, "-o", vm, "--force", "--quiet"}, recKeyArgs(fx)...)
		if code, _, stderr := runCLI(t, self...); code != exitUsage || !strings.Contains(stderr, "choose another output folder") {
			t.Fatalf("-o VM folder --force: exit %d: %s", code, stderr)
		}
		for k, v := range before {
			if recSums(t, vm)[k] != v {
				t.Fatalf("input %s changed", k)
			}
		}
	}
}

// Wrong key: exit 3 and nothing written. Missing key: exit 4. Corrupt
// grain: exit 5. In every case OUTDIR holds no new file.
func TestRecoverCLINegatives(t *testing.T) {
	cases := []struct {
		r    fixtures.Recipe
		code int
	}{
		{fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Negative: fixtures.NegWrongPassphrase}, exitWrongKey},
		{fixtures.Recipe{Provider: fixtures.ProviderNKP, Negative: fixtures.NegWrongNKPPassword}, exitWrongKey},
		{fixtures.Recipe{Provider: fixtures.ProviderKMS, Negative: fixtures.NegOtherKEK}, exitKeyNotFound},
		{fixtures.Recipe{Provider: fixtures.ProviderNKP, Negative: fixtures.NegOtherKDK}, exitKeyNotFound},
		{fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatStreamOptimized, Negative: fixtures.NegFlipGrain}, exitCorrupt},
		{fixtures.Recipe{Provider: fixtures.ProviderKMS, Negative: fixtures.NegTruncateDisk}, exitCorrupt},
	}
	for i, c := range cases {
		c.r.Seed = uint64(50 + i)
		fx := recFixture(t, c.r)
		if fx.Manifest.ExitCode != c.code {
			t.Fatalf("%s: manifest expects %d, test %d", c.r.Negative, fx.Manifest.ExitCode, c.code)
		}
		vm := filepath.Join(fx.Dir, fixtures.VMDir)
		before := recSums(t, vm)
		out := t.TempDir()
		code, _, stderr := runCLI(t, append([]string{"recover", vm, "-o", out, "--quiet"}, recKeyArgs(fx)...)...)
		if code != c.code {
			t.Fatalf("%s: exit %d, want %d: %s", c.r.Negative, code, c.code, stderr)
		}
		if n := recNames(t, out); len(n) != 0 {
			t.Fatalf("%s: OUTDIR holds %v", c.r.Negative, n)
		}
		after := recSums(t, vm)
		for k, v := range before {
			if after[k] != v {
				t.Fatalf("%s: input %s changed", c.r.Negative, k)
			}
		}
	}
}

// A run cancelled half-way (as SIGINT does, through the context) exits
// 130 and leaves no output file.
func TestRecoverCLICancel(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Size: 8 << 20, Seed: 70})
	vm := filepath.Join(fx.Dir, fixtures.VMDir)
	out := filepath.Join(t.TempDir(), "out")
	orig := recoverRun
	defer func() { recoverRun = orig }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	recoverRun = func(ctx context.Context, p *recover.Plan, out string) (*recover.Report, error) {
		p.SetProgress(func(p recover.Progress) {
			if p.Done > p.Total/3 {
				cancel() // what SIGINT does to the command's context
			}
		})
		return orig(ctx, p, out)
	}
	var stdout, stderr bytes.Buffer
	code := runContext(ctx, append([]string{"vmcrypt", "recover", vm, "-o", out, "--format", "raw"}, recKeyArgs(fx)...), &stdout, &stderr)
	if code != exitInterrupted {
		t.Fatalf("exit %d, want %d: %s", code, exitInterrupted, stderr.String())
	}
	if n := recNames(t, out); len(n) != 0 {
		t.Fatalf("OUTDIR holds %v", n)
	}
}

func TestRecoverCLIUsage(t *testing.T) {
	for _, args := range [][]string{
		{"recover"},
		{"recover", "x"},
		{"recover", "x", "-o", "y", "--format", "qcow2"},
		{"recover", "x", "-o", "y", "--jobs", "-1"},
	} {
		if code, _, _ := runCLI(t, args...); code != exitUsage {
			t.Fatalf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
}

// No key at all (and no terminal to ask on): exit 4 naming the key the VM
// needs, for a passphrase VM as for a key-provider VM; nothing written.
func TestRecoverCLINoKey(t *testing.T) {
	for i, p := range []string{fixtures.ProviderPassphrase, fixtures.ProviderKMS} {
		want := exitKeyNotFound
		fx := recFixture(t, fixtures.Recipe{Provider: p, Seed: uint64(60 + i)})
		out := filepath.Join(t.TempDir(), "out")
		code, _, stderr := runCLI(t, "recover", filepath.Join(fx.Dir, fixtures.VMDir), "-o", out)
		if code != want {
			t.Fatalf("%s: exit %d, want %d: %s", p, code, want, stderr)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%s: OUTDIR was created", p)
		}
	}
}
