package vmdk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/zlib"
)

// streamOptimized extents are hosted sparse extents with compressed grains
// (flag bit 16, deflate). They come in three layouts, all read through the
// grain directory:
//
//   - GD and GTs up front, grains without markers (flag bit 17 clear): a
//     grain is a bare zlib stream at its GTE sector;
//   - GD and GTs up front, grains with markers;
//   - VMware's stream layout: gdOffset = GD_AT_END in the header; after the
//     grains come GT markers + GTs, a GD marker + GD, a footer marker + a
//     footer (a copy of the header with the real gdOffset) and an
//     end-of-stream marker. The footer sits 1024 bytes before the end.
//
// With markers a grain is `u64 lba, u32 size, zlib data` (RFC 1950); lba is
// the grain's first sector in the extent and is checked against the grain
// table position. Metadata markers are `u64 numSectors, u32 0, u32 type`
// padded to a sector.
const (
	markerEOS    = 0
	markerGT     = 1
	markerGD     = 2
	markerFooter = 3

	grainMarkerLen = 12
	// maxCompressedGrain caps a compressed grain: deflate never grows data
	// by more than a few bytes per 16 KiB block.
	maxCompressedGrain = 2*maxGrainSectors*SectorSize + 4096
)

// readFooter reads the footer of a GD_AT_END stream file: footer marker,
// footer header and end-of-stream marker in the last three sectors.
func readFooter(f io.ReaderAt, fileSize int64, name string, h sparseHeader) (sparseHeader, error) {
	end := fileSize &^ (SectorSize - 1)
	at := end - 3*SectorSize
	if at < SectorSize {
		return h, corruptf(name, 56, "stream footer", "the header says the grain directory is at the end, but the %d-byte file has no room for a footer", fileSize)
	}
	var b [3 * SectorSize]byte
	if err := ReadFull(f, b[:], at); err != nil {
		return h, corruptf(name, at, "stream footer", "cannot read: %v", err)
	}
	le := binary.LittleEndian
	if le.Uint64(b[0:]) != 1 || le.Uint32(b[8:]) != 0 || le.Uint32(b[12:]) != markerFooter {
		return h, corruptf(name, at, "stream footer marker", "got numSectors %d, size %d, type %d; want 1, 0, %d (truncated stream?)",
			le.Uint64(b[0:]), le.Uint32(b[8:]), le.Uint32(b[12:]), markerFooter)
	}
	eos := b[2*SectorSize:]
	if le.Uint64(eos[0:]) != 0 || le.Uint32(eos[8:]) != 0 || le.Uint32(eos[12:]) != markerEOS {
		return h, corruptf(name, at+2*SectorSize, "stream end-of-stream marker", "not an end-of-stream marker")
	}
	fh, err := parseSparseHeader(b[SectorSize:2*SectorSize], name, at+SectorSize)
	if err != nil {
		return h, err
	}
	if fh.GDOffset == gdAtEnd {
		return h, corruptf(name, at+SectorSize+56, "stream footer gdOffset", "the footer too says the grain directory is at the end")
	}
	if fh.Capacity != h.Capacity || fh.GrainSize != h.GrainSize || fh.NumGTEsPerGT != h.NumGTEsPerGT {
		return h, corruptf(name, at+SectorSize, "stream footer", "capacity, grain size or GT size differ from the header's")
	}
	return fh, nil
}

// inflater is the per-grain decompression state, pooled so that the hot
// path allocates nothing once warm.
type inflater struct {
	cbuf []byte // compressed bytes
	gbuf []byte // inflated grain (+1 byte to detect overlong data)
	br   bytes.Reader
	zr   io.ReadCloser
}

// inflaters is a bounded free list of inflaters. Unlike a sync.Pool it is
// not emptied by garbage collections, so a long export allocates none
// once warm; it keeps at most two per CPU.
var inflaters = make(chan *inflater, max(4, 2*runtime.GOMAXPROCS(0)))

func getInflater(grain int64) *inflater {
	var z *inflater
	select {
	case z = <-inflaters:
	default:
		z = &inflater{}
	}
	if int64(cap(z.gbuf)) < grain+1 {
		z.gbuf = make([]byte, grain+1)
	}
	return z
}

func putInflater(z *inflater) {
	select {
	case inflaters <- z:
	default:
	}
}

// inflate decompresses src into z.gbuf and returns the inflated bytes
// (at most limit+1, so that an overlong grain is seen).
func (z *inflater) inflate(src []byte, limit int64) ([]byte, error) {
	z.br.Reset(src)
	var err error
	if z.zr == nil {
		z.zr, err = zlib.NewReader(&z.br)
	} else {
		err = z.zr.(zlib.Resetter).Reset(&z.br, nil)
	}
	if err != nil {
		return nil, err
	}
	buf := z.gbuf[:limit+1]
	n, err := io.ReadFull(z.zr, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil
	}
	return buf[:n], err
}

