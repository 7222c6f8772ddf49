package vmdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
)

// Writing VMDK files
//
// Write stores a virtual disk, given as an io.ReaderAt plus an allocation
// map ([]Run), in one of four subformats:
//
//   - monolithicSparse: one hosted sparse file (KDMV header version 1,
//     embedded descriptor, redundant and primary grain directories, all
//     grain tables preallocated, grains appended in virtual order), the
//     layout VMware and qemu create.
//   - twoGbMaxExtentSparse: a descriptor file plus NAME-s001.vmdk,
//     NAME-s002.vmdk, ... sparse extents (no embedded descriptor) of
//     SplitSize bytes each, the last one shorter.
//   - monolithicFlat: a descriptor file plus NAME-flat.vmdk, the raw disk,
//     with holes left as file holes.
//   - streamOptimized: VMware's GD_AT_END stream (KDMV version 3, flags
//     0x30001, header gdOffset all ones): compressed grains with markers,
//     then GT markers + grain tables, a GD marker + grain directory, a
//     footer marker + footer (the header with the real gdOffset) and an
//     end-of-stream marker.
//
// Which bytes are stored: Data runs only. Bytes outside every run are
// holes (unallocated: zeros, or the parent's data in a delta). A Zero run
// becomes zeroed grains (grain-table entry 1, header flag bit 2) in sparse
// files, a hole in flat files, and nothing in a stream (or compressed zero
// grains when the disk has a parent, since a stream cannot mark a grain
// zeroed). A grain that holds any Data byte is stored whole; its bytes
// outside Data runs are written as zeros. Without a Transform, a grain that
// reads as all zeros is treated like a Zero run, so outputs stay sparse.
//
// Every file is written to a temporary name in the destination folder
// (package outfile: locked, so that a later run removes the temporaries of
// a killed one), synced, checked (headers and directories read back), and
// renamed only when all of them are complete; on any failure or when ctx
// is done every temporary file is removed. Existing destination files are
// refused unless Overwrite is set.

// Subformats Write can produce.
const (
	SubformatMonolithicSparse     = "monolithicSparse"
	SubformatMonolithicFlat       = "monolithicFlat"
	SubformatTwoGbMaxExtentSparse = "twoGbMaxExtentSparse"
	SubformatStreamOptimized      = "streamOptimized"
)

// Writer defaults and limits.
const (
	// DefaultGrainSize is the grain of sparse and stream files (128 sectors,
	// VMware's and qemu's default).
	DefaultGrainSize = 64 << 10
	// DefaultSplitSize is the extent size of twoGbMaxExtentSparse disks:
	// 4192256 sectors (2 GiB - 1 MiB), what VMware Workstation writes.
	DefaultSplitSize = 4192256 * SectorSize
	// MaxWriteGrainSize is the largest grain Write accepts (1 MiB).
	MaxWriteGrainSize = 1 << 20
	// MaxWriteSize is the largest disk Write accepts: 62 TiB, VMware's
	// limit (the grain tables of a monolithicSparse file use 4 bytes per
	// grain in memory while writing: 64 MiB per TiB at 64 KiB grains).
	MaxWriteSize = 62 << 40
	// maxWriteJobs caps the worker count.
	maxWriteJobs = 256
	// flatChunk is the unit of work for flat files.
	flatChunk = 1 << 20
)

// ParentInfo names the parent of a delta (snapshot) disk.
type ParentInfo struct {
	CID          uint32 // the parent's CID, written as parentCID
	FileNameHint string // parent descriptor path, relative to the delta's folder
}

