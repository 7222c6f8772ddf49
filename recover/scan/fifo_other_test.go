//go:build !unix

package scan

import "testing"

// mkfifo: this OS has no FIFOs in the file system, so the case cannot
// arise here; the test is skipped, saying why.
func mkfifo(t testing.TB, path string) {
	t.Helper()
	t.Skip("no FIFOs on this OS")
}
