package memory

import (
	"encoding/binary"
	"fmt"
	"io"
)

// StateFile builds a checkpoint state file (.vmsn/.vmss) in the layout
// ParseCheckpoint reads, Volatility 2 and 3 and crash read: the group
// table, then each group's tags in order, each stream ended by a null tag;
// block tags with padSize 0. For fixtures and tests.
type StateFile struct {
	Magic   uint32 // 0 means MagicCheckpoint
	Version uint32
	// CrashReadable pads the file with zeros after the last group to
	// CrashMinSize: crash reads the group table as groupCount×80 entries
	// of 80 bytes and fails on a shorter file (VMware's are megabytes).
	CrashReadable bool
	groups        []*StateGroup
}

// CrashMinSize is the size crash needs to read a state file of groups
// groups (see StateFile.CrashReadable).
func CrashMinSize(groups int) int { return CheckpointHeaderSize + groups*GroupDescSize*GroupDescSize }

// StateGroup is a group being built.
type StateGroup struct {
	name string
	tags []stateTag
}

type stateTag struct {
	name    string
	indices []uint32
	value   []byte // inline
	block   []byte // block data
	isBlock bool
	memSize uint64
}

// Group appends a group called name (at most 63 bytes) and returns it.
func (s *StateFile) Group(name string) *StateGroup {
	g := &StateGroup{name: name}
	s.groups = append(s.groups, g)
	return g
}

// Value appends a tag with an inline value (at most MaxInlineValue bytes).
func (g *StateGroup) Value(name string, value []byte, indices ...uint32) *StateGroup {
	g.tags = append(g.tags, stateTag{name: name, indices: indices, value: value})
	return g
}

// Uint32 appends a tag with a 4-byte value.
func (g *StateGroup) Uint32(name string, v uint32, indices ...uint32) *StateGroup {
	return g.Value(name, binary.LittleEndian.AppendUint32(nil, v), indices...)
}

// Uint64 appends a tag with an 8-byte value.
func (g *StateGroup) Uint64(name string, v uint64, indices ...uint32) *StateGroup {
	return g.Value(name, binary.LittleEndian.AppendUint64(nil, v), indices...)
}

// Block appends a block tag (valSize 63) holding data.
func (g *StateGroup) Block(name string, data []byte, indices ...uint32) *StateGroup {
	g.tags = append(g.tags, stateTag{name: name, indices: indices, block: data, isBlock: true, memSize: uint64(len(data))})
	return g
}

// MemoryGroup appends a `memory` group describing regions: align_mask,
// regionsCount, then regionPPN[i], regionPageNum[i], regionSize[i] for each
// region (4-byte values, as Workstation writes them), then a
// MainMemKnownZero bitmap of one bit per flat page with the bits of
// knownZero set. If embedded is non-nil it is stored as the `Memory` block
// tag [0,0]: memory inside the state file.
func (s *StateFile) MemoryGroup(regions []Region, knownZero []uint64, embedded []byte) *StateGroup {
	g := s.Group("memory")
	g.Uint32("align_mask", 0xffff)
	g.Uint32("regionsCount", uint32(len(regions)))
	var pages uint64
	for i, r := range regions {
		g.Uint32("regionPPN", uint32(r.PPN), uint32(i))
		g.Uint32("regionPageNum", uint32(r.PageNum), uint32(i))
		g.Uint32("regionSize", uint32(r.Pages), uint32(i))
		pages = max(pages, r.PageNum+r.Pages)
	}
	bm := make([]byte, (pages+7)/8)
	for _, p := range knownZero {
		if p < pages {
			bm[p/8] |= 1 << (p % 8)
		}
	}
	g.Block("MainMemKnownZero", bm)
	if embedded != nil {
		g.Block("Memory", embedded, 0, 0)
	}
	return g
}

// Bytes returns the state file.
func (s *StateFile) Bytes() ([]byte, error) {
	magic := s.Magic
	if magic == 0 {
		magic = MagicCheckpoint
	}
	var mb [4]byte
	binary.LittleEndian.PutUint32(mb[:], magic)
	if !IsCheckpointMagic(mb[:]) {
		return nil, fmt.Errorf("memory: %#x is not a checkpoint magic", magic)
	}
	sizeType := 8
	if magic&0xf == 0 {
		sizeType = 4
	}
	streams := make([][]byte, len(s.groups))
	for i, g := range s.groups {
		if len(g.name) >= GroupNameSize {
			return nil, fmt.Errorf("memory: group name %q longer than %d bytes", g.name, GroupNameSize-1)
		}
		var b []byte
		for _, t := range g.tags {
			if len(t.name) > 255 || len(t.indices) > MaxTagIndices || (len(t.name) == 0 && len(t.indices) == 0 && !t.isBlock && len(t.value) == 0) {
				return nil, fmt.Errorf("memory: tag %q with %d indices cannot be written", t.name, len(t.indices))
			}
			v := len(t.value)
			if t.isBlock {
				v = valBlock
			} else if v > MaxInlineValue {
				return nil, fmt.Errorf("memory: tag %q: %d-byte inline value, at most %d", t.name, v, MaxInlineValue)
			}
			b = append(b, byte(len(t.indices))<<6|byte(v), byte(len(t.name)))
			b = append(b, t.name...)
			for _, x := range t.indices {
				b = binary.LittleEndian.AppendUint32(b, x)
			}
			if t.isBlock {
				if sizeType == 4 {
					b = binary.LittleEndian.AppendUint32(b, uint32(len(t.block)))
					b = binary.LittleEndian.AppendUint32(b, uint32(t.memSize))
				} else {
					b = binary.LittleEndian.AppendUint64(b, uint64(len(t.block)))
					b = binary.LittleEndian.AppendUint64(b, t.memSize)
				}
				b = append(b, 0, 0) // padSize 0
				b = append(b, t.block...)
			} else {
				b = append(b, t.value...)
			}
		}
		streams[i] = append(b, 0, 0)
	}
	out := make([]byte, CheckpointHeaderSize+len(s.groups)*GroupDescSize)
	le := binary.LittleEndian
	le.PutUint32(out[0:], magic)
	le.PutUint32(out[4:], s.Version)
	le.PutUint32(out[8:], uint32(len(s.groups)))
	pos := len(out)
	for i, g := range s.groups {
		d := out[CheckpointHeaderSize+i*GroupDescSize:]
		copy(d[:GroupNameSize], g.name)
		le.PutUint64(d[GroupNameSize:], uint64(pos))
		le.PutUint64(d[GroupNameSize+8:], uint64(len(streams[i])))
		pos += len(streams[i])
	}
	for _, st := range streams {
		out = append(out, st...)
	}
	if m := CrashMinSize(len(s.groups)); s.CrashReadable && len(out) < m {
		out = append(out, make([]byte, m-len(out))...)
	}
	return out, nil
}

// WriteTo writes the state file to w.
func (s *StateFile) WriteTo(w io.Writer) (int64, error) {
	b, err := s.Bytes()
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}
