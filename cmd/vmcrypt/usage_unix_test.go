//go:build unix

package main

import (
	"os"
	"syscall"
	"testing"
)

// diskUsage is the space a file takes on disk (blocks allocated).
func diskUsage(t testing.TB, fi os.FileInfo) int64 {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Fatal("no block count for", fi.Name())
	}
	return st.Blocks * 512
}