// WriteOptions configures Write. The zero value (or nil) writes a
// monolithicSparse disk with 64 KiB grains on all cores.
type WriteOptions struct {
	// Subformat is one of the Subformat* constants; "" means
	// monolithicSparse.
	Subformat string
	// GrainSize is the grain in bytes for sparse and stream files: a power
	// of two from 4 KiB to MaxWriteGrainSize; 0 means DefaultGrainSize.
	GrainSize int64
	// SplitSize is the extent size of twoGbMaxExtentSparse disks, a
	// multiple of GrainSize; 0 means DefaultSplitSize.
	SplitSize int64
	// CID is the content id to write; 0 picks a random one (NewCID).
	CID uint32
	// EncryptionKeys, when not "", is written as the descriptor header line
	// encryptionKeys="...".
	EncryptionKeys string
	// IOFilters, when not "", is written as ddb.iofilters (e.g.
	// "vmwarevmcrypt").
	IOFilters string
	// Parent makes the disk a delta: parentCID and parentFileNameHint are
	// written, holes show the parent, and every run must cover whole
	// grains. monolithicFlat disks cannot have a parent.
	Parent *ParentInfo
	// DDB holds extra ddb.* entries, written in order after the defaults
	// they replace (ddb.virtualHWVersion, ddb.geometry.*, ddb.adapterType).
	DDB []Field
	// Transform, when set, is applied to every stored grain before it is
	// written (or compressed): Transform(buf, buf, off) with dst and src
	// the same slice, off the virtual byte offset of buf[0], len(buf) a
	// multiple of 512 and at most GrainSize (flat files: 1 MiB). It is
	// called from several goroutines at once and must not keep buf. With a
	// Transform, flat files are written whole (every sector is stored) and
	// all-zero grains are stored like any other.
	Transform func(dst, src []byte, off int64)
	// Jobs is the number of worker goroutines (reading, transforming,
	// compressing); 0 means runtime.GOMAXPROCS(0).
	Jobs int
	// Progress, when set, is called from one goroutine at a time with the
	// virtual bytes finished so far and the disk size (rounded up to a
	// sector).
	Progress Progress
	// Overwrite allows replacing existing destination files.
	Overwrite bool
}

// Write stores the first size bytes of src as a VMDK at path (the
// descriptor or monolithic file; extent files go beside it). runs lists
// what is stored, sorted by Off and not overlapping, each Data or Zero
// (Level is ignored); a nil runs means one Data run over the whole disk.
// A size that is not a multiple of 512 is padded with zeros to the next
// sector. Errors wrap os errors of the source or destination, or describe
// bad arguments; no file is left behind on failure.
func Write(ctx context.Context, path string, src io.ReaderAt, size int64, runs []Run, opts *WriteOptions) error {
	var o WriteOptions
	if opts != nil {
		o = *opts
	}
	outfile.RemoveStale(filepath.Dir(path))
	w, err := newDiskWriter(ctx, path, src, size, runs, &o)
	if err != nil {
		return fmt.Errorf("vmdk: write %s: %w", path, err)
	}
	if err := w.run(); err != nil {
		w.abort()
		return fmt.Errorf("vmdk: write %s: %w", path, err)
	}
	return nil
}

// diskWriter holds one Write call.
type diskWriter struct {
	ctx      context.Context // cancels the write
	path     string
	dir      string
	base     string // file name without .vmdk
	src      io.ReaderAt
	size     int64 // bytes of src to store
	capBytes int64 // size rounded up to a sector
	runs     []Run
	o        *WriteOptions
	grain    int64 // sparse/stream grain; flat: flatChunk
	jobs     int
	zeroFlag bool // a zeroed grain (GTE 1) was written

	temps []*outFile // every file being written, descriptor last
}

// outFile is one destination file written under a temporary name.
type outFile struct {
	final string
	temp  string
	f     *os.File
	t     *outfile.File
}

