// Package vmdk reads VMware virtual disks (VMDK) as a concurrent
// io.ReaderAt with an allocation map, and writes them.
//
// # Reading
//
// Open takes the path of a descriptor file or of a monolithic sparse or
// stream-optimized file and follows parentFileNameHint through the chain
// of snapshot (delta) disks. It supports every extent kind qemu reads:
// FLAT and VMFS (flat data), ZERO, SPARSE (hosted sparse, header versions
// 1-3, with redundant grain directories and zeroed grains), compressed
// stream-optimized grains in all three real layouts, split
// twoGbMaxExtent* disks of any extent size, and the ESXi delta formats
// VMFSSPARSE (COWD) and SESPARSE. Raw device mappings (VMFSRDM, VMFSRAW)
// are refused with ErrUnsupported.
//
// The Disk reads the whole chain; each Link reads one chain member alone,
// as stored (the ciphertext, for an encrypted disk). Allocated reports
// which ranges hold data or zeros and at which level of the chain, so a
// caller can skip holes and, for encrypted chains, decrypt each run with
// the key of the link that holds it.
//
// # Safety
//
// All files are opened read-only. Extent paths and parent hints that are
// absolute or leave the descriptor's folder are refused unless
// OpenOptions.AllowUnsafePaths is set. Every size and count read from a
// file is checked against the file size and a Max constant before use, and
// grain tables are cached in a bounded cache, so memory stays small
// whatever the virtual size.
//
// # Errors
//
// Structure problems wrap ErrCorrupt or ErrUnsupported in a *FormatError
// naming the file, offset and field; a chain whose parentCID does not
// match its parent's CID gives ErrCIDMismatch (which wraps ErrCorrupt).
// Problems vmcrypt could work around (a damaged primary grain directory, an
// unclean shutdown flag, a renamed file) are listed by Link.Warnings.
package vmdk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
)

// OpenOptions adjusts Open. The zero value (or nil) is the safe default.
type OpenOptions struct {
	// AllowUnsafePaths lets extent paths and parent hints be absolute or
	// contain "..".
	AllowUnsafePaths bool
	// AllowCIDMismatch reads a chain whose parentCID differs from the
	// parent's CID (reported as a warning instead of ErrCIDMismatch).
	AllowCIDMismatch bool
	// MaxChain caps the number of links (0: DefaultMaxChain).
	MaxChain int
	// ScanTruncatedStreams reads a streamOptimized file whose footer is
	// missing or damaged (a truncated download) by scanning its grain
	// markers; what was cut off reads as zeros, and a warning says where
	// the scan stopped. Without it such a file is ErrCorrupt.
	ScanTruncatedStreams bool
	// Salvage opens a flat extent whose file is shorter than the
	// descriptor says (a truncated copy): the missing part fails to read
	// (ErrCorrupt), so that a SalvageReader can fill it with zeros and
	// list it. Without it such a disk is ErrCorrupt at open.
	Salvage bool

	meta *int64 // set by Open: map memory of the chain so far
}

// DefaultMaxChain is the default cap on chain length (VMware allows 32
// snapshots per disk).
const DefaultMaxChain = 64

// ExtentInfo summarises one extent of a Link.
type ExtentInfo struct {
	Line      ExtentLine // the descriptor's extent line (synthesised for a bare extent file)
	Path      string     // the file opened ("" for ZERO)
	Start     int64      // virtual byte offset of the extent in its link
	Size      int64      // virtual bytes
	Format    string     // "flat", "zero", "hosted sparse v1", "streamOptimized (...)", "COWD", "SEsparse"
	GrainSize int64      // bytes, 0 when not sparse
}