// readCompressed fills dst with the bytes of compressed grain gi from byte
// in of the grain; the grain starts at sector sect.
func (s *sparseExtent) readCompressed(gi int64, sect uint32, dst []byte, in int64) error {
	partial := in != 0 || int64(len(dst)) != s.grainLen(gi)
	if partial && s.small.get(gi, dst, in) {
		return nil
	}
	off := int64(sect) * SectorSize
	z := getInflater(s.grain)
	defer putInflater(z)
	if cap(z.cbuf) < 4096 {
		z.cbuf = make([]byte, 4096)
	}
	// one read usually brings the marker and the whole compressed grain
	first := min(int64(cap(z.cbuf)), s.fileSize-off)
	c := z.cbuf[:first]
	if err := ReadFull(s.f, c, off); err != nil {
		return corruptf(s.name, off, "compressed grain", "cannot read grain %d: %v", gi, err)
	}
	dataOff := off
	if s.markers {
		if first < grainMarkerLen {
			return corruptf(s.name, off, "grain marker", "grain %d: truncated marker", gi)
		}
		lba := binary.LittleEndian.Uint64(c)
		size := int64(binary.LittleEndian.Uint32(c[8:]))
		if want := uint64(gi * s.grainSect); lba != want {
			return corruptf(s.name, off, "grain marker lba", "grain %d: marker says sector %d, the grain table says %d", gi, lba, want)
		}
		if size == 0 || size > maxCompressedGrain || size > s.fileSize-off-grainMarkerLen {
			return corruptf(s.name, off+8, "grain marker size", "grain %d: compressed size %d does not fit (max %d, file %d bytes)", gi, size, maxCompressedGrain, s.fileSize)
		}
		dataOff = off + grainMarkerLen
		if grainMarkerLen+size <= first {
			c = c[grainMarkerLen : grainMarkerLen+size]
		} else {
			if int64(cap(z.cbuf)) < size {
				z.cbuf = make([]byte, size)
			}
			c = z.cbuf[:size]
			if err := ReadFull(s.f, c, dataOff); err != nil {
				return corruptf(s.name, dataOff, "compressed grain", "cannot read grain %d: %v", gi, err)
			}
		}
	} else if want := min(s.fileSize-off, s.grain+s.grain/2+1024); want > first {
		// no size field: read what a grain can compress to at most
		if int64(cap(z.cbuf)) < want {
			z.cbuf = make([]byte, want)
		}
		c = z.cbuf[:want]
		if err := ReadFull(s.f, c, off); err != nil {
			return corruptf(s.name, off, "compressed grain", "cannot read grain %d: %v", gi, err)
		}
	}
	data, err := z.inflate(c, s.grain)
	if err != nil {
		return corruptf(s.name, dataOff, "compressed grain", "grain %d does not inflate: %v", gi, err)
	}
	need := s.grainLen(gi)
	if int64(len(data)) < need || int64(len(data)) > s.grain {
		return corruptf(s.name, dataOff, "compressed grain", "grain %d inflates to %d bytes, want %d", gi, len(data), need)
	}
	copy(dst, data[in:])
	if partial {
		s.small.put(gi, data[:need])
	}
	return nil
}

// format names the kind and layout of a sparse extent, for Link summaries.
func (s *sparseExtent) format() string {
	switch {
	case s.mem != nil:
		return "streamOptimized (footer missing: map rebuilt by scanning)"
	case s.compressed && s.footer:
		return "streamOptimized (GD at end, footer)"
	case s.compressed && s.markers:
		return "streamOptimized (GD up front, markers)"
	case s.compressed:
		return "streamOptimized (GD up front, no markers)"
	}
	return fmt.Sprintf("hosted sparse v%d", s.hdr.Version)
}

// maxScanGrains caps the grains a stream scan records (64 TiB of 64 KiB
// grains); the tables it builds use 4 bytes per grain of the capacity at
// most, and never more than the file holds grains.
const maxScanGrains = 1 << 30

// scanStream rebuilds the grain map of a stream whose footer is missing or
// damaged (a truncated download or copy) by walking the markers from the
// end of the header and descriptor: grain markers are recorded, metadata
// markers skipped, and the walk stops at the end-of-stream marker, at the
// end of the file, or at the first thing that is not a marker.
func (s *sparseExtent) scanStream(gdN int64) error {
	s.gd = make([]uint32, gdN)
	s.mem = map[int64][]uint32{}
	numGrains := (s.capBytes + s.grain - 1) / s.grain
	pos := int64(s.hdr.OverHead) * SectorSize
	if pos < SectorSize {
		pos = SectorSize
	}
	if d := int64(s.hdr.DescriptorOffset+s.hdr.DescriptorSize) * SectorSize; pos < d {
		pos = d
	}
	var m [16]byte
	le := binary.LittleEndian
	for pos+int64(len(m)) <= s.fileSize && s.scanned < maxScanGrains {
		if err := ReadFull(s.f, m[:], pos); err != nil {
			return corruptf(s.name, pos, "stream marker", "cannot read: %v", err)
		}
		val, size, typ := le.Uint64(m[0:]), int64(le.Uint32(m[8:])), le.Uint32(m[12:])
		if size != 0 { // a grain: lba, size, data
			next := pos + (grainMarkerLen+size+SectorSize-1)/SectorSize*SectorSize
			if val%uint64(s.grainSect) != 0 || int64(val/uint64(s.grainSect)) >= numGrains || size > maxCompressedGrain || pos+grainMarkerLen+size > s.fileSize {
				break // garbage, or a grain cut by the truncation
			}
			gi := int64(val / uint64(s.grainSect))
			gdi := gi / s.gtes
			t := s.mem[gdi]
			if t == nil {
				t = make([]uint32, s.gtes)
				s.mem[gdi] = t
				s.gd[gdi] = 1 // marks "has a table" for mapAt
			}
			t[gi%s.gtes] = uint32(pos / SectorSize)
			s.scanned++
			pos = next
			continue
		}
		if typ == markerEOS {
			break
		}
		if typ != markerGT && typ != markerGD && typ != markerFooter || val > uint64(s.fileSize/SectorSize) {
			break
		}
		pos += (1 + int64(val)) * SectorSize
	}
	s.scanEnd = pos
	return nil
}
