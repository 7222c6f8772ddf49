// Package mount serves a set of read-only files through FUSE.
//
// # What it serves
//
// Mount takes a list of [File] values (a name, an exact size, an
// [io.ReaderAt] safe for concurrent use, and optionally the allocated runs of
// data) and shows them in a folder. Nothing is ever written: the file system
// is mounted read-only, and every write, create, truncate or attribute change
// fails with EROFS. Reads of the ranges outside the allocated runs (holes)
// return zeros without calling the ReaderAt, and lseek SEEK_DATA/SEEK_HOLE
// follow the runs, so sparse-aware tools (cp --sparse, qemu-img, fio) skip
// the holes.
//
// # Speed
//
// The kernel page cache is kept between opens (the files never change),
// readahead is on (4 MiB) and requests are as large as the kernel allows
// (1 MiB on Linux 4.20 and later). Requests are served concurrently.
//
// # Faults
//
// A ReaderAt that fails (or panics) on a range makes that read fail with EIO;
// the failure is reported through [Options.Log] with the file name and the
// offset, other ranges keep working and the server never exits by itself.
//
// # Mount points
//
// The mount point must be an existing empty folder ([ErrNotDir],
// [ErrNotEmpty]). A mount point left behind by a killed process answers
// "transport endpoint is not connected"; Mount detects it and returns
// [ErrStaleMount] with the command that clears it.
//
// # Platforms
//
// FUSE is served on Linux (fuse3, /dev/fuse; root or fusermount3). Darwin
// builds through macFUSE but is untested. On other systems Mount returns an
// error wrapping [ErrUnsupported].
package mount

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Errors callers branch on. Every error Mount returns wraps one of these or
// an I/O error from the system.
var (
	// ErrUnsupported: FUSE is not available on this operating system.
	// It wraps errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("mount: FUSE is not supported on this system: %w", errors.ErrUnsupported)
	// ErrNoFUSE: the FUSE device or helper is missing (install fuse3).
	ErrNoFUSE = errors.New("mount: FUSE is not available")
	// ErrNotDir: the mount point does not exist or is not a folder.
	ErrNotDir = errors.New("mount point is not a folder")
	// ErrNotEmpty: the mount point holds files.
	ErrNotEmpty = errors.New("mount point is not empty")
	// ErrStaleMount: the mount point is a FUSE mount whose server died.
	ErrStaleMount = errors.New("stale mount point (transport endpoint is not connected)")
	// ErrBadFile: a File has an invalid name, size or allocation map, or two
	// files share a name.
	ErrBadFile = errors.New("invalid file for mount")
)

// Limits on what Mount accepts.
const (
	// MaxNameLen is the longest name of one path component, in bytes.
	MaxNameLen = 255
	// MaxDepth is the deepest folder nesting of a File name.
	MaxDepth = 8
	// MaxFiles is the most files one mount serves.
	MaxFiles = 1 << 16
)

// Run is a range of allocated data [Off, Off+Len) in a file.
type Run struct{ Off, Len int64 }

// End is the offset just past the run.
func (r Run) End() int64 { return r.Off + r.Len }

// File is one file to serve.
type File struct {
	// Name is a slash-separated relative path ("DISK.raw",
	// "snapshots/DISK@1.raw"). Folders are made as needed.
	Name string
	// Size is the exact size in bytes.
	Size int64
	// Data holds the bytes; it must be safe for concurrent use. A read of
	// [off, off+n) within Size must return n bytes or an error.
	Data io.ReaderAt
	// Allocated lists the ranges that hold data, sorted, non-overlapping,
	// within Size. Everything outside reads as zeros without calling Data.
	// nil means the whole file is data; an empty non-nil slice means the
	// file is one hole.
	Allocated []Run
	// ModTime is shown as the file's times; zero means the mount time.
	ModTime time.Time
}

