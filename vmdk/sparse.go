package vmdk

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// Hosted sparse extents ("KDMV", VMware Virtual Disk Format 1.1, header
// versions 1-3): monolithicSparse, twoGbMaxExtentSparse and, with
// compressed grains, streamOptimized (stream.go).
//
// Header (little-endian), 512 bytes at offset 0 (and, for GD_AT_END
// stream files, again as the footer):
//
//	0  u32 magic "KDMV"      4  u32 version      8  u32 flags
//	12 u64 capacity          20 u64 grainSize    28 u64 descriptorOffset
//	36 u64 descriptorSize    44 u32 numGTEsPerGT 48 u64 rgdOffset
//	56 u64 gdOffset          64 u64 overHead     72 u8  uncleanShutdown
//	73 '\n' ' ' '\r' '\n'    77 u16 compressAlgorithm
//
// Sizes and offsets are in sectors. The grain directory (GD) holds u32
// sector offsets of grain tables (GT); a GT holds numGTEsPerGT u32 sector
// offsets of grains: 0 = not stored here, 1 = zeroed grain.
const (
	sparseMagic     = 0x564d444b // "KDMV"
	sparseHeaderLen = 512

	flagNewlineTest = 1 << 0
	flagRedundantGT = 1 << 1
	flagZeroedGTE   = 1 << 2
	flagCompressed  = 1 << 16
	flagMarkers     = 1 << 17
	knownFlags      = flagNewlineTest | flagRedundantGT | flagZeroedGTE | flagCompressed | flagMarkers

	gdAtEnd = ^uint64(0) // gdOffset of stream files whose GD follows the grains

	compressNone    = 0
	compressDeflate = 1

	// maxGrainSectors caps a grain at 1 MiB (real files use 64 KiB).
	maxGrainSectors = 2048
	// minGrainSectors is the smallest grain the format allows.
	minGrainSectors = 8
	// maxGTEsPerGT is the format's GT size (VMware always writes 512).
	maxGTEsPerGT = 512
	// maxGDEntries caps the grain directory: 64 TiB in 64 KiB grains.
	maxGDEntries = MaxSectors / (128 * maxGTEsPerGT) * 16
	// gtCacheSlots bounds the grain tables a Link keeps decoded (2 KiB each).
	gtCacheSlots = 4096
)

// sparseHeader is a decoded KDMV header.
type sparseHeader struct {
	Version          uint32
	Flags            uint32
	Capacity         uint64
	GrainSize        uint64
	DescriptorOffset uint64
	DescriptorSize   uint64
	NumGTEsPerGT     uint32
	RGDOffset        uint64
	GDOffset         uint64
	OverHead         uint64
	UncleanShutdown  uint8
	NewlineTest      [4]byte
	CompressAlgo     uint16
}

