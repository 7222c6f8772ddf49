package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/recover"
)

// TestRecoverCheckedInFixtures runs `vmcrypt recover` on every checked-in
// fixture (fixtures/testdata) with its secrets as a user would pass them,
// and asserts the exit code its fixture.json expects and, when it opens,
// the sha256 of the recovered disk, .nvram and .vswp in
// recover-report.json.
func TestRecoverCheckedInFixtures(t *testing.T) {
	root := filepath.Join("..", "..", "fixtures", "testdata")
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		dir := filepath.Join(root, e.Name())
		m, err := fixtures.LoadManifest(dir)
		if err != nil {
			continue
		}
		n++
		t.Run(e.Name(), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			args := []string{"recover", filepath.Join(dir, fixtures.VMDir), "-o", out}
			if p := m.Secrets.PassphraseFile; p != "" {
				args = append(args, "--passphrase-file", filepath.Join(dir, p))
			}
			if p := m.Secrets.KEKFile; p != "" {
				args = append(args, "--kek", filepath.Join(dir, p))
			}
			if p := m.Secrets.NKPBackup; p != "" {
				args = append(args, "--nkp-backup", filepath.Join(dir, p), "--nkp-password-file", filepath.Join(dir, m.Secrets.NKPPasswordFile))
			}
			code, _, stderr := runCLI(t, args...)
			if code != m.ExitCode {
				t.Fatalf("exit %d, fixture.json expects %d (%s): %s", code, m.ExitCode, m.Expect, stderr)
			}
			if code != 0 {
				return
			}
			b, err := os.ReadFile(filepath.Join(out, "recover-report.json"))
			if err != nil {
				t.Fatal(err)
			}
			var rep recover.Report
			if err := json.Unmarshal(b, &rep); err != nil {
				t.Fatal(err)
			}
			if len(rep.Disks) != 1 || (rep.Disks[0].ContentSHA256 == m.SHA256.Disk) == (m.Tamper != nil) {
				t.Fatalf("disks %+v, manifest disk %s, tampered %v", rep.Disks, m.SHA256.Disk, m.Tamper != nil)
			}
			sums := map[string]string{}
			for _, o := range rep.Outputs {
				sums[o.File] = o.SHA256
			}
			if sums[m.Recipe.Name+".nvram"] != m.SHA256.NVRAM || (m.SHA256.VSWP != "" && sums[m.Recipe.Name+".vswp"] != m.SHA256.VSWP) ||
				(m.SHA256.VMSN != "" && sums[m.Recipe.Name+"-Snapshot1.vmsn"] != m.SHA256.VMSN) {
				t.Fatalf("data files %v, manifest %+v", sums, m.SHA256)
			}
		})
	}
	if n < 20 {
		t.Fatalf("only %d checked-in fixtures found", n)
	}
}
