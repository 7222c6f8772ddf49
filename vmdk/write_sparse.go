package vmdk

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
)

// Hosted sparse (KDMV) files as Write lays them out, all offsets in
// sectors:
//
//	0                 header
//	1                 embedded descriptor (monolithicSparse), >= 20 sectors
//	rgd               redundant grain directory, then redundant grain tables
//	gd                grain directory, then grain tables (all preallocated)
//	overHead          grains, in virtual order, aligned to the grain
//
// streamOptimized files put the descriptor at sector 1 and the grains from
// overHead, then the metadata at the end (see writeStream).

// Header flag bits and constants Write uses.
const (
	wFlagNewline   = 1 << 0
	wFlagRGD       = 1 << 1
	wFlagZeroGrain = 1 << 2
	wFlagCompress  = 1 << 16
	wFlagMarkers   = 1 << 17
	wGTEs          = 512 // grain-table entries per table
	wGTSectors     = wGTEs * 4 / SectorSize
	wDescSectors   = 20 // embedded descriptor space, as VMware reserves
	// maxStreamGTBytes caps the grain-table memory of a stream (whose
	// tables are written after all grains): 1 GiB, 16 TiB at 64 KiB grains.
	maxStreamGTBytes = 1 << 30
	// maxGTESector is the last sector a 32-bit grain-table entry can name.
	maxGTESector = 0xffffffff
)

// wHeader is a KDMV header to encode.
type wHeader struct {
	version, flags   uint32
	capacity, grain  int64 // sectors
	descOff, descLen int64 // sectors
	rgd, gd          int64 // sectors; gd -1 = GD_AT_END
	overHead         int64 // sectors
	compress         uint16
}

func (h *wHeader) encode() []byte {
	b := make([]byte, SectorSize)
	le := binary.LittleEndian
	copy(b, "KDMV")
	le.PutUint32(b[4:], h.version)
	le.PutUint32(b[8:], h.flags)
	le.PutUint64(b[12:], uint64(h.capacity))
	le.PutUint64(b[20:], uint64(h.grain))
	le.PutUint64(b[28:], uint64(h.descOff))
	le.PutUint64(b[36:], uint64(h.descLen))
	le.PutUint32(b[44:], wGTEs)
	le.PutUint64(b[48:], uint64(h.rgd))
	le.PutUint64(b[56:], uint64(h.gd))
	le.PutUint64(b[64:], uint64(h.overHead))
	b[72] = 0 // uncleanShutdown
	copy(b[73:], "\n \r\n")
	le.PutUint16(b[77:], h.compress)
	return b
}

// sparseOut is one sparse extent file being written.
type sparseOut struct {
	of        *outFile
	start     int64 // first virtual byte of the extent
	capBytes  int64
	grain     int64 // bytes
	nGT       int64
	gdSectors int64
	hdr       wHeader
	desc      []byte // embedded descriptor or nil
	next      int64  // next grain's byte offset
	zeroed    bool   // a zeroed grain was written
	dataBytes int64  // virtual bytes stored as Data
	zeroBytes int64  // virtual bytes stored as zeroed grains

	gt    [wGTEs]uint32 // the grain table being filled
	gtIdx int64         // which table gt is; -1 none
	dirty bool
	raw   []byte // scratch for encoding one table
}

func newSparseOut(of *outFile, start, capBytes, grain int64, desc []byte) *sparseOut {
	gs := grain / SectorSize
	capS := capBytes / SectorSize
	nGTE := (capS + gs - 1) / gs
	nGT := (nGTE + wGTEs - 1) / wGTEs
	gdSectors := (nGT*4 + SectorSize - 1) / SectorSize
	descSectors := int64(0)
	descOff := int64(0)
	if desc != nil {
		descOff = 1
		descSectors = max(wDescSectors, (int64(len(desc))+SectorSize-1)/SectorSize)
	}
	rgd := 1 + descSectors
	gd := rgd + gdSectors + nGT*wGTSectors
	over := (gd + gdSectors + nGT*wGTSectors + gs - 1) / gs * gs
	s := &sparseOut{
		of: of, start: start, capBytes: capBytes, grain: grain, nGT: nGT, gdSectors: gdSectors,
		desc: desc, next: over * SectorSize, gtIdx: -1, raw: make([]byte, wGTEs*4),
		hdr: wHeader{version: 1, flags: wFlagNewline | wFlagRGD, capacity: capS, grain: gs,
			descOff: descOff, descLen: descSectors, rgd: rgd, gd: gd, overHead: over},
	}
	return s
}

