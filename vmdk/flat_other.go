//go:build !linux

package vmdk

import "io"

// fileHoles cannot tell holes on this system: flat extents map as data.
func fileHoles(f io.ReaderAt, pos int64) (dataAt, holeAt int64, ok bool) { return 0, 0, false }
