package vmdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// deltaExtent is the reading engine shared by the ESXi delta extents
// (VMFSSPARSE/COWD and SESPARSE): a grain directory held in memory whose
// entries point at grain tables of gtEntries entries, read on demand
// through a small cache. The kinds differ only in how a directory entry
// and a grain-table entry are decoded (see decodeGTE).
type deltaExtent struct {
	f        io.ReaderAt
	name     string
	kind     string // "COWD" or "SEsparse", for messages
	fileSize int64

	capacity   int64 // virtual bytes
	grainBytes int64
	gtEntries  int64 // grain-table entries per table
	entrySize  int64 // bytes per grain-table entry: 4 (COWD) or 8 (SEsparse)

	gd []int64 // byte offset of each grain table in the file; 0 = none

	// SEsparse only: where grain clusters start (bytes).
	grainsOff int64

	cache *deltaGTCache
}

func (d *deltaExtent) size() int64  { return d.capacity }
func (d *deltaExtent) close() error { return nil }

// gtCoverage is the number of virtual bytes one grain table maps.
func (d *deltaExtent) gtCoverage() int64 { return d.gtEntries * d.grainBytes }

// grainLen is the number of virtual bytes of grain gi that lie inside the
// extent (the last grain may be cut short by the capacity).
func (d *deltaExtent) grainLen(gi int64) int64 {
	start := gi * d.grainBytes
	return min(d.grainBytes, d.capacity-start)
}