// Options tune a mount. The zero value is a private, read-only mount.
type Options struct {
	// AllowOther lets other users read the mount (FUSE allow_other; needs
	// root or user_allow_other in /etc/fuse.conf).
	AllowOther bool
	// FsName is the source shown in /proc/mounts and df; default "vmcrypt".
	FsName string
	// Log, if set, receives events as a name and key/value pairs:
	// "read error" (file, offset, length, err), "panic" (file, offset,
	// value), "unmount forced" (dir, err), "fuse" (msg). It is called from
	// many goroutines at once.
	Log func(event string, args ...any)
	// ReadAheadKB, if > 0, raises the kernel readahead of the mount to this
	// many KiB after mounting (through /sys/class/bdi; needs root, failures
	// are logged and ignored). 0 uses DefaultReadAheadKB; < 0 keeps the
	// kernel default (128 KiB).
	ReadAheadKB int
}

// DefaultReadAheadKB is the readahead Mount sets when Options.ReadAheadKB is
// 0: four 1 MiB requests in flight, so a Data that decrypts works on several
// cores during a sequential read.
const DefaultReadAheadKB = 4096

func (o *Options) log(event string, args ...any) {
	if o.Log != nil {
		o.Log(event, args...)
	}
}

// validate checks the files and returns them with normalised runs (sorted,
// adjacent runs merged, empty runs dropped). It never modifies the caller's
// slices.
func validate(files []File) ([]File, error) {
	if len(files) > MaxFiles {
		return nil, fmt.Errorf("%w: %d files, at most %d", ErrBadFile, len(files), MaxFiles)
	}
	out := make([]File, len(files))
	seen := make(map[string]bool, len(files)) // file names
	dirs := make(map[string]bool)             // folder names
	for i, f := range files {
		if err := checkName(f.Name); err != nil {
			return nil, err
		}
		if f.Size < 0 {
			return nil, fmt.Errorf("%w: %q: negative size %d", ErrBadFile, f.Name, f.Size)
		}
		if f.Data == nil && (f.Size > 0 && (f.Allocated == nil || len(f.Allocated) > 0)) {
			return nil, fmt.Errorf("%w: %q: no data", ErrBadFile, f.Name)
		}
		if seen[f.Name] || dirs[f.Name] {
			return nil, fmt.Errorf("%w: %q: name used twice", ErrBadFile, f.Name)
		}
		seen[f.Name] = true
		parts := strings.Split(f.Name, "/")
		for j := 1; j < len(parts); j++ {
			d := strings.Join(parts[:j], "/")
			if seen[d] {
				return nil, fmt.Errorf("%w: %q: %q is a file", ErrBadFile, f.Name, d)
			}
			dirs[d] = true
		}
		runs, err := normalise(f.Name, f.Size, f.Allocated)
		if err != nil {
			return nil, err
		}
		f.Allocated = runs
		out[i] = f
	}
	return out, nil
}

func checkName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty name", ErrBadFile)
	}
	parts := strings.Split(name, "/")
	if len(parts) > MaxDepth+1 {
		return fmt.Errorf("%w: %q: deeper than %d folders", ErrBadFile, name, MaxDepth)
	}
	for _, p := range parts {
		switch {
		case p == "" || p == "." || p == "..":
			return fmt.Errorf("%w: %q: bad path component %q", ErrBadFile, name, p)
		case len(p) > MaxNameLen:
			return fmt.Errorf("%w: %q: component longer than %d bytes", ErrBadFile, name, MaxNameLen)
		case strings.ContainsRune(p, 0):
			return fmt.Errorf("%w: %q: NUL in name", ErrBadFile, name)
		}
	}
	return nil
}