// put stores one job of this extent (virtual order).
func (s *sparseOut) put(j *grainJob) error {
	if j.kind != jobGrain {
		return nil
	}
	gi := (j.off - s.start) / s.grain
	if t := gi / wGTEs; t != s.gtIdx {
		if err := s.flushGT(); err != nil {
			return err
		}
		s.gtIdx = t
	}
	switch j.state {
	case Zero:
		s.gt[gi%wGTEs] = 1
		s.zeroed = true
		s.zeroBytes += j.n
	case Data:
		if s.next/SectorSize > maxGTESector {
			return fmt.Errorf("%s: the grains pass 2 TiB of file, beyond what 32-bit grain-table entries address; write twoGbMaxExtentSparse with smaller extents, or monolithicFlat: %w", filepath.Base(s.of.final), ErrUnsupported)
		}
		if _, err := s.of.f.WriteAt(j.buf[:s.grain], s.next); err != nil {
			return err
		}
		s.gt[gi%wGTEs] = uint32(s.next / SectorSize)
		s.next += s.grain
		s.dataBytes += j.n
	}
	s.dirty = true
	return nil
}

// flushGT writes the current grain table and its redundant copy.
func (s *sparseOut) flushGT() error {
	if !s.dirty {
		return nil
	}
	le := binary.LittleEndian
	for i, v := range s.gt {
		le.PutUint32(s.raw[4*i:], v)
	}
	for _, base := range []int64{s.hdr.rgd, s.hdr.gd} {
		off := (base + s.gdSectors + s.gtIdx*wGTSectors) * SectorSize
		if _, err := s.of.f.WriteAt(s.raw, off); err != nil {
			return err
		}
	}
	clear(s.gt[:])
	s.dirty = false
	return nil
}

// finish writes the directories, descriptor and header.
func (s *sparseOut) finish() error {
	if err := s.flushGT(); err != nil {
		return err
	}
	if s.zeroed {
		s.hdr.flags |= wFlagZeroGrain
	}
	f := s.of.f
	gd := make([]byte, s.gdSectors*SectorSize)
	for _, base := range []int64{s.hdr.rgd, s.hdr.gd} {
		for i := int64(0); i < s.nGT; i++ {
			binary.LittleEndian.PutUint32(gd[4*i:], uint32(base+s.gdSectors+i*wGTSectors))
		}
		if _, err := f.WriteAt(gd, base*SectorSize); err != nil {
			return err
		}
	}
	if s.desc != nil {
		d := make([]byte, s.hdr.descLen*SectorSize)
		copy(d, s.desc)
		if _, err := f.WriteAt(d, SectorSize); err != nil {
			return err
		}
	}
	if _, err := f.WriteAt(s.hdr.encode(), 0); err != nil {
		return err
	}
	return f.Truncate(s.next)
}

// sparseSink spreads jobs over the extents of a sparse disk.
type sparseSink struct {
	ext   []*sparseOut
	split int64
	cur   int
}

func (k *sparseSink) put(j *grainJob) error {
	if j.kind == jobGap {
		return nil
	}
	i := int(j.off / k.split)
	for k.cur < i { // extents are filled in order: finish the previous
		if err := k.ext[k.cur].finish(); err != nil {
			return err
		}
		k.cur++
	}
	return k.ext[i].put(j)
}

