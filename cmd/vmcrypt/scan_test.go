package main

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/recover/scan"
)

func TestScanCommand(t *testing.T) {
	root := t.TempDir()
	if code, _, stderr := runCLI(t, "fixture", filepath.Join(root, "enc"), "--provider", "passphrase", "--size", "1M"); code != exitOK {
		t.Fatalf("fixture: %d %s", code, stderr)
	}
	if code, _, stderr := runCLI(t, "fixture", filepath.Join(root, "part"), "--provider", "passphrase", "--size", "1M", "--partial"); code != exitOK {
		t.Fatalf("fixture: %d %s", code, stderr)
	}
	code, stdout, _ := runCLI(t, "scan", root, "--json")
	if code != exitOK {
		t.Fatalf("scan exit %d", code)
	}
	var rep scan.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Summary.VMs != 2 || rep.Summary.Encrypted != 1 || rep.Summary.Exposed != 1 {
		t.Fatalf("summary %+v", rep.Summary)
	}
	// Text output: exit 0 whatever was found, with the exposed file named
	// once (it was printed twice: an EXPOSED line and its table row).
	code, stdout, _ = runCLI(t, "scan", root)
	if code != exitOK || !regexp.MustCompile(`part/vm/fixture\.vmdk +disk +EXPOSED`).MatchString(stdout) || !strings.Contains(stdout, "SUMMARY") {
		t.Fatalf("scan text: exit %d\n%s", code, stdout)
	}
	if n := strings.Count(stdout, "part/vm/fixture.vmdk"); n != 1 {
		t.Fatalf("the exposed disk is named %d times, want once:\n%s", n, stdout)
	}
	if code, _, _ := runCLI(t, "scan"); code != exitUsage {
		t.Errorf("scan without DIR: exit %d", code)
	}
	if code, _, _ := runCLI(t, "scan", filepath.Join(root, "missing")); code != exitFailure {
		t.Errorf("scan of a missing DIR: exit %d", code)
	}
}

var updateScanGolden = flag.Bool("update-scan-golden", false, "rewrite testdata/scan-fixtures.golden")

// TestScanGolden: the text report of scanning the checked-in fixtures
// (23 VMs, key material beside them) is stable.
func TestScanGolden(t *testing.T) {
	code, stdout, stderr := runCLI(t, "scan", filepath.Join("..", "..", "fixtures", "testdata"))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	golden := filepath.Join("testdata", "scan-fixtures.golden")
	if *updateScanGolden {
		if err := os.WriteFile(golden, []byte(stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if stdout != string(want) {
		t.Fatalf("scan output differs from %s (run with -update-scan-golden after checking it):\n%s", golden, stdout)
	}
}