// parseSparseHeader decodes and validates a KDMV header found at file
// offset at (0, or the footer's place).
func parseSparseHeader(b []byte, name string, at int64) (sparseHeader, error) {
	var h sparseHeader
	if len(b) < 79 {
		return h, corruptf(name, at, "sparse header", "%d bytes, want 512", len(b))
	}
	le := binary.LittleEndian
	if m := le.Uint32(b); m != sparseMagic {
		return h, corruptf(name, at, "sparse header magic", "%#08x, want KDMV", m)
	}
	h = sparseHeader{
		Version: le.Uint32(b[4:]), Flags: le.Uint32(b[8:]), Capacity: le.Uint64(b[12:]),
		GrainSize: le.Uint64(b[20:]), DescriptorOffset: le.Uint64(b[28:]), DescriptorSize: le.Uint64(b[36:]),
		NumGTEsPerGT: le.Uint32(b[44:]), RGDOffset: le.Uint64(b[48:]), GDOffset: le.Uint64(b[56:]),
		OverHead: le.Uint64(b[64:]), UncleanShutdown: b[72], CompressAlgo: le.Uint16(b[77:]),
	}
	copy(h.NewlineTest[:], b[73:77])
	switch {
	case h.Version < 1 || h.Version > 3:
		return sparseHeader{}, unsupportedf(name, at+4, "sparse header version", "%d, only 1 to 3 are known", h.Version)
	case h.Flags&^knownFlags != 0:
		return sparseHeader{}, unsupportedf(name, at+8, "sparse header flags", "unknown bits %#x", h.Flags&^knownFlags)
	case h.Flags&flagNewlineTest != 0 && h.NewlineTest != [4]byte{'\n', ' ', '\r', '\n'}:
		return sparseHeader{}, corruptf(name, at+73, "sparse header newline test", "bytes %q, want \"\\n \\r\\n\" (file copied in text mode?)", h.NewlineTest[:])
	case h.Capacity > MaxSectors:
		return sparseHeader{}, corruptf(name, at+12, "sparse header capacity", "%d sectors, more than the %d accepted", h.Capacity, int64(MaxSectors))
	case h.GrainSize < minGrainSectors || h.GrainSize > maxGrainSectors || h.GrainSize&(h.GrainSize-1) != 0:
		return sparseHeader{}, unsupportedf(name, at+20, "sparse header grainSize", "%d sectors, want a power of two from %d to %d", h.GrainSize, minGrainSectors, maxGrainSectors)
	case h.NumGTEsPerGT == 0 || h.NumGTEsPerGT > maxGTEsPerGT:
		return sparseHeader{}, corruptf(name, at+44, "sparse header numGTEsPerGT", "%d, want 1 to %d", h.NumGTEsPerGT, maxGTEsPerGT)
	case h.CompressAlgo != compressNone && h.CompressAlgo != compressDeflate:
		return sparseHeader{}, unsupportedf(name, at+77, "sparse header compressAlgorithm", "%d, only 0 (none) and 1 (deflate) are known", h.CompressAlgo)
	case h.Flags&flagCompressed != 0 && h.CompressAlgo != compressDeflate:
		return sparseHeader{}, unsupportedf(name, at+77, "sparse header compressAlgorithm", "compressed grains with algorithm %d", h.CompressAlgo)
	}
	return h, nil
}

// gdEntries is the number of grain-directory entries the capacity needs.
func (h *sparseHeader) gdEntries() int64 {
	cov := int64(h.GrainSize) * int64(h.NumGTEsPerGT)
	return (int64(h.Capacity) + cov - 1) / cov
}

// sparseExtent reads a hosted sparse or stream-optimized extent file.
type sparseExtent struct {
	f        io.ReaderAt
	name     string
	fileSize int64
	hdr      sparseHeader

	capBytes   int64 // capacity from the header, bytes
	virt       int64 // virtual size of the extent (the descriptor's), bytes
	grain      int64 // grain bytes
	grainSect  int64
	gtes       int64 // entries per grain table
	gd         []uint32
	rgd        []uint32 // redundant GD used as a per-table fallback; nil if none
	gdOff      int64    // byte offsets of the GDs in use, for messages
	rgdOff     int64
	compressed bool
	markers    bool
	footer     bool // GD_AT_END: metadata read from the footer

	cache *gtCache
	id    uint32 // key of this extent in cache
	warn  func(string)

	small      grainCache // inflated grains for reads of part of a grain
	warnedGTE1 atomic.Bool
	// salvage keeps grain-table entries that point past the end of the
	// file (a truncated copy): reading such a grain fails (ErrCorrupt),
	// for a SalvageReader to fill and list.
	salvage bool

	// a stream without its footer, mapped by scanning (scanStream)
	mem              map[int64][]uint32 // grain tables by GD index
	scanned, scanEnd int64              // grains found, byte offset where the scan stopped
}

func (s *sparseExtent) size() int64  { return s.virt }
func (s *sparseExtent) close() error { return nil }

// gtCache is a bounded, lock-free, direct-mapped cache of decoded grain
// tables shared by the extents of one Link.
type gtCache struct {
	slots [gtCacheSlots]atomic.Pointer[gtSlot]
}

type gtSlot struct {
	key uint64
	ent []uint32 // nil: the directory entry has no table
}

func gtKey(id uint32, gdi int64) uint64 { return uint64(id)<<40 | uint64(gdi) }

func (c *gtCache) get(key uint64) (*gtSlot, bool) {
	h := (key*0x9e3779b97f4a7c15)>>52 ^ key
	p := c.slots[h%gtCacheSlots].Load()
	if p != nil && p.key == key {
		return p, true
	}
	return nil, false
}

func (c *gtCache) put(s *gtSlot) {
	h := (s.key*0x9e3779b97f4a7c15)>>52 ^ s.key
	c.slots[h%gtCacheSlots].Store(s)
}