// table returns the decoded grain table at file offset gtOff with the cache
// lock held; the caller must unlock d.cache.mu. On error the lock is
// already released.
func (d *deltaExtent) table(gtOff int64) ([]uint64, error) {
	n := int(d.gtEntries)
	s, hit := d.cache.get(gtOff, n)
	if hit {
		return s.ent, nil
	}
	raw := d.cache.scratch(n * int(d.entrySize))
	if err := deltaReadFull(d.f, raw, gtOff); err != nil {
		d.cache.drop(s)
		d.cache.mu.Unlock()
		return nil, corruptf(d.name, gtOff, d.kind+" grain table", "cannot read %d bytes: %v", len(raw), err)
	}
	if d.entrySize == 4 {
		for i := range s.ent {
			s.ent[i] = uint64(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	} else {
		for i := range s.ent {
			s.ent[i] = binary.LittleEndian.Uint64(raw[8*i:])
		}
	}
	return s.ent, nil
}

// decodeGTE turns grain-table entry e of grain gi into a state and, for
// Data, the byte offset of the grain in the file. entOff is the entry's own
// file offset, for error messages.
func (d *deltaExtent) decodeGTE(e uint64, gi, entOff int64) (State, int64, error) {
	need := d.grainLen(gi)
	if d.entrySize == 4 {
		// COWD: 0 = not allocated in this link; anything else is the
		// grain's sector (qemu has no zeroed-grain value for COWD).
		if e == 0 {
			return Unallocated, 0, nil
		}
		off := int64(e) * deltaSector
		if off > d.fileSize-need {
			return 0, 0, corruptf(d.name, entOff, "COWD grain table entry", "grain %d at sector %d lies beyond the end of the file (%d bytes)", gi, e, d.fileSize)
		}
		return Data, off, nil
	}
	// SEsparse: the top nibble is the type.
	switch e >> 60 {
	case 0:
		if e != 0 {
			return 0, 0, corruptf(d.name, entOff, "SEsparse grain table entry", "unallocated entry %#016x has non-zero bits", e)
		}
		return Unallocated, 0, nil
	case 1, 2: // 1 = unmapped (SCSI UNMAP), 2 = zeroed: both read as zeros
		return Zero, 0, nil
	case 3:
		// The cluster number is stored shuffled: its low 12 bits sit in
		// bits 48-59, the rest in bits 0-47.
		cluster := (e&0x0fff000000000000)>>48 | (e&0x0000ffffffffffff)<<12
		room := d.fileSize - d.grainsOff - need
		if room < 0 || cluster > uint64(room/d.grainBytes) {
			return 0, 0, corruptf(d.name, entOff, "SEsparse grain table entry", "grain %d in cluster %d lies beyond the end of the file (%d bytes)", gi, cluster, d.fileSize)
		}
		return Data, d.grainsOff + int64(cluster)*d.grainBytes, nil
	default:
		return 0, 0, corruptf(d.name, entOff, "SEsparse grain table entry", "unknown type %d in entry %#016x", e>>60, e)
	}
}

func (d *deltaExtent) mapAt(off int64) (State, int64, error) {
	if off < 0 || off >= d.capacity {
		return 0, 0, fmt.Errorf("vmdk: %s: %s map offset %d outside 0..%d", d.name, d.kind, off, d.capacity)
	}
	cov := d.gtCoverage()
	gdi := off / cov
	if d.gd[gdi] == 0 {
		// No grain table: unallocated up to the next directory entry
		// that has one.
		end := (gdi + 1) * cov
		for j := gdi + 1; j < int64(len(d.gd)) && d.gd[j] == 0; j++ {
			end += cov
		}
		return Unallocated, min(end, d.capacity) - off, nil
	}
	gtOff := d.gd[gdi]
	ent, err := d.table(gtOff)
	if err != nil {
		return 0, 0, err
	}
	defer d.cache.mu.Unlock()
	gi := off / d.grainBytes
	first := gdi * d.gtEntries
	idx := gi - first
	st, _, err := d.decodeGTE(ent[idx], gi, gtOff+idx*d.entrySize)
	if err != nil {
		return 0, 0, err
	}
	end := (gi + 1) * d.grainBytes
	for idx+1 < d.gtEntries && end < d.capacity {
		next := idx + 1
		s2, _, err := d.decodeGTE(ent[next], first+next, gtOff+next*d.entrySize)
		if err != nil || s2 != st {
			break // a bad entry is reported when the caller reaches it
		}
		idx = next
		end += d.grainBytes
	}
	return st, min(end, d.capacity) - off, nil
}

func (d *deltaExtent) readAt(p []byte, off int64) error {
	if off < 0 || off > d.capacity || int64(len(p)) > d.capacity-off {
		return fmt.Errorf("vmdk: %s: %s read of %d bytes at %d outside 0..%d", d.name, d.kind, len(p), off, d.capacity)
	}
	cov := d.gtCoverage()
	for len(p) > 0 {
		gdi := off / cov
		gtOff := d.gd[gdi]
		if gtOff == 0 {
			return fmt.Errorf("vmdk: %s: %s read at %d: %w", d.name, d.kind, off, errDeltaNotData)
		}
		ent, err := d.table(gtOff)
		if err != nil {
			return err
		}
		// Gather the longest run of grains stored back to back in the
		// file, then read it with one call outside the lock.
		gi := off / d.grainBytes
		first := gdi * d.gtEntries
		idx := gi - first
		st, fo, err := d.decodeGTE(ent[idx], gi, gtOff+idx*d.entrySize)
		if err == nil && st != Data {
			err = fmt.Errorf("vmdk: %s: %s read at %d: %w", d.name, d.kind, off, errDeltaNotData)
		}
		if err != nil {
			d.cache.mu.Unlock()
			return err
		}
		in := off - gi*d.grainBytes
		fileOff := fo + in
		n := min(int64(len(p)), d.grainBytes-in)
		for n < int64(len(p)) && idx+1 < d.gtEntries {
			next := idx + 1
			st2, fo2, err := d.decodeGTE(ent[next], first+next, gtOff+next*d.entrySize)
			if err != nil || st2 != Data || fo2 != fileOff+n {
				break
			}
			idx = next
			n = min(int64(len(p)), n+d.grainBytes)
		}
		d.cache.mu.Unlock()
		if err := deltaReadFull(d.f, p[:n], fileOff); err != nil {
			return corruptf(d.name, fileOff, d.kind+" grain", "cannot read %d bytes: %v", n, err)
		}
		p = p[n:]
		off += n
	}
	return nil
}

// errDeltaNotData is returned when readAt is asked for bytes mapAt did not
// report as Data: a caller bug, not a file problem.
var errDeltaNotData = errors.New("range is not stored data")

// deltaReadFull reads exactly len(p) bytes at off; a short read is an error.
func deltaReadFull(f io.ReaderAt, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// deltaSector is the VMDK sector, the unit of every on-disk offset.
const deltaSector = 512
