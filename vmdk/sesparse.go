package vmdk

import (
	"encoding/binary"
	"io"
)

// SESPARSE extents: the ESXi "seSparse" delta format, read the way qemu's
// block/vmdk.c (vmdk_open_se_sparse) reads it, with the same strict checks
// (the format is not documented by VMware).
//
// Const header (512 bytes at offset 0), u64 little-endian fields, sizes and
// offsets in sectors:
//
//	0   magic 0xcafebabe          8   version 0x0000000200000001
//	16  capacity                  24  grainSize (8)
//	32  grainTableSize (64)       40  flags (0)
//	48  reserved1..4 (0)          80  volatileHeaderOffset
//	88  volatileHeaderSize        96  journalHeaderOffset/Size, journalOffset/Size
//	128 grainDirOffset            136 grainDirSize
//	144 grainTablesOffset         152 grainTablesSize
//	160 freeBitmapOffset/Size     176 backmapOffset/Size
//	192 grainsOffset              200 grainsSize
//	208 304 bytes of zero padding
//
// Volatile header (512 bytes at volatileHeaderOffset): u64 magic 0xcafecafe,
// freeGTNumber, nextTxnSeqNumber, replayJournal (must be 0), 480 zero bytes.
//
// Grain directory: u64 entries, 0 = no table, else 0x10000000_xxxxxxxx with
// the low 32 bits the table's index among the grain tables (tables are
// grainTableSize sectors each, from grainTablesOffset). Grain table: 4096
// u64 entries, the top nibble the type: 0 unallocated (the whole entry must
// be 0), 1 unmapped and 2 zeroed (both read as zeros, hiding the parent),
// 3 allocated, with the grain's cluster number shuffled into the other 60
// bits (see deltaExtent.decodeGTE); the grain is at grainsOffset +
// cluster * grainSize sectors.
const (
	seSparseHeaderLen    = 512
	seSparseConstMagic   = 0xcafebabe
	seSparseVolMagic     = 0xcafecafe
	seSparseVersion      = 0x0000000200000001
	seSparseGrainSectors = 8
	seSparseGTSectors    = 64
	seSparseGTEntries    = seSparseGTSectors * deltaSector / 8
	// maxSESparseCapacity is 64 TiB in sectors, the format's limit.
	maxSESparseCapacity = 64 << 40 / deltaSector
	// maxSESparseGDEntries caps the grain directory (qemu's L1 limit).
	maxSESparseGDEntries = 32 << 20
)

