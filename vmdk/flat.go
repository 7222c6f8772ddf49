package vmdk

import (
	"fmt"
	"io"
)

// flatExtent is a FLAT (hosted) or VMFS (ESXi) extent: the virtual bytes
// stored as they are, from a byte offset of a plain file. Holes of the
// file (where the system reports them) map as Zero runs: they read as
// zeros, and a flat extent is always a base disk.
type flatExtent struct {
	f    io.ReaderAt
	name string
	base int64 // byte offset of the extent's data in the file
	n    int64 // virtual bytes
	have int64 // virtual bytes the file holds (< n for a salvaged short file)
}

// openFlat checks that the file holds the whole extent: a flat file that
// is too short is refused rather than read as zeros, unless salvage is
// set: then reads past the end of the file fail (ErrCorrupt), for a
// SalvageReader to fill and list.
func openFlat(f io.ReaderAt, fileSize int64, name string, base, n int64, salvage bool) (*flatExtent, error) {
	if base < 0 || (base > fileSize || n > fileSize-base) && !salvage {
		return nil, corruptf(name, -1, "flat extent", "the descriptor needs %d bytes from offset %d, the file has %d bytes", n, base, fileSize)
	}
	return &flatExtent{f: f, name: name, base: base, n: n, have: max(0, min(n, fileSize-base))}, nil
}

func (e *flatExtent) size() int64  { return e.n }
func (e *flatExtent) close() error { return nil }

func (e *flatExtent) mapAt(off int64) (State, int64, error) {
	if off < 0 || off >= e.n {
		return 0, 0, fmt.Errorf("vmdk: %s: map offset %d outside 0..%d", e.name, off, e.n)
	}
	if off >= e.have { // past the end of a short (salvaged) file: unreadable data
		return Data, e.n - off, nil
	}
	pos := e.base + off
	dataAt, holeAt, ok := fileHoles(e.f, pos)
	switch {
	case !ok:
		return Data, e.have - off, nil
	case dataAt < 0: // only a hole from here to the end of the file
		return Zero, e.have - off, nil
	case dataAt > pos: // a hole up to dataAt
		return Zero, min(dataAt-pos, e.have-off), nil
	case holeAt > pos:
		return Data, min(holeAt-pos, e.have-off), nil
	}
	return Data, e.have - off, nil
}

func (e *flatExtent) readAt(p []byte, off int64) error {
	if off < 0 || int64(len(p)) > e.n-off {
		return fmt.Errorf("vmdk: %s: read of %d bytes at %d outside 0..%d", e.name, len(p), off, e.n)
	}
	if off+int64(len(p)) > e.have {
		return corruptf(e.name, e.base+off, "flat extent", "the file ends at %d, %d bytes short of the extent", e.base+e.have, e.n-e.have)
	}
	if err := ReadFull(e.f, p, e.base+off); err != nil {
		return corruptf(e.name, e.base+off, "flat extent", "cannot read %d bytes: %v", len(p), err)
	}
	return nil
}

// zeroExtent is a ZERO extent: zeros that hide any parent.
type zeroExtent struct{ n int64 }

func (e zeroExtent) size() int64  { return e.n }
func (e zeroExtent) close() error { return nil }

func (e zeroExtent) mapAt(off int64) (State, int64, error) {
	if off < 0 || off >= e.n {
		return 0, 0, fmt.Errorf("vmdk: ZERO extent map offset %d outside 0..%d", off, e.n)
	}
	return Zero, e.n - off, nil
}

func (e zeroExtent) readAt(p []byte, off int64) error {
	return fmt.Errorf("vmdk: ZERO extent read at %d: range is not stored data", off)
}