// openSparse opens a KDMV extent. virt is the extent's size from the
// descriptor in bytes (-1: take the header's capacity). warn receives
// recoverable findings (damaged primary structures, unclean shutdown).
func openSparse(f io.ReaderAt, fileSize int64, name string, virt int64, cache *gtCache, id uint32, warn func(string), scan bool) (*sparseExtent, error) {
	if fileSize < sparseHeaderLen {
		return nil, corruptf(name, 0, "sparse header", "file is %d bytes, shorter than the header", fileSize)
	}
	var hb [sparseHeaderLen]byte
	if err := ReadFull(f, hb[:], 0); err != nil {
		return nil, corruptf(name, 0, "sparse header", "cannot read: %v", err)
	}
	h, err := parseSparseHeader(hb[:], name, 0)
	if err != nil {
		return nil, err
	}
	footer := h.GDOffset == gdAtEnd
	var footerErr error
	if footer {
		var fh sparseHeader
		if fh, footerErr = readFooter(f, fileSize, name, h); footerErr == nil {
			h = fh
		} else if h.Flags&flagMarkers == 0 || h.Flags&flagCompressed == 0 {
			return nil, footerErr
		} else if !scan {
			return nil, &TruncatedStreamError{Err: footerErr}
		}
	}
	s := &sparseExtent{
		f: f, name: name, fileSize: fileSize, hdr: h,
		capBytes:   int64(h.Capacity) * SectorSize,
		grain:      int64(h.GrainSize) * SectorSize,
		grainSect:  int64(h.GrainSize),
		gtes:       int64(h.NumGTEsPerGT),
		compressed: h.Flags&flagCompressed != 0,
		markers:    h.Flags&flagMarkers != 0,
		footer:     footer,
		cache:      cache, id: id, warn: warn,
	}
	// The header's capacity sizes the extent, as qemu does: a descriptor
	// line that disagrees would shift every later extent.
	s.virt = s.capBytes
	if virt >= 0 && virt != s.capBytes {
		warn(fmt.Sprintf("%s: the descriptor gives the extent %d sectors, its header %d; using the header's, as qemu does", name, virt/SectorSize, h.Capacity))
	}
	if h.UncleanShutdown != 0 {
		warn(fmt.Sprintf("%s: the header marks an unclean shutdown; data written last may be missing", name))
	}
	n := h.gdEntries()
	if n > maxGDEntries || n*4 > fileSize {
		return nil, corruptf(name, 12, "sparse header capacity", "%d sectors need %d grain-directory entries, more than the %d-byte file can hold", h.Capacity, n, fileSize)
	}
	if footerErr != nil {
		if err := s.scanStream(n); err != nil {
			return nil, err
		}
		warn(fmt.Sprintf("%s: %v; the grain map was rebuilt by scanning the stream: %d grains up to offset %d. Grains written after that point are missing and read as zeros", name, footerErr, s.scanned, s.scanEnd))
		return s, nil
	}
	gd, gdErr := s.readGD(int64(h.GDOffset), n, "grain directory")
	var rgd []uint32
	var rgdErr error
	hasRGD := h.Flags&flagRedundantGT != 0 && h.RGDOffset != 0
	if hasRGD {
		rgd, rgdErr = s.readGD(int64(h.RGDOffset), n, "redundant grain directory")
	}
	s.gdOff, s.rgdOff = int64(h.GDOffset)*SectorSize, int64(h.RGDOffset)*SectorSize
	switch {
	case gdErr == nil && hasRGD && rgdErr == nil:
		s.gd, s.rgd = gd, rgd
	case gdErr == nil:
		s.gd = gd
		if hasRGD {
			warn(fmt.Sprintf("%s: the redundant grain directory is damaged (%v); the primary one is used", name, rgdErr))
		}
	case hasRGD && rgdErr == nil:
		s.gd, s.gdOff, s.rgdOff = rgd, s.rgdOff, s.gdOff
		warn(fmt.Sprintf("%s: the primary grain directory is damaged (%v); the redundant copy at offset %d is used", name, gdErr, s.gdOff))
	case hasRGD:
		return nil, &DamagedGDError{File: name, PrimaryOffset: s.gdOff, RedundantOffset: s.rgdOff, Primary: gdErr, Redundant: rgdErr}
	default:
		return nil, gdErr
	}
	return s, nil
}

// DamagedGDError reports that both copies of a grain directory (or of one
// grain table) are unusable. It wraps ErrCorrupt and both causes.
type DamagedGDError struct {
	File            string
	PrimaryOffset   int64 // byte offset of the primary copy
	RedundantOffset int64 // byte offset of the redundant copy
	Primary         error
	Redundant       error
}