// Link is one member of a chain: a descriptor and its extents. Its ReadAt
// and Allocated see this link alone.
type Link struct {
	Path           string      // the file opened: descriptor or monolithic file
	Level          int         // 0 = the opened (top) disk, 1 = its parent, ...
	Descriptor     *Descriptor // parsed descriptor (embedded or separate)
	Extents        []ExtentInfo
	CID            uint32
	ParentCID      uint32 // NoParentCID when it has no parent
	GrainSize      int64  // bytes, of its first sparse extent; 0 when flat
	EncryptionKeys string // the descriptor's encryptionKeys text, "" when absent

	size   int64
	exts   []extent
	starts []int64 // virtual start of each extent
	files  []*os.File
	cache  *gtCache
	meta   *int64 // the disk's map memory so far (MaxMetaBytes)

	scanStreams bool // OpenOptions.ScanTruncatedStreams
	salvage     bool // OpenOptions.Salvage

	mu       sync.Mutex
	warnings []string
}

// Disk is an opened virtual disk: the whole chain, top link first. Its
// methods are safe for concurrent use.
type Disk struct {
	links []*Link
}

// Size is the virtual size in bytes (the top link's).
func (d *Disk) Size() int64 { return d.links[0].size }

// Links returns the chain, top link (the opened disk) first.
func (d *Disk) Links() []*Link { return d.links }

// Encrypted reports whether any link of the chain carries a VM-encryption
// mark (encryptionKeys or the vmwarevmcrypt I/O filter).
func (d *Disk) Encrypted() bool {
	for _, l := range d.links {
		if l.Descriptor.Encrypted() {
			return true
		}
	}
	return false
}

// Warnings gathers the warnings of every link.
func (d *Disk) Warnings() []string {
	var w []string
	for _, l := range d.links {
		w = append(w, l.Warnings()...)
	}
	return w
}