func (w *diskWriter) writeSparse(split bool) error {
	size := w.capBytes
	var ext []*sparseOut
	if !split {
		desc, err := w.descriptor([]ExtentLine{{Access: AccessRW, Sectors: size / SectorSize, Type: ExtentSparse, File: w.base + ".vmdk"}})
		if err != nil {
			return err
		}
		of, err := w.create(w.base + ".vmdk")
		if err != nil {
			return err
		}
		ext = append(ext, newSparseOut(of, 0, size, w.grain, desc))
		w.o.SplitSize = size
	} else {
		n := (size + w.o.SplitSize - 1) / w.o.SplitSize
		if n > MaxExtents {
			return fmt.Errorf("%d extents of %d bytes, more than %d", n, w.o.SplitSize, MaxExtents)
		}
		var lines []ExtentLine
		for i := int64(0); i < n; i++ {
			start := i * w.o.SplitSize
			c := min(w.o.SplitSize, size-start)
			name := fmt.Sprintf("%s-s%03d.vmdk", w.base, i+1)
			of, err := w.create(name)
			if err != nil {
				return err
			}
			ext = append(ext, newSparseOut(of, start, c, w.grain, nil))
			lines = append(lines, ExtentLine{Access: AccessRW, Sectors: c / SectorSize, Type: ExtentSparse, File: name})
		}
		desc, err := w.descriptor(lines)
		if err != nil {
			return err
		}
		if err := w.writeDescriptorFile(desc); err != nil {
			return err
		}
	}
	sink := &sparseSink{ext: ext, split: w.o.SplitSize}
	if err := w.pipe(w.grain, sink, false, false); err != nil {
		return err
	}
	for ; sink.cur < len(ext); sink.cur++ {
		if err := ext[sink.cur].finish(); err != nil {
			return err
		}
	}
	for _, e := range ext {
		if err := verifySparseOut(e.of.f, e.of.final, &e.hdr, -1); err != nil {
			return err
		}
		if err := w.verifyMap(e.of, e.dataBytes, e.zeroBytes); err != nil {
			return err
		}
	}
	return w.commit()
}

// writeDescriptorFile creates the separate descriptor file (renamed last).
func (w *diskWriter) writeDescriptorFile(desc []byte) error {
	of, err := w.create(w.base + ".vmdk")
	if err != nil {
		return err
	}
	_, err = of.f.WriteAt(desc, 0)
	return err
}

// verifyMap opens a written sparse or stream file with Open and checks
// that its allocation map holds exactly the Data and Zero bytes written.
// Deltas are skipped: Open would need the parent, which may not exist yet.
func (w *diskWriter) verifyMap(of *outFile, data, zero int64) error {
	if w.o.Parent != nil {
		return nil
	}
	d, err := Open(of.temp, nil)
	if err != nil {
		return fmt.Errorf("verifying %s: the written file does not open: %w", of.final, err)
	}
	defer d.Close()
	var gotData, gotZero int64
	err = d.Links()[0].WalkAllocated(func(r Run) error {
		if r.State == Data {
			gotData += r.Len
		} else {
			gotZero += r.Len
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("verifying %s: %w", of.final, err)
	}
	if gotData != data || gotZero != zero {
		return fmt.Errorf("verifying %s: read back %d data and %d zeroed bytes, wrote %d and %d", of.final, gotData, gotZero, data, zero)
	}
	return nil
}

// verifySparseOut reads back the header (and for streams the footer) of a
// written file and checks the fields that locate everything else.
func verifySparseOut(f *os.File, name string, want *wHeader, gd int64) error {
	b := make([]byte, SectorSize)
	if err := deltaReadFull(f, b, 0); err != nil {
		return fmt.Errorf("verifying %s: %w", name, err)
	}
	le := binary.LittleEndian
	if string(b[:4]) != "KDMV" || int64(le.Uint64(b[12:])) != want.capacity || int64(le.Uint64(b[20:])) != want.grain ||
		int64(le.Uint64(b[56:])) != want.gd || le.Uint32(b[8:]) != want.flags {
		return fmt.Errorf("verifying %s: the header read back differs from the one written", name)
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() < want.overHead*SectorSize {
		return fmt.Errorf("verifying %s: %d bytes, shorter than its %d-sector overhead", name, st.Size(), want.overHead)
	}
	if gd < 0 {
		return nil
	}
	// Stream: the footer must sit 1024 bytes before the end and carry gd.
	tail := make([]byte, 3*SectorSize)
	if err := deltaReadFull(f, tail, st.Size()-3*SectorSize); err != nil {
		return fmt.Errorf("verifying %s footer: %w", name, err)
	}
	ft := tail[SectorSize:]
	if le.Uint32(tail[12:]) != wMarkerFooter || string(ft[:4]) != "KDMV" || int64(le.Uint64(ft[56:])) != gd ||
		!AllZero(tail[2*SectorSize:]) {
		return fmt.Errorf("verifying %s: the stream footer read back is wrong", name)
	}
	return nil
}
