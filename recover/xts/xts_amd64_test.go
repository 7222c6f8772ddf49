//go:build amd64 && !purego

package xts

import (
	"os"
	"strings"
	"testing"
)

// TestCPUDetectionMatchesCPUInfo checks the run-time choice against the
// kernel's view of the CPU: every kernel the flags allow must be offered, so
// that on this machine (aes, vaes, vpclmulqdq, avx2, avx512f, avx512bw) the
// tests really run all four paths and the fastest is the one in use.
func TestCPUDetectionMatchesCPUInfo(t *testing.T) {
	if strings.Contains(os.Getenv("GODEBUG"), "cpu.") {
		t.Skip("GODEBUG turns CPU features off on purpose")
	}
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skipf("no /proc/cpuinfo: %v", err)
	}
	flags := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			for _, f := range strings.Fields(v) {
				flags[f] = true
			}
			break
		}
	}
	has := map[impl]bool{}
	for _, im := range availableImpls() {
		has[im] = true
	}
	want := map[impl]bool{
		implGeneric: true,
		implAESNI:   flags["aes"],
		implVAES256: flags["aes"] && flags["avx2"] && flags["vaes"] && flags["vpclmulqdq"],
		implVAES512: flags["aes"] && flags["avx512f"] && flags["avx512bw"] && flags["vaes"] && flags["vpclmulqdq"],
	}
	for im, w := range want {
		if has[im] != w {
			t.Errorf("%s: offered %v, /proc/cpuinfo says %v", im, has[im], w)
		}
	}
	t.Logf("paths tested here: %v; in use: %s", availableImpls(), Implementation())
}