// Close closes every file of the chain.
func (d *Disk) Close() error {
	var first error
	for _, l := range d.links {
		if err := l.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// ReadAt reads the virtual disk with the chain applied: a link's data or
// zeroed grains hide its parents; what no link stores reads as zeros.
// It reads len(p) bytes or returns an error (io.EOF past the end).
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	return readAtSize(p, off, d.Size(), func(q []byte, o int64) error { return d.readLevel(0, q, o) })
}

func readAtSize(p []byte, off, size int64, read func([]byte, int64) error) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vmdk: negative offset %d", off)
	}
	if off >= size {
		if len(p) == 0 && off == size {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	if err := read(p[:n], off); err != nil {
		return 0, err
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

func (d *Disk) readLevel(level int, p []byte, off int64) error {
	l := d.links[level]
	for len(p) > 0 {
		if off >= l.size {
			clear(p) // beyond a smaller parent
			return nil
		}
		st, n, err := l.mapAt(off)
		if err != nil {
			return err
		}
		n = min(n, int64(len(p)))
		switch {
		case st == Data:
			err = l.readData(p[:n], off)
		case st == Unallocated && level+1 < len(d.links):
			err = d.readLevel(level+1, p[:n], off)
		default:
			clear(p[:n])
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// Allocated returns the merged allocation map of the chain: Data and Zero
// runs with the Level of the link that holds them, in order; holes are
// omitted. See WalkAllocated for a map too large to hold.
func (d *Disk) Allocated() ([]Run, error) {
	var runs []Run
	err := d.WalkAllocated(func(r Run) error { runs = append(runs, r); return nil })
	if err != nil {
		return nil, err
	}
	return runs, nil
}

// WalkAllocated calls fn for each run of the merged allocation map, in
// order, adjacent runs of the same state and level merged. It stops at
// fn's first error.
func (d *Disk) WalkAllocated(fn func(Run) error) error {
	m := merger{fn: fn}
	if err := d.walkLevel(0, 0, d.Size(), &m); err != nil {
		return err
	}
	return m.flush()
}

func (d *Disk) walkLevel(level int, off, end int64, m *merger) error {
	l := d.links[level]
	end2 := min(end, l.size)
	for off < end2 {
		st, n, err := l.mapAt(off)
		if err != nil {
			return err
		}
		n = min(n, end2-off)
		if st == Unallocated {
			if level+1 < len(d.links) {
				if err := d.walkLevel(level+1, off, off+n, m); err != nil {
					return err
				}
			}
		} else if err := m.add(Run{Off: off, Len: n, State: st, Level: level}); err != nil {
			return err
		}
		off += n
	}
	return nil
}

// merger coalesces adjacent runs of the same state and level.
type merger struct {
	fn  func(Run) error
	cur Run
}

func (m *merger) add(r Run) error {
	if m.cur.Len > 0 && m.cur.Off+m.cur.Len == r.Off && m.cur.State == r.State && m.cur.Level == r.Level {
		m.cur.Len += r.Len
		return nil
	}
	if err := m.flush(); err != nil {
		return err
	}
	m.cur = r
	return nil
}

func (m *merger) flush() error {
	if m.cur.Len == 0 {
		return nil
	}
	r := m.cur
	m.cur = Run{}
	return m.fn(r)
}

// Size is the link's virtual size in bytes.
func (l *Link) Size() int64 { return l.size }

// Warnings lists what was worked around while opening or reading this link.
func (l *Link) Warnings() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.warnings...)
}

func (l *Link) warn(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.warnings {
		if w == s {
			return
		}
	}
	if len(l.warnings) < 100 {
		l.warnings = append(l.warnings, s)
	}
}

// ReadAt reads this link alone, as stored: its data runs as they are in
// the extent files (after inflation), zeros elsewhere. For an encrypted
// disk this is ciphertext.
func (l *Link) ReadAt(p []byte, off int64) (int, error) {
	return readAtSize(p, off, l.size, func(q []byte, o int64) error {
		for len(q) > 0 {
			st, n, err := l.mapAt(o)
			if err != nil {
				return err
			}
			n = min(n, int64(len(q)))
			if st == Data {
				if err := l.readData(q[:n], o); err != nil {
					return err
				}
			} else {
				clear(q[:n])
			}
			q, o = q[n:], o+n
		}
		return nil
	})
}

// Allocated returns this link's own allocation map (Data and Zero runs,
// Level set to the link's level).
func (l *Link) Allocated() ([]Run, error) {
	var runs []Run
	err := l.WalkAllocated(func(r Run) error { runs = append(runs, r); return nil })
	if err != nil {
		return nil, err
	}
	return runs, nil
}

// WalkAllocated calls fn for each run of this link's allocation map.
func (l *Link) WalkAllocated(fn func(Run) error) error {
	m := merger{fn: fn}
	for off := int64(0); off < l.size; {
		st, n, err := l.mapAt(off)
		if err != nil {
			return err
		}
		if st != Unallocated {
			if err := m.add(Run{Off: off, Len: n, State: st, Level: l.Level}); err != nil {
				return err
			}
		}
		off += n
	}
	return m.flush()
}

// AllocatedBytes is the number of virtual bytes this link stores as data.
func (l *Link) AllocatedBytes() (int64, error) {
	var n int64
	err := l.WalkAllocated(func(r Run) error {
		if r.State == Data {
			n += r.Len
		}
		return nil
	})
	return n, err
}

// mapAt maps off within the link; the run never crosses an extent end.
func (l *Link) mapAt(off int64) (State, int64, error) {
	i := sort.Search(len(l.starts), func(i int) bool { return l.starts[i] > off }) - 1
	e := l.exts[i]
	in := off - l.starts[i]
	st, n, err := e.mapAt(in)
	if err != nil {
		return 0, 0, err
	}
	if n <= 0 {
		return 0, 0, fmt.Errorf("vmdk: %s: extent %d mapped an empty run at %d", l.Path, i, in)
	}
	return st, min(n, e.size()-in), nil
}

// readData reads p at off, inside one Data run mapAt reported.
func (l *Link) readData(p []byte, off int64) error {
	i := sort.Search(len(l.starts), func(i int) bool { return l.starts[i] > off }) - 1
	return l.exts[i].readAt(p, off-l.starts[i])
}

func (l *Link) close() error {
	var first error
	for _, e := range l.exts {
		if err := e.close(); err != nil && first == nil {
			first = err
		}
	}
	for _, f := range l.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	l.files = nil
	return first
}

// openLink opens one descriptor or monolithic file and its extents.
// MaxMetaBytes caps the memory a disk's grain directories and table caches
// take, over all its links and extents. A real 64 TiB disk needs a few tens
// of MiB; a hostile descriptor that repeats one huge extent line thousands
// of times would otherwise multiply a legitimate allocation.
const MaxMetaBytes = 512 << 20

var maxMetaBytes int64 = MaxMetaBytes // lowered by tests

// metaBytes is the memory an opened extent holds for its maps.
func metaBytes(e extent) int64 {
	switch x := e.(type) {
	case *sparseExtent:
		return int64(len(x.gd)+len(x.rgd)) * 4
	case *deltaExtent:
		n := int64(len(x.gd)) * 8
		if x.cache != nil {
			n += deltaCacheSlots * x.gtEntries * 8
		}
		return n
	}
	return 0
}

// countMeta adds ext's map memory to the disk's and refuses past
// MaxMetaBytes.
func (l *Link) countMeta(ext extent) error {
	if l.meta == nil {
		return nil
	}
	if *l.meta += metaBytes(ext); *l.meta > maxMetaBytes {
		return unsupportedf(l.Path, -1, "grain maps", "the grain maps of the disk's extents need more than %d MiB of memory", maxMetaBytes>>20)
	}
	return nil
}

func openLink(path string, level int, opts *OpenOptions) (l *Link, err error) {
	l = &Link{Path: path, Level: level, cache: &gtCache{}, scanStreams: opts.ScanTruncatedStreams, salvage: opts.Salvage, meta: opts.meta}
	defer func() {
		if err != nil {
			l.close()
			l = nil
		}
	}()
	f, size, err := openRO(path)
	if err != nil {
		return l, fmt.Errorf("vmdk: %w", err)
	}
	l.files = append(l.files, f)
	var magic [4]byte
	if size >= 4 {
		if err := ReadFull(f, magic[:], 0); err != nil {
			return l, fmt.Errorf("vmdk: read %s: %w", path, err)
		}
	}
	switch {
	case binary.LittleEndian.Uint32(magic[:]) == sparseMagic:
		err = l.openMonolithic(f, size)
	case string(magic[:]) == "COWD":
		err = l.openBareDelta(f, size, ExtentVMFSSparse)
	default:
		err = l.openDescriptorFile(f, size, opts)
	}
	if err != nil {
		return l, err
	}

	l.CID, l.ParentCID = l.Descriptor.CID, l.Descriptor.ParentCID
	l.EncryptionKeys = l.Descriptor.EncryptionKeys
	for _, x := range l.Extents {
		if x.GrainSize > 0 {
			l.GrainSize = x.GrainSize
			break
		}
	}
	return l, nil
}

func openRO(path string) (*os.File, int64, error) {
	// A FIFO or device would block the open or never end: refuse it
	// before opening (and open non-blocking, for one swapped in between).
	if fi, err := os.Stat(path); err == nil && !fi.Mode().IsRegular() {
		return nil, 0, unsupportedf(path, -1, "", "not a regular file")
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, 0, unsupportedf(path, -1, "", "not a regular file")
	}
	return f, fi.Size(), nil
}

// openMonolithic opens a file that is itself a sparse extent, with its
// descriptor embedded (or none). As qemu does, the file itself is the one
// extent, whatever name the embedded descriptor gives it.
func (l *Link) openMonolithic(f io.ReaderAt, size int64) error {
	var hb [sparseHeaderLen]byte
	if err := ReadFull(f, hb[:], 0); err != nil {
		return corruptf(l.Path, 0, "sparse header", "cannot read: %v", err)
	}
	h, err := parseSparseHeader(hb[:], l.Path, 0)
	if err != nil {
		return err
	}
	ext, err := openSparse(f, size, l.Path, -1, l.cache, 0, l.warn, l.scanStreams)
	if err != nil {
		return err
	}
	ext.salvage = l.salvage
	if err := l.countMeta(ext); err != nil {
		return err
	}
	l.exts = append(l.exts, ext)
	line := ExtentLine{Access: AccessRW, Sectors: int64(ext.hdr.Capacity), Type: ExtentSparse, File: filepath.Base(l.Path)}
	if h.DescriptorOffset != 0 && h.DescriptorSize != 0 {
		if h.DescriptorSize > MaxDescriptorSize/SectorSize || int64(h.DescriptorOffset) > size/SectorSize ||
			int64(h.DescriptorOffset+h.DescriptorSize)*SectorSize > size {
			return corruptf(l.Path, 28, "sparse header descriptorOffset", "descriptor of %d sectors at sector %d does not fit the %d-byte file", h.DescriptorSize, h.DescriptorOffset, size)
		}
		buf := make([]byte, h.DescriptorSize*SectorSize)
		if err := ReadFull(f, buf, int64(h.DescriptorOffset)*SectorSize); err != nil {
			return corruptf(l.Path, int64(h.DescriptorOffset)*SectorSize, "embedded descriptor", "cannot read: %v", err)
		}
		d, err := ParseDescriptor(buf, l.Path)
		if err != nil {
			return err
		}
		l.Descriptor = d
		if len(d.Extents) != 1 {
			l.warn(fmt.Sprintf("%s: the embedded descriptor lists %d extents; the file itself is read as the one extent", l.Path, len(d.Extents)))
		} else {
			if d.Extents[0].File != filepath.Base(l.Path) {
				l.warn(fmt.Sprintf("%s: the embedded descriptor names the extent %q: the file was renamed", l.Path, d.Extents[0].File))
			}
			if d.Extents[0].Sectors != int64(ext.hdr.Capacity) {
				l.warn(fmt.Sprintf("%s: the embedded descriptor gives %d sectors, the header %d; the header is used", l.Path, d.Extents[0].Sectors, ext.hdr.Capacity))
			}
			line = d.Extents[0]
			line.Sectors = int64(ext.hdr.Capacity)
		}
	} else {
		l.Descriptor = &Descriptor{Version: 1, ParentCID: NoParentCID, CreateType: "monolithicSparse", Extents: []ExtentLine{line}}
		l.warn(fmt.Sprintf("%s: a sparse extent without an embedded descriptor (part of a split disk?); read alone", l.Path))
	}
	l.starts = []int64{0}
	l.size = ext.size()
	l.Extents = []ExtentInfo{{Line: line, Path: l.Path, Size: ext.size(), Format: ext.format(), GrainSize: ext.grain}}
	return nil
}

// openBareDelta opens a COWD or SEsparse file given directly.
func (l *Link) openBareDelta(f io.ReaderAt, size int64, typ string) error {
	ext, err := openDelta(f, size, l.Path, typ)
	if err != nil {
		return err
	}
	if err := l.countMeta(ext); err != nil {
		return err
	}
	l.exts = append(l.exts, ext)
	l.starts = []int64{0}
	l.size = ext.size()
	line := ExtentLine{Access: AccessRW, Sectors: ext.size() / SectorSize, Type: typ, File: filepath.Base(l.Path)}
	l.Descriptor = &Descriptor{Version: 1, ParentCID: NoParentCID, CreateType: "vmfsSparse", Extents: []ExtentLine{line}}
	l.Extents = []ExtentInfo{{Line: line, Path: l.Path, Size: ext.size(), Format: deltaFormat(typ)}}
	l.warn(fmt.Sprintf("%s: a delta extent opened without its descriptor: its parent is unknown, so what it does not store reads as zeros", l.Path))
	return nil
}

func openDelta(f io.ReaderAt, size int64, name, typ string) (extent, error) {
	if typ == ExtentSESparse {
		return newSESparseExtent(f, size, name)
	}
	return newCOWDExtent(f, size, name)
}

func deltaFormat(typ string) string {
	if typ == ExtentSESparse {
		return "SEsparse"
	}
	return "COWD"
}

// openDescriptorFile parses a text descriptor and opens its extents.
func (l *Link) openDescriptorFile(f *os.File, size int64, opts *OpenOptions) error {
	if size > MaxDescriptorSize {
		return unsupportedf(l.Path, 0, "", "not a VMDK: no sparse header and too large (%d bytes) for a descriptor", size)
	}
	buf := make([]byte, size)
	if err := ReadFull(f, buf, 0); err != nil {
		return fmt.Errorf("vmdk: read %s: %w", l.Path, err)
	}
	if !looksLikeText(buf) {
		return unsupportedf(l.Path, 0, "", "not a VMDK: neither a sparse header nor a text descriptor")
	}
	d, err := ParseDescriptor(buf, l.Path)
	if err != nil {
		return err
	}
	l.Descriptor = d
	if len(d.Extents) == 0 {
		return corruptf(l.Path, -1, "descriptor extents", "the descriptor lists no extent")
	}
	dir := filepath.Dir(l.Path)
	var start int64
	for i, line := range d.Extents {
		n := line.Sectors * SectorSize
		info := ExtentInfo{Line: line, Start: start, Size: n}
		var ext extent
		switch line.Type {
		case ExtentZero:
			ext, info.Format = zeroExtent{n}, "zero"
		case ExtentVMFSRDM, ExtentVMFSRaw:
			return unsupportedf(l.Path, -1, "extent type", "%s extent %q is a raw device mapping: the data is on a LUN, not in a file; copy the LUN (or a flat image of it) instead", line.Type, line.File)
		default:
			p, err := resolvePath(dir, line.File, opts.AllowUnsafePaths)
			if err != nil {
				return fmt.Errorf("vmdk: %s: extent %d: %w", l.Path, i+1, err)
			}
			info.Path = p
			ef, esize, err := openRO(p)
			if err != nil {
				return fmt.Errorf("vmdk: %s: extent %d (%s %q): %w", l.Path, i+1, line.Type, line.File, err)
			}
			l.files = append(l.files, ef)
			switch line.Type {
			case ExtentFlat, ExtentVMFS:
				ext, err = openFlat(ef, esize, p, line.Offset*SectorSize, n, opts.Salvage)
				info.Format = "flat"
			case ExtentSparse:
				var se *sparseExtent
				se, err = openSparse(ef, esize, p, n, l.cache, uint32(i), l.warn, l.scanStreams)
				if err == nil {
					se.salvage = l.salvage
					ext, info.Format, info.GrainSize = se, se.format(), se.grain
				}
			case ExtentVMFSSparse, ExtentSESparse:
				ext, err = openDelta(ef, esize, p, line.Type)
				info.Format = deltaFormat(line.Type)
				if err == nil && ext.size() != n {
					l.warn(fmt.Sprintf("%s: the descriptor gives %d sectors, the delta header %d; using the header's, as qemu does", p, line.Sectors, ext.size()/SectorSize))
				}
			}
			if err != nil {
				return err
			}
		}
		if err := l.countMeta(ext); err != nil {
			return err
		}
		n = ext.size() // a sparse or delta extent's header sizes it
		info.Size = n
		l.exts = append(l.exts, ext)
		l.starts = append(l.starts, start)
		l.Extents = append(l.Extents, info)
		start += n
		if start > MaxSectors*SectorSize {
			return corruptf(l.Path, -1, "descriptor extents", "the extents add up to more than %d sectors", int64(MaxSectors))
		}
	}
	l.size = start
	return nil
}

func looksLikeText(b []byte) bool {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	for _, c := range b[:min(len(b), 4096)] {
		if c < 0x20 && c != '\n' && c != '\r' && c != '\t' {
			return false
		}
	}
	return len(b) > 0
}
