package main

import (
	"encoding/json"
	"testing"
)

func TestBenchmarkJSON(t *testing.T) {
	code, out, errOut := runCLI(t, "benchmark", "--json", "--seconds", "0.02")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var r benchResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	pos := map[string]float64{
		"seconds_per_test":               r.SecondsPerTest,
		"cores":                          float64(r.Cores),
		"xts_decrypt_gbps_1core":         r.XTSDecryptGBps1Core,
		"xts_decrypt_gbps_all_cores":     r.XTSDecryptGBpsAllCores,
		"pbkdf2_sha1_iterations_per_sec": r.PBKDF2SHA1IterPerSec,
		"inflate_mbps_1core":             r.InflateMBps1Core,
		"recover_100gib_seconds":         r.Recover100GiBSeconds,
	}
	for k, v := range pos {
		if !(v > 0) {
			t.Errorf("%s = %v, want > 0", k, v)
		}
	}
	if r.XTSImplementation == "" || r.Recover100GiBFormula == "" {
		t.Errorf("implementation %q / formula %q empty", r.XTSImplementation, r.Recover100GiBFormula)
	}
	// The estimate is exactly the stated formula.
	if want := float64(100<<30) / (r.XTSDecryptGBpsAllCores * 1e9); r.Recover100GiBSeconds != want {
		t.Errorf("recover_100gib_seconds = %v, formula gives %v", r.Recover100GiBSeconds, want)
	}
}

func TestBenchmarkText(t *testing.T) {
	code, out, _ := runCLI(t, "benchmark", "--seconds", "0.01")
	if code != exitOK || len(out) == 0 {
		t.Fatalf("exit %d, %d bytes of output", code, len(out))
	}
}

func TestBenchmarkBadSeconds(t *testing.T) {
	for _, s := range []string{"0", "-1", "61", "NaN", "abc"} {
		if code, _, _ := runCLI(t, "benchmark", "--seconds", s); code != exitUsage {
			t.Errorf("--seconds %s: exit %d, want %d", s, code, exitUsage)
		}
	}
	if code, _, _ := runCLI(t, "benchmark", "extra"); code != exitUsage {
		t.Errorf("extra argument: exit %d, want %d", code, exitUsage)
	}
}
