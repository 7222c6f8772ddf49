package vmdk

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// fileHoles reports, for a flat extent file, where its holes are
// (SEEK_DATA/SEEK_HOLE), so that a thin flat disk maps as Zero runs and
// exports stay fast and sparse. ok is false when the file or the file
// system cannot tell; the caller then treats everything as data.
// lseek's file position is never used by vmdk (reads are pread), so
// concurrent calls are harmless.
func fileHoles(f io.ReaderAt, pos int64) (dataAt, holeAt int64, ok bool) {
	of, isFile := f.(*os.File)
	if !isFile {
		return 0, 0, false
	}
	d, err := of.Seek(pos, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return -1, -1, true // no data after pos
	}
	if err != nil {
		return 0, 0, false
	}
	if d > pos {
		return d, pos, true
	}
	h, err := of.Seek(pos, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, false
	}
	return pos, h, true
}
