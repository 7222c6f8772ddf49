package vmdk

import (
	"bytes"
	"testing"
)

// The sparse fuzz targets share one input shape: (shape, numGTEsPerGT,
// capacity in sectors, grain states, patch). sparseSpecOf decodes it and
// buildSparse lays out a small valid file (fuzz_build_test.go); each
// target then patches one part of it.

// addSparseSeeds adds seeds covering every layout, a redundant GD, the
// zeroed-grain flag, several grain tables, a cut last grain, grain sizes.
func addSparseSeeds(f *testing.F, patch []byte, cut bool) {
	grains := []byte{2, 0, 6, 1, 10, 0x82, 0, 0, 3, 1, 7}
	for _, s := range []struct {
		shape         uint8
		gtes, capSect uint16
	}{
		{layoutSparse | 4, 511, 128},         // redundant GD, one table
		{layoutSparse | 8, 3, 100},           // zeroed-grain flag, several tables, cut last grain
		{layoutSparse | 16 | 32, 511, 64},    // no descriptor, unclean
		{layoutSparse | 0x40, 1, 200},        // 8 KiB grains, a table per grain
		{layoutStreamBare, 511, 128},         //
		{layoutStreamMarkers | 0x80, 2, 300}, // 16 KiB grains
		{layoutStreamAtEnd, 511, 128},        // VMware's stream
		{layoutStreamAtEnd | 8, 4, 97},       //
	} {
		if cut {
			f.Add(s.shape, s.gtes, s.capSect, grains, []byte{}, uint16(0))
			f.Add(s.shape, s.gtes, s.capSect, grains, patch, uint16(0))
			f.Add(s.shape, s.gtes, s.capSect, grains, []byte{}, uint16(1000))
		} else {
			f.Add(s.shape, s.gtes, s.capSect, grains, []byte{})
			f.Add(s.shape, s.gtes, s.capSect, grains, patch)
		}
	}
}

// FuzzSparseHeader patches the header (and a stream's footer copy) of a
// small valid hosted sparse or stream-optimized file.
func FuzzSparseHeader(f *testing.F) {
	addSparseSeeds(f, []byte{0, 12, 0x40, 0, 56, 1, 0, 20, 0x18}, false)
	f.Fuzz(func(t *testing.T, shape uint8, gtes, capSect uint16, grains, patch []byte) {
		if len(grains) > fuzzMaxVirtualSect/minGrainSectors || len(patch) > 3*16 {
			return
		}
		b := buildSparse(sparseSpecOf(shape, gtes, capSect, grains))
		changed := b.patch(patch, b.header)
		checkSparse(t, b, !changed, false)
	})
}

// FuzzGrainTable patches the grain directories and tables (and a stream's
// GT and GD markers) of a small valid hosted sparse or stream file.
func FuzzGrainTable(f *testing.F) {
	addSparseSeeds(f, []byte{0, 0, 0xff, 0, 5, 0x10, 1, 2, 1}, false)
	f.Fuzz(func(t *testing.T, shape uint8, gtes, capSect uint16, grains, patch []byte) {
		if len(grains) > fuzzMaxVirtualSect/minGrainSectors || len(patch) > 3*16 {
			return
		}
		b := buildSparse(sparseSpecOf(shape, gtes, capSect, grains))
		changed := b.patch(patch, b.meta)
		checkSparse(t, b, !changed, false)
	})
}

// FuzzStreamMarkers builds small stream-optimized files (GD up front with
// and without grain markers, GD at the end with a footer), patches bytes
// after the header (grain markers, compressed grains, metadata markers)
// and cuts cut bytes off the end. A stream only cut short is rebuilt by
// the marker scan: every grain it finds must read back as built.
func FuzzStreamMarkers(f *testing.F) {
	addSparseSeeds(f, []byte{0, 3, 0x01, 0, 9, 0x80}, true)
	f.Fuzz(func(t *testing.T, shape uint8, gtes, capSect uint16, grains, patch []byte, cut uint16) {
		if len(grains) > fuzzMaxVirtualSect/minGrainSectors || len(patch) > 3*16 {
			return
		}
		shape = shape&^3 | (1 + shape&3%3) // a stream layout
		b := buildSparse(sparseSpecOf(shape, gtes, capSect, grains))
		changed := b.patch(patch, []span{b.body})
		c := int(cut) % len(b.file)
		b.file = b.file[:len(b.file)-c]
		checkSparse(t, b, !changed && c == 0, !changed && c > 0 && shape&3 == layoutStreamAtEnd)
	})
}

// FuzzCOWDHeader builds a small valid COWD (VMFSSPARSE) extent and patches
// its header (shape bit 7) or its grain directory and tables.
func FuzzCOWDHeader(f *testing.F) {
	grains := []byte{0, 0, 1, 0, 1, 2, 0x0b, 0xb7, 1, 0x10, 0x01, 2, 0xff, 0xff, 1}
	f.Add(uint8(0), uint16(2999), grains, []byte{})
	f.Add(uint8(3|8), uint16(40000), grains, []byte{0, 4, 0x80})
	f.Add(uint8(0x80), uint16(2999), grains, []byte{0, 12, 0xff, 0, 24, 0x01})
	f.Add(uint8(0x80|7), uint16(9), grains, []byte{0, 16, 0x01})
	f.Fuzz(func(t *testing.T, shape uint8, capSect uint16, grains, patch []byte) {
		if len(grains) > 3*2*fuzzMaxDataGrains || len(patch) > 3*16 {
			return
		}
		b := buildCOWDBytes(deltaSpec{capSect: 1 + int64(capSect), grainSect: 1 + int64(shape&7), extraGD: shape&8 != 0, grains: grains})
		regions := b.meta
		if shape&0x80 != 0 {
			regions = b.header
		}
		changed := b.patch(patch, regions)
		checkDelta(t, b, func(r *bytes.Reader, n int64) (extent, error) { return newCOWDExtent(r, n, "f.vmdk") }, !changed)
	})
}

// FuzzSESparseHeader builds a small valid SEsparse extent and patches its
// const and volatile headers (shape bit 7) or its directory and tables.
func FuzzSESparseHeader(f *testing.F) {
	grains := []byte{0, 0, 2, 0, 1, 6, 0, 2, 0, 0, 3, 1, 0x7f, 0xff, 10, 0x10, 0x01, 3}
	f.Add(uint8(0), uint16(5000), grains, []byte{})
	f.Add(uint8(0), uint16(65535), grains, []byte{0, 8, 0x20})
	f.Add(uint8(0x80), uint16(5000), grains, []byte{0, 16, 0xff, 0, 136, 0x01})
	f.Add(uint8(0x80), uint16(3), grains, []byte{2, 24, 0x01})
	f.Fuzz(func(t *testing.T, shape uint8, capSect uint16, grains, patch []byte) {
		if len(grains) > 3*2*fuzzMaxDataGrains || len(patch) > 3*16 {
			return
		}
		b := buildSESparseBytes(deltaSpec{capSect: 1 + 4*int64(capSect), grains: grains})
		regions := b.meta
		if shape&0x80 != 0 {
			regions = b.header
		}
		changed := b.patch(patch, regions)
		checkDelta(t, b, func(r *bytes.Reader, n int64) (extent, error) { return newSESparseExtent(r, n, "f.vmdk") }, !changed)
	})
}
