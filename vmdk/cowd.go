package vmdk

import (
	"encoding/binary"
	"io"
)

// COWD (VMFSSPARSE) extents: the ESX "vmfsSparse" redo-log format, read the
// way qemu's block/vmdk.c (vmdk_open_vmfs_sparse) reads it.
//
// Header (little-endian), at offset 0:
//
//	0  "COWD" magic
//	4  u32 version (1)
//	8  u32 flags (ignored, as qemu ignores them)
//	12 u32 numSectors   capacity in sectors
//	16 u32 grainSize    sectors per grain
//	20 u32 gdOffset     sector of the grain directory
//	24 u32 numGDEntries entries in the grain directory
//	28 u32 freeSector   next free sector (ignored)
//
// The grain directory holds u32 sector offsets of grain tables (0 = none);
// each grain table holds 4096 u32 sector offsets of grains (0 = not stored
// in this link: the parent shows through). COWD has no zeroed-grain value.
const (
	cowdHeaderLen = 32
	// cowdGTEntries is fixed by the format.
	cowdGTEntries = 4096
	// maxCOWDGrainSectors caps a grain at 1 GiB, as qemu does.
	maxCOWDGrainSectors = 0x200000
	// maxCOWDGDEntries caps the grain directory (qemu's L1 limit).
	maxCOWDGDEntries = 32 << 20
)

// newCOWDExtent opens a VMFSSPARSE (COWD) extent file of size bytes.
func newCOWDExtent(f io.ReaderAt, size int64, name string) (extent, error) {
	if size < cowdHeaderLen {
		return nil, corruptf(name, 0, "COWD header", "file is %d bytes, shorter than the %d-byte header", size, cowdHeaderLen)
	}
	var h [cowdHeaderLen]byte
	if err := deltaReadFull(f, h[:], 0); err != nil {
		return nil, corruptf(name, 0, "COWD header", "cannot read: %v", err)
	}
	if string(h[0:4]) != "COWD" {
		return nil, corruptf(name, 0, "COWD magic", "got %q, want \"COWD\"", h[0:4])
	}
	le := binary.LittleEndian
	version := le.Uint32(h[4:])
	capSectors := le.Uint32(h[12:])
	grain := le.Uint32(h[16:])
	gdSector := le.Uint32(h[20:])
	gdEntries := le.Uint32(h[24:])
	if version != 1 {
		return nil, unsupportedf(name, 4, "COWD version", "version %d, only 1 is known", version)
	}
	if capSectors == 0 {
		return nil, corruptf(name, 12, "COWD numSectors", "capacity is 0")
	}
	if grain == 0 {
		return nil, corruptf(name, 16, "COWD grainSize", "grain size is 0")
	}
	if grain > maxCOWDGrainSectors {
		return nil, unsupportedf(name, 16, "COWD grainSize", "%d sectors exceeds the maximum %d", grain, maxCOWDGrainSectors)
	}
	if gdEntries > maxCOWDGDEntries {
		return nil, unsupportedf(name, 24, "COWD numGDEntries", "%d entries exceeds the maximum %d", gdEntries, maxCOWDGDEntries)
	}
	perGT := int64(cowdGTEntries) * int64(grain) // sectors one table maps
	need := (int64(capSectors) + perGT - 1) / perGT
	if int64(gdEntries) < need {
		return nil, corruptf(name, 24, "COWD numGDEntries", "%d entries map %d sectors, capacity is %d", gdEntries, int64(gdEntries)*perGT, capSectors)
	}
	gdOff := int64(gdSector) * deltaSector
	if gdSector == 0 || gdOff > size-need*4 {
		return nil, corruptf(name, 20, "COWD gdOffset", "grain directory at sector %d (%d entries) lies outside the file (%d bytes)", gdSector, need, size)
	}
	raw := make([]byte, need*4) // need <= size/4: bounded by the file
	if err := deltaReadFull(f, raw, gdOff); err != nil {
		return nil, corruptf(name, gdOff, "COWD grain directory", "cannot read: %v", err)
	}
	d := &deltaExtent{
		f: f, name: name, kind: "COWD", fileSize: size,
		capacity:   int64(capSectors) * deltaSector,
		grainBytes: int64(grain) * deltaSector,
		gtEntries:  cowdGTEntries,
		entrySize:  4,
		gd:         make([]int64, need),
		cache:      newDeltaGTCache(),
	}
	for i := range d.gd {
		s := le.Uint32(raw[4*i:])
		if s == 0 {
			continue
		}
		off := int64(s) * deltaSector
		if off > size-cowdGTEntries*4 {
			return nil, corruptf(name, gdOff+int64(4*i), "COWD grain directory entry", "grain table %d at sector %d lies outside the file (%d bytes)", i, s, size)
		}
		d.gd[i] = off
	}
	return d, nil
}