// Error names the file and both offsets with their causes.
func (e *DamagedGDError) Error() string {
	return fmt.Sprintf("%s: corrupt: both grain directories are damaged: primary at offset %d (%v), redundant at offset %d (%v)",
		e.File, e.PrimaryOffset, e.Primary, e.RedundantOffset, e.Redundant)
}

// Unwrap returns ErrCorrupt and both causes.
func (e *DamagedGDError) Unwrap() []error { return []error{ErrCorrupt, e.Primary, e.Redundant} }

// readGD reads and checks a grain directory of n entries at sector sect:
// every entry is 0 or a grain table inside the file past the header.
func (s *sparseExtent) readGD(sect, n int64, what string) ([]uint32, error) {
	off := sect * SectorSize
	if sect <= 0 || sect > s.fileSize/SectorSize || off > s.fileSize-n*4 {
		return nil, corruptf(s.name, 56, what, "at sector %d with %d entries lies outside the %d-byte file", sect, n, s.fileSize)
	}
	raw := make([]byte, n*4) // n*4 <= fileSize, checked above
	if err := ReadFull(s.f, raw, off); err != nil {
		return nil, corruptf(s.name, off, what, "cannot read: %v", err)
	}
	gd := make([]uint32, n)
	last := s.fileSize - s.gtes*4
	for i := range gd {
		e := binary.LittleEndian.Uint32(raw[4*i:])
		if e != 0 && int64(e)*SectorSize > last {
			return nil, corruptf(s.name, off+int64(4*i), what+" entry", "grain table %d at sector %d lies outside the %d-byte file", i, e, s.fileSize)
		}
		gd[i] = e
	}
	return gd, nil
}

// grainLen is the number of bytes of grain gi inside the header capacity.
func (s *sparseExtent) grainLen(gi int64) int64 { return min(s.grain, s.capBytes-gi*s.grain) }

// table returns grain table gdi (nil when the directory has none), reading,
// checking and caching it. A damaged primary table falls back to the
// redundant one; both damaged is a *DamagedGDError.
func (s *sparseExtent) table(gdi int64) ([]uint32, error) {
	if s.mem != nil {
		return s.mem[gdi], nil
	}
	key := gtKey(s.id, gdi)
	if p, ok := s.cache.get(key); ok {
		return p.ent, nil
	}
	var ent []uint32
	var err error
	prim := s.gd[gdi]
	var red uint32
	if s.rgd != nil {
		red = s.rgd[gdi]
	}
	switch {
	case prim == 0 && red == 0:
	case prim == 0:
		ent, err = s.readGT(gdi, red)
		if err == nil {
			s.warn(fmt.Sprintf("%s: grain table %d is missing from the primary grain directory; the redundant copy at sector %d is used", s.name, gdi, red))
		}
	default:
		ent, err = s.readGT(gdi, prim)
		if err != nil && red != 0 && red != prim {
			ent2, err2 := s.readGT(gdi, red)
			if err2 != nil {
				return nil, &DamagedGDError{File: s.name, PrimaryOffset: int64(prim) * SectorSize, RedundantOffset: int64(red) * SectorSize, Primary: err, Redundant: err2}
			}
			s.warn(fmt.Sprintf("%s: primary grain table %d is damaged (%v); the redundant copy at sector %d is used", s.name, gdi, err, red))
			ent, err = ent2, nil
		}
	}
	if err != nil {
		return nil, err
	}
	s.cache.put(&gtSlot{key: key, ent: ent})
	return ent, nil
}

// readGT reads grain table gdi at sector sect and checks every entry that
// maps a grain inside the capacity.
func (s *sparseExtent) readGT(gdi int64, sect uint32) ([]uint32, error) {
	off := int64(sect) * SectorSize
	var buf [maxGTEsPerGT * 4]byte
	raw := buf[:s.gtes*4]
	if err := ReadFull(s.f, raw, off); err != nil {
		return nil, corruptf(s.name, off, "grain table", "cannot read table %d: %v", gdi, err)
	}
	ent := make([]uint32, s.gtes)
	for i := range ent {
		e := binary.LittleEndian.Uint32(raw[4*i:])
		gi := gdi*s.gtes + int64(i)
		if gi*s.grain >= s.capBytes {
			break // past the capacity: ignored
		}
		if e == 1 && s.hdr.Flags&flagZeroedGTE == 0 && !s.warnedGTE1.Swap(true) {
			s.warn(fmt.Sprintf("%s: grain table %d holds the zeroed-grain value 1 though header flag bit 2 is clear; read as zeros (qemu would read sector 1)", s.name, gdi))
		}
		if e > 1 {
			need := s.grainLen(gi)
			if s.compressed {
				need = 13 // at least a marker header and one byte
				if !s.markers {
					need = 2
				}
			}
			if int64(e)*SectorSize > s.fileSize-need && !s.salvage {
				return nil, corruptf(s.name, off+int64(4*i), "grain table entry", "grain %d at sector %d lies outside the %d-byte file", gi, e, s.fileSize)
			}
		}
		ent[i] = e
	}
	return ent, nil
}

