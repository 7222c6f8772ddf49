//go:build unix

package vmdk

import (
	"syscall"
	"testing"
)

// mkfifo makes a FIFO at path (tests that a FIFO is never opened).
func mkfifo(t testing.TB, path string) {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
}