// newSESparseExtent opens a SESPARSE extent file of size bytes.
func newSESparseExtent(f io.ReaderAt, size int64, name string) (extent, error) {
	if size < seSparseHeaderLen {
		return nil, corruptf(name, 0, "SEsparse const header", "file is %d bytes, shorter than the %d-byte header", size, seSparseHeaderLen)
	}
	var h [seSparseHeaderLen]byte
	if err := deltaReadFull(f, h[:], 0); err != nil {
		return nil, corruptf(name, 0, "SEsparse const header", "cannot read: %v", err)
	}
	le := binary.LittleEndian
	u := func(off int) uint64 { return le.Uint64(h[off:]) }
	if m := u(0); m != seSparseConstMagic {
		return nil, corruptf(name, 0, "SEsparse const header magic", "got %#x, want %#x", m, seSparseConstMagic)
	}
	if v := u(8); v != seSparseVersion {
		return nil, unsupportedf(name, 8, "SEsparse version", "got %#016x, only %#016x is known", v, uint64(seSparseVersion))
	}
	if g := u(24); g != seSparseGrainSectors {
		return nil, unsupportedf(name, 24, "SEsparse grainSize", "%d sectors, only %d is known", g, seSparseGrainSectors)
	}
	if g := u(32); g != seSparseGTSectors {
		return nil, unsupportedf(name, 32, "SEsparse grainTableSize", "%d sectors, only %d is known", g, seSparseGTSectors)
	}
	if fl := u(40); fl != 0 {
		return nil, unsupportedf(name, 40, "SEsparse flags", "%#x, only 0 is known", fl)
	}
	for off := 48; off < 80; off += 8 {
		if u(off) != 0 {
			return nil, unsupportedf(name, int64(off), "SEsparse reserved field", "%#x is not zero", u(off))
		}
	}
	for off := 208; off < seSparseHeaderLen; off++ {
		if h[off] != 0 {
			return nil, unsupportedf(name, int64(off), "SEsparse const header padding", "byte %#x is not zero", h[off])
		}
	}
	capSectors := u(16)
	if capSectors == 0 {
		return nil, corruptf(name, 16, "SEsparse capacity", "capacity is 0")
	}
	if capSectors > maxSESparseCapacity {
		return nil, unsupportedf(name, 16, "SEsparse capacity", "%d sectors exceeds the maximum %d (64 TiB)", capSectors, uint64(maxSESparseCapacity))
	}
	// sectorAt turns a sector field into a byte offset where n bytes fit
	// inside the file, or reports which field is out of range.
	fileSectors := uint64(size / deltaSector)
	sectorAt := func(field string, off int, n int64) (int64, error) {
		s := u(off)
		if s == 0 || s > fileSectors || int64(s)*deltaSector > size-n {
			return 0, corruptf(name, int64(off), field, "sector %d (+%d bytes) lies outside the file (%d bytes)", s, n, size)
		}
		return int64(s) * deltaSector, nil
	}

	volOff, err := sectorAt("SEsparse volatileHeaderOffset", 80, seSparseHeaderLen)
	if err != nil {
		return nil, err
	}
	var v [seSparseHeaderLen]byte
	if err := deltaReadFull(f, v[:], volOff); err != nil {
		return nil, corruptf(name, volOff, "SEsparse volatile header", "cannot read: %v", err)
	}
	if m := le.Uint64(v[0:]); m != seSparseVolMagic {
		return nil, corruptf(name, volOff, "SEsparse volatile header magic", "got %#x, want %#x", m, seSparseVolMagic)
	}
	if r := le.Uint64(v[24:]); r != 0 {
		return nil, unsupportedf(name, volOff+24, "SEsparse replayJournal", "the disk was not closed cleanly (journal replay %#x is needed)", r)
	}
	for i := 32; i < seSparseHeaderLen; i++ {
		if v[i] != 0 {
			return nil, unsupportedf(name, volOff+int64(i), "SEsparse volatile header padding", "byte %#x is not zero", v[i])
		}
	}

	perGT := uint64(seSparseGTEntries * seSparseGrainSectors) // sectors one table maps
	need := int64((capSectors + perGT - 1) / perGT)           // <= 4 Mi by the capacity cap
	gdSize := u(136)
	if gdSize > maxSESparseGDEntries/(deltaSector/8) {
		return nil, unsupportedf(name, 136, "SEsparse grainDirSize", "%d sectors exceeds the maximum %d entries", gdSize, maxSESparseGDEntries)
	}
	if int64(gdSize)*(deltaSector/8) < need {
		return nil, corruptf(name, 136, "SEsparse grainDirSize", "%d sectors hold %d entries, capacity needs %d", gdSize, gdSize*(deltaSector/8), need)
	}
	gdOff, err := sectorAt("SEsparse grainDirOffset", 128, need*8)
	if err != nil {
		return nil, err
	}
	gtBase := u(144)
	if gtBase > fileSectors {
		return nil, corruptf(name, 144, "SEsparse grainTablesOffset", "sector %d lies outside the file (%d bytes)", gtBase, size)
	}
	grains := u(192)
	if grains > fileSectors {
		return nil, corruptf(name, 192, "SEsparse grainsOffset", "sector %d lies outside the file (%d bytes)", grains, size)
	}

	raw := make([]byte, need*8) // bounded by the file size (checked above)
	if err := deltaReadFull(f, raw, gdOff); err != nil {
		return nil, corruptf(name, gdOff, "SEsparse grain directory", "cannot read: %v", err)
	}
	d := &deltaExtent{
		f: f, name: name, kind: "SEsparse", fileSize: size,
		capacity:   int64(capSectors) * deltaSector,
		grainBytes: seSparseGrainSectors * deltaSector,
		gtEntries:  seSparseGTEntries,
		entrySize:  8,
		gd:         make([]int64, need),
		grainsOff:  int64(grains) * deltaSector,
		cache:      newDeltaGTCache(),
	}
	for i := range d.gd {
		e := le.Uint64(raw[8*i:])
		if e == 0 {
			continue
		}
		entOff := gdOff + int64(8*i)
		if e&0xffffffff00000000 != 0x1000000000000000 {
			return nil, corruptf(name, entOff, "SEsparse grain directory entry", "entry %d is %#016x, want 0 or 0x10000000xxxxxxxx", i, e)
		}
		sec := gtBase + (e&0xffffffff)*seSparseGTSectors
		if sec == 0 || sec > 0xffffffff || int64(sec)*deltaSector > size-seSparseGTSectors*deltaSector {
			return nil, corruptf(name, entOff, "SEsparse grain directory entry", "grain table %d at sector %d lies outside the file (%d bytes)", e&0xffffffff, sec, size)
		}
		d.gd[i] = int64(sec) * deltaSector
	}
	return d, nil
}