// normalise checks runs and merges adjacent ones. nil stays nil (all data).
func normalise(name string, size int64, runs []Run) ([]Run, error) {
	if runs == nil {
		return nil, nil
	}
	out := make([]Run, 0, len(runs))
	var end int64
	for i, r := range runs {
		if r.Off < 0 || r.Len < 0 || r.Off > size || r.Len > size-r.Off {
			return nil, fmt.Errorf("%w: %q: run %d [%d,+%d) outside size %d", ErrBadFile, name, i, r.Off, r.Len, size)
		}
		if r.Off < end {
			return nil, fmt.Errorf("%w: %q: run %d at %d overlaps or is out of order (previous ends at %d)", ErrBadFile, name, i, r.Off, end)
		}
		if r.Len == 0 {
			continue
		}
		if n := len(out); n > 0 && out[n-1].End() == r.Off {
			out[n-1].Len += r.Len
		} else {
			out = append(out, r)
		}
		end = r.End()
	}
	return out, nil
}

// allocatedBytes is the number of data bytes (for st_blocks).
func allocatedBytes(f *File) int64 {
	if f.Allocated == nil {
		return f.Size
	}
	var n int64
	for _, r := range f.Allocated {
		n += r.Len
	}
	return n
}

// firstRun returns the index of the first run that ends after off.
func firstRun(runs []Run, off int64) int {
	i, _ := slices.BinarySearchFunc(runs, off, func(r Run, off int64) int {
		if r.End() <= off {
			return -1
		}
		return 1
	})
	return i
}

// readError is a failed read of a File's Data, as logged and returned by
// readFile.
type readError struct {
	File   string
	Offset int64 // where the failed Data.ReadAt started
	Len    int
	Err    error
}

func (e *readError) Error() string {
	return fmt.Sprintf("read %s at offset %d (+%d): %v", e.File, e.Offset, e.Len, e.Err)
}

func (e *readError) Unwrap() error { return e.Err }

// errShortRead is a Data that returned fewer bytes than asked with no error,
// or io.EOF before the file's Size.
var errShortRead = errors.New("data ended before the file size")

// readFile fills p with the bytes of f at off (off < f.Size, off+len(p) <=
// f.Size): zeros for holes, Data for runs. It never returns a short read
// without an error.
func readFile(f *File, p []byte, off int64) error {
	if f.Allocated == nil {
		return readData(f, p, off)
	}
	runs := f.Allocated
	i := firstRun(runs, off)
	for len(p) > 0 {
		if i >= len(runs) || runs[i].Off >= off+int64(len(p)) {
			clear(p)
			return nil
		}
		r := runs[i]
		if r.Off > off { // hole before the run
			n := r.Off - off
			clear(p[:n])
			p, off = p[n:], r.Off
		}
		n := min(r.End()-off, int64(len(p)))
		if err := readData(f, p[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+n
		i++
	}
	return nil
}

func readData(f *File, p []byte, off int64) error {
	n, err := f.Data.ReadAt(p, off)
	if n == len(p) {
		return nil // io.EOF with a full read is fine
	}
	if err == nil || err == io.EOF {
		err = errShortRead
	}
	return &readError{File: f.Name, Offset: off, Len: len(p), Err: err}
}

// Whence values of lseek for holes (Linux and Darwin agree).
const (
	seekData = 3
	seekHole = 4
)

// errNoMore is ENXIO from seekFile: no data (or hole) at or after the offset.
var errNoMore = errors.New("no more data")

// seekFile answers SEEK_DATA and SEEK_HOLE from off, as lseek(2) does: the
// end of the file is an implicit hole, and an offset at or past the end is
// errNoMore.
func seekFile(f *File, off int64, whence int) (int64, error) {
	if off < 0 || off >= f.Size {
		return 0, errNoMore
	}
	switch whence {
	case seekData:
		if f.Allocated == nil {
			return off, nil
		}
		i := firstRun(f.Allocated, off)
		if i >= len(f.Allocated) {
			return 0, errNoMore
		}
		return max(off, f.Allocated[i].Off), nil
	case seekHole:
		if f.Allocated == nil {
			return f.Size, nil
		}
		i := firstRun(f.Allocated, off)
		if i >= len(f.Allocated) || f.Allocated[i].Off > off {
			return off, nil // off is in a hole
		}
		// Runs are merged, so the end of this run starts a hole.
		return f.Allocated[i].End(), nil
	}
	return 0, fmt.Errorf("whence %d", whence)
}
