package vmdk

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing p's range of dst to disk
// now (sync_file_range with SYNC_FILE_RANGE_WRITE: it does not wait for
// the data to reach the disk). Outputs are fsynced before they are renamed;
// writing back as the copy goes keeps that final fsync short instead of a
// serial flush of the whole file at the end. Best effort: errors are left
// to the fsync, which reports them.
func startWriteback(dst io.WriterAt, off, n int64) {
	if f, ok := dst.(*os.File); ok {
		_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
	}
}
