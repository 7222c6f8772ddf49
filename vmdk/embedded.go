package vmdk

import (
	"encoding/binary"
	"io"
)

// DescriptorArea says where the descriptor of a disk file is: for a hosted
// sparse or stream-optimized file (KDMV header) the byte offset and length
// of the area its header reserves for the embedded descriptor
// (descriptorOffset and descriptorSize, in sectors), with embedded true; for
// anything else (a text descriptor file) embedded is false and off, n are 0.
//
// The area is the whole room a rewritten descriptor may use: its text ends
// at the first NUL, the rest of the area is NUL padding. A sparse file
// without an embedded descriptor (an extent of a split disk) is
// ErrUnsupported; an area that does not fit the file, or is larger than
// MaxDescriptorSize, ErrCorrupt.
func DescriptorArea(r io.ReaderAt, size int64, name string) (off, n int64, embedded bool, err error) {
	var hb [sparseHeaderLen]byte
	got, _ := r.ReadAt(hb[:], 0)
	if got < 4 || binary.LittleEndian.Uint32(hb[:]) != sparseMagic {
		return 0, 0, false, nil
	}
	h, err := parseSparseHeader(hb[:got], name, 0)
	if err != nil {
		return 0, 0, false, err
	}
	if h.DescriptorOffset == 0 || h.DescriptorSize == 0 {
		return 0, 0, false, unsupportedf(name, 28, "sparse header descriptorOffset", "no embedded descriptor (an extent of a split disk?)")
	}
	if h.DescriptorSize > MaxDescriptorSize/SectorSize || h.DescriptorOffset > uint64(size/SectorSize) ||
		int64(h.DescriptorOffset+h.DescriptorSize)*SectorSize > size {
		return 0, 0, false, corruptf(name, 28, "sparse header descriptorOffset", "descriptor of %d sectors at sector %d does not fit the %d-byte file", h.DescriptorSize, h.DescriptorOffset, size)
	}
	end := h.DescriptorOffset + h.DescriptorSize
	for _, g := range []struct {
		at    uint64
		field string
	}{{h.RGDOffset, "rgdOffset"}, {h.GDOffset, "gdOffset"}} {
		if g.at != 0 && g.at != gdAtEnd && g.at >= h.DescriptorOffset && g.at < end {
			return 0, 0, false, corruptf(name, 28, "sparse header descriptorSize", "the descriptor area (sectors %d-%d) holds the grain directory (%s %d)", h.DescriptorOffset, end-1, g.field, g.at)
		}
	}
	return int64(h.DescriptorOffset) * SectorSize, int64(h.DescriptorSize) * SectorSize, true, nil
}