func gteState(e uint32) State {
	switch e {
	case 0:
		return Unallocated
	case 1:
		return Zero
	}
	return Data
}

func (s *sparseExtent) mapAt(off int64) (State, int64, error) {
	if off < 0 || off >= s.virt {
		return 0, 0, fmt.Errorf("vmdk: %s: map offset %d outside 0..%d", s.name, off, s.virt)
	}
	if off >= s.capBytes {
		return Unallocated, s.virt - off, nil
	}
	cov := s.gtes * s.grain
	gdi := off / cov
	end := min(s.capBytes, (gdi+1)*cov)
	ent, err := s.table(gdi)
	if err != nil {
		return 0, 0, err
	}
	if ent == nil {
		// unallocated up to the next directory entry with a table
		for j := gdi + 1; j < int64(len(s.gd)) && s.gd[j] == 0 && (s.rgd == nil || s.rgd[j] == 0); j++ {
			end = min(s.capBytes, (j+1)*cov)
		}
		if end == s.capBytes {
			end = s.virt
		}
		return Unallocated, end - off, nil
	}
	gi := off / s.grain
	i := gi - gdi*s.gtes
	st := gteState(ent[i])
	j := i + 1
	for j < s.gtes && gteState(ent[j]) == st {
		j++
	}
	runEnd := min(end, (gdi*s.gtes+j)*s.grain)
	if runEnd == s.capBytes && st == Unallocated {
		runEnd = s.virt
	}
	return st, runEnd - off, nil
}

func (s *sparseExtent) readAt(p []byte, off int64) error {
	if off < 0 || int64(len(p)) > s.capBytes-off {
		return fmt.Errorf("vmdk: %s: read of %d bytes at %d outside the stored range 0..%d", s.name, len(p), off, s.capBytes)
	}
	cov := s.gtes * s.grain
	for len(p) > 0 {
		gdi := off / cov
		ent, err := s.table(gdi)
		if err != nil {
			return err
		}
		gi := off / s.grain
		i := gi - gdi*s.gtes
		if ent == nil || ent[i] <= 1 {
			return fmt.Errorf("vmdk: %s: read at %d: range is not stored data", s.name, off)
		}
		in := off - gi*s.grain
		n := min(int64(len(p)), s.grainLen(gi)-in)
		if s.compressed {
			if err := s.readCompressed(gi, ent[i], p[:n], in); err != nil {
				return err
			}
		} else {
			// extend over grains stored back to back in the file
			fileOff := int64(ent[i])*SectorSize + in
			for n < int64(len(p)) && i+1 < s.gtes && ent[i+1] > 1 && int64(ent[i+1])*SectorSize == fileOff+n {
				i++
				n = min(int64(len(p)), n+s.grainLen(gdi*s.gtes+i))
			}
			if err := ReadFull(s.f, p[:n], fileOff); err != nil {
				return corruptf(s.name, fileOff, "grain", "cannot read %d bytes of grain %d: %v", n, gi, err)
			}
		}
		p = p[n:]
		off += n
	}
	return nil
}

// grainCache keeps a few inflated grains for reads smaller than a grain.
type grainCache struct {
	mu   sync.Mutex
	next int
	gi   [4]int64
	buf  [4][]byte
}

func (c *grainCache) get(gi int64, dst []byte, in int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.buf {
		if c.buf[k] != nil && c.gi[k] == gi {
			copy(dst, c.buf[k][in:])
			return true
		}
	}
	return false
}

func (c *grainCache) put(gi int64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := c.next
	c.next = (c.next + 1) % len(c.buf)
	c.buf[k] = append(c.buf[k][:0], data...)
	c.gi[k] = gi
}
