//go:build unix

package outfile

import (
	"os"

	"golang.org/x/sys/unix"
)

const lockSupported = true

// lock takes an exclusive, non-blocking lock on f, held until f is closed.
func lock(f *os.File) error {
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
}

// FreeSpace returns the bytes available to this user on dir's file system.
func FreeSpace(dir string) (int64, bool) {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return 0, false
	}
	return int64(fs.Bavail) * int64(fs.Bsize), true
}
