//go:build !unix && !windows

package outfile

import "os"

// lockSupported is false here: RemoveStale then removes nothing.
const lockSupported = false

func lock(f *os.File) error { return nil }

// FreeSpace is unknown here.
func FreeSpace(dir string) (int64, bool) { return 0, false }
