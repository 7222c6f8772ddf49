package vmdk

import (
	"encoding/binary"
	"fmt"
)

// streamOptimized in VMware's GD_AT_END layout:
//
//	sector 0          header: version 3, flags 0x30001, gdOffset all ones
//	sector 1          descriptor (>= 20 sectors)
//	overHead          grains: u64 lba, u32 size, zlib data, padded to a sector
//	...               per non-empty grain table: GT marker, table (4 sectors)
//	...               GD marker, grain directory (0 for empty tables)
//	...               footer marker, footer (the header with the real gdOffset)
//	last sector       end-of-stream marker (all zeros)
//
// Markers are `u64 numSectors, u32 0, u32 type` padded to a sector.
const (
	wMarkerEOS    = 0
	wMarkerGT     = 1
	wMarkerGD     = 2
	wMarkerFooter = 3
	wGDAtEnd      = -1 // all ones on disk
)

type streamSink struct {
	w    *diskWriter
	of   *outFile
	next int64 // byte offset of the next grain
	gte  []uint32
	data int64 // virtual bytes stored
}

func (s *streamSink) put(j *grainJob) error {
	if j.kind != jobGrain || j.state != Data {
		return nil
	}
	b := j.out.Bytes()
	if _, err := s.of.f.WriteAt(b, s.next); err != nil {
		return err
	}
	s.gte[j.off/s.w.grain] = uint32(s.next / SectorSize)
	s.next += int64(len(b))
	s.data += j.n
	if s.next/SectorSize > 0xffffffff {
		return fmt.Errorf("stream file passes 2 TiB, beyond what 32-bit grain-table entries address")
	}
	return nil
}

func (w *diskWriter) writeStream() error {
	gs := w.grain / SectorSize
	capS := w.capBytes / SectorSize
	nGTE := (capS + gs - 1) / gs
	if nGTE*4 > maxStreamGTBytes {
		return fmt.Errorf("a %d-byte stream with %d-byte grains needs %d MiB of grain tables in memory, more than %d MiB; use larger grains", w.capBytes, w.grain, nGTE*4>>20, maxStreamGTBytes>>20)
	}
	nGT := (nGTE + wGTEs - 1) / wGTEs
	desc, err := w.descriptor([]ExtentLine{{Access: AccessRW, Sectors: capS, Type: ExtentSparse, File: w.base + ".vmdk"}})
	if err != nil {
		return err
	}
	descSectors := max(wDescSectors, (int64(len(desc))+SectorSize-1)/SectorSize)
	over := (1 + descSectors + gs - 1) / gs * gs
	hdr := wHeader{version: 3, flags: wFlagNewline | wFlagCompress | wFlagMarkers, capacity: capS, grain: gs,
		descOff: 1, descLen: descSectors, gd: wGDAtEnd, overHead: over, compress: 1}
	of, err := w.create(w.base + ".vmdk")
	if err != nil {
		return err
	}
	sink := &streamSink{w: w, of: of, next: over * SectorSize, gte: make([]uint32, nGT*wGTEs)}
	if err := w.pipe(w.grain, sink, true, w.o.Parent != nil); err != nil {
		return err
	}
	f := of.f
	le := binary.LittleEndian
	marker := func(n int64, typ uint32) []byte {
		m := make([]byte, SectorSize)
		le.PutUint64(m[0:], uint64(n))
		le.PutUint32(m[12:], typ)
		return m
	}
	// Grain tables, each after its marker; empty tables are left out.
	pos := sink.next
	gdSectors := (nGT*4 + SectorSize - 1) / SectorSize
	gd := make([]byte, gdSectors*SectorSize)
	gtm := marker(wGTSectors, wMarkerGT)
	raw := make([]byte, SectorSize+wGTEs*4)
	copy(raw, gtm)
	for t := int64(0); t < nGT; t++ {
		tab := sink.gte[t*wGTEs : (t+1)*wGTEs]
		empty := true
		for i, v := range tab {
			le.PutUint32(raw[SectorSize+4*i:], v)
			if v != 0 {
				empty = false
			}
		}
		if empty {
			continue
		}
		if _, err := f.WriteAt(raw, pos); err != nil {
			return err
		}
		le.PutUint32(gd[4*t:], uint32(pos/SectorSize+1))
		pos += int64(len(raw))
	}
	if _, err := f.WriteAt(marker(gdSectors, wMarkerGD), pos); err != nil {
		return err
	}
	pos += SectorSize
	gdAt := pos / SectorSize
	if _, err := f.WriteAt(gd, pos); err != nil {
		return err
	}
	pos += int64(len(gd))
	footer := hdr
	footer.gd = gdAt
	tail := make([]byte, 0, 3*SectorSize)
	tail = append(tail, marker(1, wMarkerFooter)...)
	tail = append(tail, footer.encode()...)
	tail = append(tail, marker(0, wMarkerEOS)...)
	if _, err := f.WriteAt(tail, pos); err != nil {
		return err
	}
	if pos/SectorSize+3 > 0xffffffff {
		return fmt.Errorf("stream file passes 2 TiB, beyond what 32-bit grain-table entries address")
	}
	d := make([]byte, descSectors*SectorSize)
	copy(d, desc)
	if _, err := f.WriteAt(d, SectorSize); err != nil {
		return err
	}
	if _, err := f.WriteAt(hdr.encode(), 0); err != nil {
		return err
	}
	if err := verifySparseOut(f, of.final, &hdr, gdAt); err != nil {
		return err
	}
	if err := w.verifyMap(of, sink.data, 0); err != nil {
		return err
	}
	return w.commit()
}

// flatSink writes data chunks in place; everything else stays a hole.
type flatSink struct{ of *outFile }

func (s *flatSink) put(j *grainJob) error {
	if j.kind != jobGrain || j.state != Data {
		return nil
	}
	_, err := s.of.f.WriteAt(j.buf[:j.n], j.off)
	return err
}

func (w *diskWriter) writeFlat() error {
	name := w.base + "-flat.vmdk"
	of, err := w.create(name)
	if err != nil {
		return err
	}
	desc, err := w.descriptor([]ExtentLine{{Access: AccessRW, Sectors: w.capBytes / SectorSize, Type: ExtentFlat, File: name}})
	if err != nil {
		return err
	}
	if err := w.writeDescriptorFile(desc); err != nil {
		return err
	}
	if err := w.pipe(flatChunk, &flatSink{of: of}, false, false); err != nil {
		return err
	}
	if err := of.f.Truncate(w.capBytes); err != nil {
		return err
	}
	st, err := of.f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != w.capBytes {
		return fmt.Errorf("verifying %s: %d bytes, want %d", of.final, st.Size(), w.capBytes)
	}
	return w.commit()
}

func (w *diskWriter) run() error {
	switch w.o.Subformat {
	case SubformatMonolithicSparse:
		return w.writeSparse(false)
	case SubformatTwoGbMaxExtentSparse:
		return w.writeSparse(true)
	case SubformatStreamOptimized:
		return w.writeStream()
	default:
		return w.writeFlat()
	}
}
