package vmdk

// State is what one chain link holds for a run of virtual bytes.
type State uint8

const (
	// Unallocated: this link stores nothing here; the parent link's data
	// shows through, or zeros at the base of the chain.
	Unallocated State = iota
	// Zero: zeros that hide the parent (a zeroed grain, a ZERO extent).
	Zero
	// Data: bytes stored in this link.
	Data
)

func (s State) String() string {
	switch s {
	case Unallocated:
		return "unallocated"
	case Zero:
		return "zero"
	case Data:
		return "data"
	}
	return "invalid"
}

// extent is the reading side of one extent file (FLAT, VMFS, ZERO, SPARSE,
// stream, VMFSSPARSE, SESPARSE). Offsets are bytes relative to the start of
// the extent's virtual range. Implementations are safe for concurrent use:
// no seek cursor, state only from the offset.
type extent interface {
	// size is the number of virtual bytes the extent covers.
	size() int64
	// mapAt reports the state at off (0 <= off < size) and how many bytes
	// from off share it (n > 0; it may stop early, e.g. at a grain end).
	mapAt(off int64) (st State, n int64, err error)
	// readAt fills p with the bytes at off, which must lie inside one Data
	// run that mapAt reported. A short read is always an error.
	readAt(p []byte, off int64) error
	close() error
}

// Run is a range of the virtual disk with one state, as the allocation map
// reports it. Off and Len are bytes. Holes (Unallocated at every level of
// the chain) are not listed: they read as zeros.
type Run struct {
	Off, Len int64
	State    State // Data or Zero
	Level    int   // chain link holding it: 0 = the opened (top) disk, 1 = its parent, ...
}
