//go:build !linux

package vmdk

import "io"

// startWriteback is a no-op where sync_file_range does not exist; the
// final fsync writes everything.
func startWriteback(dst io.WriterAt, off, n int64) {}