// OutputFiles returns the base names of the files Write(path, src, size,
// runs, opts) creates in path's folder, the descriptor (or only file)
// first, so that a caller can check them before writing anything.
func OutputFiles(path string, size int64, opts *WriteOptions) []string {
	var o WriteOptions
	if opts != nil {
		o = *opts
	}
	base := strings.TrimSuffix(filepath.Base(path), ".vmdk")
	names := []string{base + ".vmdk"}
	switch o.Subformat {
	case SubformatMonolithicFlat:
		names = append(names, base+"-flat.vmdk")
	case SubformatTwoGbMaxExtentSparse:
		split := o.SplitSize
		if split <= 0 {
			split = DefaultSplitSize
		}
		capBytes := (size + SectorSize - 1) / SectorSize * SectorSize
		for i := int64(0); i < min((capBytes+split-1)/split, MaxExtents); i++ {
			names = append(names, fmt.Sprintf("%s-s%03d.vmdk", base, i+1))
		}
	}
	return names
}

func newDiskWriter(ctx context.Context, path string, src io.ReaderAt, size int64, runs []Run, o *WriteOptions) (*diskWriter, error) {
	if o.Subformat == "" {
		o.Subformat = SubformatMonolithicSparse
	}
	switch o.Subformat {
	case SubformatMonolithicSparse, SubformatMonolithicFlat, SubformatTwoGbMaxExtentSparse, SubformatStreamOptimized:
	default:
		return nil, fmt.Errorf("unknown subformat %q (want monolithicSparse, monolithicFlat, twoGbMaxExtentSparse or streamOptimized)", o.Subformat)
	}
	if size <= 0 || size > MaxWriteSize {
		return nil, fmt.Errorf("disk size %d is not in 1..%d", size, int64(MaxWriteSize))
	}
	if o.GrainSize == 0 {
		o.GrainSize = DefaultGrainSize
	}
	if o.GrainSize < 4096 || o.GrainSize > MaxWriteGrainSize || o.GrainSize&(o.GrainSize-1) != 0 {
		return nil, fmt.Errorf("grain size %d is not a power of two from 4096 to %d", o.GrainSize, MaxWriteGrainSize)
	}
	if o.SplitSize == 0 {
		o.SplitSize = DefaultSplitSize
	}
	if o.SplitSize <= 0 || o.SplitSize%o.GrainSize != 0 {
		return nil, fmt.Errorf("split size %d is not a positive multiple of the grain size %d", o.SplitSize, o.GrainSize)
	}
	if o.Parent != nil && o.Subformat == SubformatMonolithicFlat {
		return nil, errors.New("a monolithicFlat disk cannot have a parent")
	}
	if o.Jobs <= 0 {
		o.Jobs = runtime.GOMAXPROCS(0)
	}
	jobs := min(o.Jobs, maxWriteJobs)
	if strings.HasSuffix(path, string(filepath.Separator)) || filepath.Ext(path) != ".vmdk" {
		return nil, fmt.Errorf("destination %q must be a file name ending in .vmdk", path)
	}
	w := &diskWriter{
		ctx: ctx, path: path, dir: filepath.Dir(path),
		base: strings.TrimSuffix(filepath.Base(path), ".vmdk"),
		src:  src, size: size, capBytes: (size + SectorSize - 1) &^ (SectorSize - 1),
		runs: runs, o: o, grain: o.GrainSize, jobs: jobs,
	}
	if o.Subformat == SubformatMonolithicFlat {
		w.grain = flatChunk
	}
	if w.runs == nil {
		w.runs = []Run{{Off: 0, Len: size, State: Data}}
	}
	if err := w.checkRuns(); err != nil {
		return nil, err
	}
	return w, nil
}

// checkRuns validates the allocation map, and for deltas that every grain
// it touches is covered whole (the rest of a grain would otherwise have to
// come from the parent, which Write cannot read).
func (w *diskWriter) checkRuns() error {
	var prevEnd int64
	var covStart, covEnd int64 = -1, -1
	g := w.o.GrainSize
	checkCov := func() error {
		if covStart < 0 || w.o.Parent == nil {
			return nil
		}
		if covStart%g != 0 || (covEnd%g != 0 && covEnd != w.size) {
			return fmt.Errorf("run %d..%d of a delta disk does not cover whole %d-byte grains", covStart, covEnd, g)
		}
		return nil
	}
	for i, r := range w.runs {
		if r.Len <= 0 || r.Off < prevEnd || r.Off > w.size-r.Len {
			return fmt.Errorf("run %d (%d+%d) is empty, out of order, overlapping or beyond the disk size %d", i, r.Off, r.Len, w.size)
		}
		if r.State != Data && r.State != Zero {
			return fmt.Errorf("run %d has state %v, want data or zero", i, r.State)
		}
		if r.Off != covEnd {
			if err := checkCov(); err != nil {
				return err
			}
			covStart = r.Off
		}
		covEnd = r.Off + r.Len
		prevEnd = covEnd
	}
	return checkCov()
}

// create opens a new temporary file for final name (in w.dir).
func (w *diskWriter) create(final string) (*outFile, error) {
	full := filepath.Join(w.dir, final)
	if !w.o.Overwrite {
		if _, err := os.Lstat(full); err == nil {
			return nil, fmt.Errorf("%s: %w", full, os.ErrExist)
		}
	}
	t, err := outfile.Create(full, 0o644, w.o.Overwrite)
	if err != nil {
		return nil, err
	}
	of := &outFile{final: full, temp: t.Name(), f: t.File, t: t}
	w.temps = append(w.temps, of)
	return of, nil
}

// abort closes and removes every temporary file.
func (w *diskWriter) abort() {
	for _, t := range w.temps {
		t.t.Abort()
	}
	w.temps = nil
}

// commit syncs and closes every file, then renames them in order (extent
// files first, the descriptor or monolithic file last) and syncs the
// folder.
func (w *diskWriter) commit() error {
	for _, t := range w.temps {
		if err := t.f.Sync(); err != nil {
			return err
		}
		if err := t.f.Close(); err != nil {
			t.f = nil
			return err
		}
		t.f = nil
	}
	for i, t := range w.temps {
		if err := os.Rename(t.temp, t.final); err != nil {
			// Files already renamed are complete; remove them so that no
			// half set of extents is left behind.
			for _, d := range w.temps[:i] {
				os.Remove(d.final)
			}
			return err
		}
	}
	w.temps = nil
	if d, err := os.Open(w.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// descriptor builds the descriptor text for the given extent lines.
func (w *diskWriter) descriptor(extents []ExtentLine) ([]byte, error) {
	d := &Descriptor{
		Version:    1,
		Encoding:   "UTF-8",
		CreateType: w.o.Subformat,
		ParentCID:  NoParentCID,
		Extents:    extents,
	}
	d.NewContentID()
	if w.o.CID != 0 {
		d.CID = w.o.CID
		v, _ := d.DDBValue("ddb.longContentID")
		d.SetDDB("ddb.longContentID", v[:24]+fmt.Sprintf("%08x", d.CID))
	}
	d.EncryptionKeys = w.o.EncryptionKeys
	if p := w.o.Parent; p != nil {
		d.ParentCID = p.CID
		d.ParentFileNameHint = p.FileNameHint
	}
	// Geometry as VMware and qemu compute it for IDE-sized disks.
	sectors := w.capBytes / SectorSize
	cyl := min(sectors/(16*63), 16383)
	d.SetDDB("ddb.virtualHWVersion", "4")
	d.SetDDB("ddb.geometry.cylinders", strconv.FormatInt(cyl, 10))
	d.SetDDB("ddb.geometry.heads", "16")
	d.SetDDB("ddb.geometry.sectors", "63")
	d.SetDDB("ddb.adapterType", "ide")
	if w.o.IOFilters != "" {
		d.SetDDB("ddb.iofilters", w.o.IOFilters)
	}
	for _, f := range w.o.DDB {
		d.SetDDB(f.Key, f.Value)
	}
	return d.Bytes()
}
