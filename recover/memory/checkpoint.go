package memory

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Checkpoint state files (.vmsn for a snapshot, .vmss for a suspend).
//
// PUBLIC: Volatility 3 `volatility3/framework/layers/vmware.py`, Volatility
// 2's `vmware.py` (Nir Izraeli's vmsnparser) and crash's `vmware_vmss.[ch]`
// (written at VMware). All integers little-endian:
//
//	header, 12 bytes: u32 magic | u32 version | u32 groupCount
//	group table, groupCount × 80 bytes: char name[64] (NUL-padded) |
//	    u64 position (of the group's tag stream) | u64 size
//	tag stream of a group, until a tag of two zero bytes:
//	    u8 flags = nIndices<<6 | valSize   u8 nameLen   name[nameLen]
//	    u32 index × nIndices
//	    valSize 0..61: the value, valSize bytes
//	    valSize 62 (compressed block) or 63 (block):
//	        u64 diskSize | u64 memSize (u32 each when magic&0xf == 0) |
//	        u16 padSize | padSize bytes | data[diskSize]
//
// The `memory` group holds regionsCount and per region i regionPPN[i]
// (first guest-physical page), regionPageNum[i] (first page in the flat
// memory file) and regionSize[i] (pages), with align_mask and the
// MainMemKnownZero bitmap. When the memory is inside the state file (no
// separate .vmem) it is the data of the block tag `Memory` (indices [0,0])
// of that group, and regionPageNum counts pages from that data's start.
// Volatility 3 skips a block's padding as if padSize were 0; Volatility 2
// and crash honour it. Writers here always write padSize 0 so all three
// agree. crash (vmware_vmss.c) needs a file of at least CrashMinSize
// bytes (StateFile.CrashReadable pads to it).

// Magic numbers of checkpoint state files (first u32, little-endian).
const (
	MagicCheckpointOld       uint32 = 0xbed0bed0 // crash: CPTDUMP_OLD_MAGIC_NUMBER
	MagicCheckpoint32        uint32 = 0xbed2bed0 // Volatility: bytes d0 be d2 be (32-bit block sizes)
	MagicCheckpoint          uint32 = 0xbed2bed2 // bytes d2 be d2 be: what Workstation writes
	MagicCheckpointPartial   uint32 = 0xbed3bed3
	MagicCheckpointRestored  uint32 = 0xbad1bad1
	MagicCheckpointNoRestore uint32 = 0xbad2bad2 // crash only
)

// Bounds of the checkpoint parser.
const (
	CheckpointHeaderSize = 12
	GroupDescSize        = 80
	GroupNameSize        = 64
	// MaxGroups caps groupCount (real files: about 100).
	MaxGroups = 4096
	// MaxTags caps the tags of one file, all groups together.
	MaxTags = 1 << 19
	// MaxTagIndices is the most indices a tag carries (two bits).
	MaxTagIndices = 3
	// MaxInlineValue is the largest inline value (valSize 0..61).
	MaxInlineValue = 61
	// MaxRegions caps regionsCount (real files: 1 to 3).
	MaxRegions = 1024
	// PageSize is the guest page size regions count in.
	PageSize = 4096
	// MaxPhysPages caps a region's end page: 2^40 pages (4 PiB, past the
	// 52-bit physical address space of x86-64).
	MaxPhysPages = 1 << 40

	valCompressedBlock = 62
	valBlock           = 63
)

// maxTags is MaxTags; tests lower it.
var maxTags = MaxTags

// Checkpoint is a parsed checkpoint state file. It holds structure only:
// block data stays in the file (Tag.Block gives where).
type Checkpoint struct {
	Magic   uint32  `json:"magic"`
	Version uint32  `json:"version"` // the header's second word
	Groups  []Group `json:"groups"`
}

// Group is one named group of tags.
type Group struct {
	Name   string `json:"name"`
	Offset int64  `json:"offset"` // file offset of the tag stream
	Size   int64  `json:"size"`   // the group table's size field
	Tags   []Tag  `json:"tags"`
}

// Tag is one tag: an inline value or a block.
type Tag struct {
	Name    string     `json:"name"`
	Indices []uint32   `json:"indices,omitempty"`
	Offset  int64      `json:"offset"`          // file offset of the tag
	Value   []byte     `json:"value,omitempty"` // inline value (nil for a block)
	Block   *BlockInfo `json:"block,omitempty"`
}

// BlockInfo locates a block tag's data in the file.
type BlockInfo struct {
	Compressed bool   `json:"compressed,omitempty"`
	DiskSize   uint64 `json:"diskSize"` // bytes stored in the file
	MemSize    uint64 `json:"memSize"`  // bytes once loaded (decompressed)
	PadSize    uint16 `json:"padSize,omitempty"`
	DataOffset int64  `json:"dataOffset"` // file offset of the data
}

// Uint returns an inline value of 1, 2, 4 or 8 bytes as an integer.
func (t *Tag) Uint() (uint64, bool) {
	if t.Block != nil {
		return 0, false
	}
	switch len(t.Value) {
	case 1:
		return uint64(t.Value[0]), true
	case 2:
		return uint64(binary.LittleEndian.Uint16(t.Value)), true
	case 4:
		return uint64(binary.LittleEndian.Uint32(t.Value)), true
	case 8:
		return binary.LittleEndian.Uint64(t.Value), true
	}
	return 0, false
}

// Group returns the first group called name, or nil.
func (c *Checkpoint) Group(name string) *Group {
	for i := range c.Groups {
		if c.Groups[i].Name == name {
			return &c.Groups[i]
		}
	}
	return nil
}

// Tag returns the first tag called name with exactly these indices, or nil.
func (g *Group) Tag(name string, indices ...uint32) *Tag {
	for i := range g.Tags {
		t := &g.Tags[i]
		if t.Name == name && len(t.Indices) == len(indices) {
			same := true
			for k, x := range indices {
				same = same && t.Indices[k] == x
			}
			if same {
				return t
			}
		}
	}
	return nil
}

// IsCheckpointMagic reports whether b starts with one of the magic numbers.
func IsCheckpointMagic(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	switch binary.LittleEndian.Uint32(b) {
	case MagicCheckpointOld, MagicCheckpoint32, MagicCheckpoint, MagicCheckpointPartial,
		MagicCheckpointRestored, MagicCheckpointNoRestore:
		return true
	}
	return false
}

// ParseCheckpoint parses the checkpoint state file of size bytes in r (a
// plain .vmsn/.vmss, or the plaintext of an encrypted one); name is used in
// errors only. Every count and size is checked against the file size and
// the Max constants. Errors are *Error wrapping keysafe.ErrCorrupt; I/O
// errors pass through.
func ParseCheckpoint(r io.ReaderAt, size int64, name string) (*Checkpoint, error) {
	var h [CheckpointHeaderSize]byte
	if size < CheckpointHeaderSize {
		return nil, corrupt(name, 0, "header", "file is %d bytes, a checkpoint header is %d", size, CheckpointHeaderSize)
	}
	if err := readAt(r, h[:], 0); err != nil {
		return nil, ioErr(name, 0, err)
	}
	le := binary.LittleEndian
	c := &Checkpoint{Magic: le.Uint32(h[0:]), Version: le.Uint32(h[4:])}
	if !IsCheckpointMagic(h[:]) {
		return nil, corrupt(name, 0, "magic", "%#08x is not a checkpoint magic", c.Magic)
	}
	n := le.Uint32(h[8:])
	if n > MaxGroups {
		return nil, corrupt(name, 8, "groupCount", "%d exceeds the maximum %d", n, MaxGroups)
	}
	if end := CheckpointHeaderSize + int64(n)*GroupDescSize; end > size {
		return nil, corrupt(name, 8, "groupCount", "%d groups need %d bytes, the file has %d", n, end, size)
	}
	table := make([]byte, int(n)*GroupDescSize)
	if err := readAt(r, table, CheckpointHeaderSize); err != nil {
		return nil, ioErr(name, CheckpointHeaderSize, err)
	}
	c.Groups = make([]Group, n)
	p := &tagParser{name: name, size: size, sizeType: 8}
	if c.Magic&0xf == 0 {
		p.sizeType = 4
	}
	for i := range c.Groups {
		d := table[i*GroupDescSize:]
		off := int64(CheckpointHeaderSize + i*GroupDescSize)
		nm := d[:GroupNameSize]
		if k := bytes.IndexByte(nm, 0); k >= 0 {
			nm = nm[:k]
		}
		g := &c.Groups[i]
		g.Name = string(nm)
		pos, sz := le.Uint64(d[GroupNameSize:]), le.Uint64(d[GroupNameSize+8:])
		if pos >= uint64(size) {
			return nil, corrupt(name, off+GroupNameSize, "group "+quote(g.Name)+" position", "%d is past the end of the %d-byte file", pos, size)
		}
		if sz > uint64(size) {
			return nil, corrupt(name, off+GroupNameSize+8, "group "+quote(g.Name)+" size", "%d exceeds the %d-byte file", sz, size)
		}
		g.Offset, g.Size = int64(pos), int64(sz)
		tags, err := p.parse(r, g)
		if err != nil {
			return nil, err
		}
		g.Tags = tags
	}
	return c, nil
}

// readAt fills b from off; a full read is a success whatever error
// comes with it.
func readAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

func ioErr(name string, off int64, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return corrupt(name, off, "file", "ends unexpectedly")
	}
	return fmt.Errorf("%s: reading at offset %d: %w", name, off, err)
}

// tagParser reads the tag streams of one file.
type tagParser struct {
	name     string
	size     int64
	sizeType int // 4 or 8: width of a block's size fields
	tags     int // tags so far, all groups
	br       *bufio.Reader
	off      int64 // file offset of the next byte br returns
}

func (p *tagParser) seek(r io.ReaderAt, off int64) {
	sr := io.NewSectionReader(r, off, p.size-off)
	if p.br == nil {
		p.br = bufio.NewReaderSize(sr, 4096)
	} else {
		p.br.Reset(sr)
	}
	p.off = off
}

func (p *tagParser) read(b []byte, field string) error {
	if _, err := io.ReadFull(p.br, b); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return corrupt(p.name, p.off, field, "the file ends inside a tag")
		}
		return fmt.Errorf("%s: reading at offset %d: %w", p.name, p.off, err)
	}
	p.off += int64(len(b))
	return nil
}

func (p *tagParser) parse(r io.ReaderAt, g *Group) ([]Tag, error) {
	p.seek(r, g.Offset)
	var tags []Tag
	var b [255]byte
	le := binary.LittleEndian
	gname := "group " + quote(g.Name)
	for {
		start := p.off
		if err := p.read(b[:2], gname+" tag"); err != nil {
			return nil, err
		}
		flags, nameLen := b[0], int(b[1])
		if flags == 0 && nameLen == 0 {
			return tags, nil
		}
		if p.tags >= maxTags {
			return nil, corrupt(p.name, start, gname+" tag", "more than %d tags in the file", maxTags)
		}
		p.tags++
		if err := p.read(b[:nameLen], gname+" tag name"); err != nil {
			return nil, err
		}
		t := Tag{Name: string(b[:nameLen]), Offset: start}
		field := gname + " tag " + quote(t.Name)
		if k := int(flags >> 6); k > 0 {
			if err := p.read(b[:4*k], field+" indices"); err != nil {
				return nil, err
			}
			t.Indices = make([]uint32, k)
			for i := range t.Indices {
				t.Indices[i] = le.Uint32(b[4*i:])
			}
		}
		switch v := int(flags & 0x3f); v {
		case valBlock, valCompressedBlock:
			if err := p.read(b[:2*p.sizeType+2], field+" block sizes"); err != nil {
				return nil, err
			}
			bi := &BlockInfo{Compressed: v == valCompressedBlock}
			if p.sizeType == 4 {
				bi.DiskSize, bi.MemSize = uint64(le.Uint32(b[0:])), uint64(le.Uint32(b[4:]))
			} else {
				bi.DiskSize, bi.MemSize = le.Uint64(b[0:]), le.Uint64(b[8:])
			}
			bi.PadSize = le.Uint16(b[2*p.sizeType:])
			bi.DataOffset = p.off + int64(bi.PadSize)
			if bi.DataOffset > p.size || bi.DiskSize > uint64(p.size-bi.DataOffset) {
				return nil, corrupt(p.name, start, field+" diskSize", "%d bytes at offset %d run past the end of the %d-byte file", bi.DiskSize, bi.DataOffset, p.size)
			}
			t.Block = bi
			tags = append(tags, t)
			p.seek(r, bi.DataOffset+int64(bi.DiskSize))
		default:
			t.Value = make([]byte, v)
			if err := p.read(t.Value, field+" value"); err != nil {
				return nil, err
			}
			tags = append(tags, t)
		}
	}
}

// MemoryLayout is what a checkpoint's `memory` group says about memory.
type MemoryLayout struct {
	// Regions maps the flat memory file to guest-physical pages. Empty
	// when the group has no regionsCount (or 0): the flat file is then
	// guest-physical memory from address 0 (Volatility 2 and crash read it
	// so; Volatility 3 refuses such a file).
	Regions []Region `json:"regions"`
	// Embedded is set when the memory is inside the state file (block tag
	// `Memory` of the group), nil when it is in a separate .vmem.
	Embedded *BlockInfo `json:"embedded,omitempty"`
	// AlignMask is the group's align_mask tag (0 if absent).
	AlignMask uint64 `json:"alignMask,omitempty"`
	// KnownZeroPages is the size in bits of the MainMemKnownZero bitmap
	// (0 if absent).
	KnownZeroPages uint64 `json:"knownZeroPages,omitempty"`
}

// Region is one run of guest-physical pages stored contiguously in the
// flat memory file.
type Region struct {
	PPN     uint64 `json:"ppn"`     // first guest-physical page number
	PageNum uint64 `json:"pageNum"` // first page in the flat memory file
	Pages   uint64 `json:"pages"`   // length in pages
}

// PhysOffset is the guest-physical byte address of the region.
func (r Region) PhysOffset() int64 { return int64(r.PPN) * PageSize }

// FlatOffset is the byte offset of the region in the flat memory file.
func (r Region) FlatOffset() int64 { return int64(r.PageNum) * PageSize }

// Size is the region's length in bytes.
func (r Region) Size() int64 { return int64(r.Pages) * PageSize }

// ErrNoMemoryGroup is returned (wrapped with keysafe.ErrCorrupt) by Memory
// for a state file without a `memory` group.
var ErrNoMemoryGroup = errors.New("no memory group")

// Memory reads the `memory` group: the region table (checked: every
// region's three tags present, sizes non-zero, no overlap in the flat file
// or in guest-physical space, ends below MaxPhysPages) and where the memory
// is stored. name is used in errors only.
func (c *Checkpoint) Memory(name string) (*MemoryLayout, error) {
	g := c.Group("memory")
	if g == nil {
		return nil, &Error{File: name, Offset: CheckpointHeaderSize, Field: "group table", Msg: "no \"memory\" group", Err: errors.Join(ErrNoMemoryGroup, errCorrupt)}
	}
	m := &MemoryLayout{}
	if t := g.Tag("Memory", 0, 0); t != nil && t.Block != nil {
		m.Embedded = t.Block
	} else {
		for i := range g.Tags { // crash takes any Memory block
			if t := &g.Tags[i]; t.Name == "Memory" && t.Block != nil {
				m.Embedded = t.Block
				break
			}
		}
	}
	if t := g.Tag("align_mask"); t != nil {
		m.AlignMask, _ = t.Uint()
	}
	if t := g.Tag("MainMemKnownZero"); t != nil && t.Block != nil {
		m.KnownZeroPages = t.Block.MemSize * 8
	}
	ct := g.Tag("regionsCount")
	if ct == nil {
		return m, nil
	}
	n, ok := ct.Uint()
	if !ok {
		return nil, corrupt(name, ct.Offset, "memory tag \"regionsCount\"", "a %d-byte value is not an integer", len(ct.Value))
	}
	if n > MaxRegions {
		return nil, corrupt(name, ct.Offset, "memory tag \"regionsCount\"", "%d exceeds the maximum %d", n, MaxRegions)
	}
	m.Regions = make([]Region, n)
	for i := range m.Regions {
		var v [3]uint64
		for k, tn := range [3]string{"regionPPN", "regionPageNum", "regionSize"} {
			t := g.Tag(tn, uint32(i))
			if t == nil {
				return nil, corrupt(name, g.Offset, "memory tag "+quote(fmt.Sprintf("%s[%d]", tn, i)), "missing (regionsCount is %d)", n)
			}
			x, ok := t.Uint()
			if !ok {
				return nil, corrupt(name, t.Offset, "memory tag "+quote(fmt.Sprintf("%s[%d]", tn, i)), "a %d-byte value is not an integer", len(t.Value))
			}
			v[k] = x
		}
		r := Region{PPN: v[0], PageNum: v[1], Pages: v[2]}
		if r.Pages == 0 || r.PPN >= MaxPhysPages || r.Pages > MaxPhysPages-r.PPN || r.PageNum >= MaxPhysPages || r.Pages > MaxPhysPages-r.PageNum {
			return nil, corrupt(name, g.Offset, fmt.Sprintf("memory region %d", i), "ppn %#x, page %#x, %d pages: empty or beyond %d pages", r.PPN, r.PageNum, r.Pages, uint64(MaxPhysPages))
		}
		m.Regions[i] = r
	}
	if err := CheckRegions(m.Regions); err != nil {
		return nil, &Error{File: name, Offset: ct.Offset, Field: "memory regions", Msg: err.Error(), Err: errCorrupt}
	}
	return m, nil
}

// CheckRegions reports regions that overlap in the flat file or in
// guest-physical space, or are empty (an error wrapping keysafe.ErrCorrupt).
func CheckRegions(rs []Region) error {
	for i, a := range rs {
		if a.Pages == 0 || a.PPN+a.Pages < a.PPN || a.PageNum+a.Pages < a.PageNum || a.PPN+a.Pages > MaxPhysPages || a.PageNum+a.Pages > MaxPhysPages {
			return fmt.Errorf("region %d is empty or beyond %d pages: %w", i, uint64(MaxPhysPages), errCorrupt)
		}
		for j := range i {
			b := rs[j]
			if a.PPN < b.PPN+b.Pages && b.PPN < a.PPN+a.Pages {
				return fmt.Errorf("regions %d and %d overlap in guest-physical pages: %w", j, i, errCorrupt)
			}
			if a.PageNum < b.PageNum+b.Pages && b.PageNum < a.PageNum+a.Pages {
				return fmt.Errorf("regions %d and %d overlap in the flat memory file: %w", j, i, errCorrupt)
			}
		}
	}
	return nil
}

// EmbeddedFlat returns the flat memory stored inside the state file r (the
// `Memory` block tag), or an error: keysafe.ErrCorrupt-wrapped when the
// state file has none (its memory is in a .vmem), keysafe.ErrUnsupported
// when the block is compressed (valSize 62: its compression is not public).
func (m *MemoryLayout) EmbeddedFlat(r io.ReaderAt, name string) (*io.SectionReader, error) {
	switch {
	case m.Embedded == nil:
		return nil, corrupt(name, 0, "memory tag \"Memory\"", "absent: the memory is in a separate .vmem")
	case m.Embedded.Compressed:
		return nil, unsupported(name, m.Embedded.DataOffset, "memory tag \"Memory\"", "a compressed block (valSize 62), whose compression is not public")
	}
	return io.NewSectionReader(r, m.Embedded.DataOffset, int64(m.Embedded.DiskSize)), nil
}

// GroupSummary describes one group without its values, for reports that
// must hold nothing from the guest (a format report).
type GroupSummary struct {
	Name       string   `json:"name"`
	Offset     int64    `json:"offset"`
	Size       int64    `json:"size"`
	Tags       int      `json:"tags"`
	Blocks     int      `json:"blocks"`
	Compressed int      `json:"compressedBlocks,omitempty"`
	BlockBytes uint64   `json:"blockBytes"`
	TagNames   []string `json:"tagNames"` // distinct names, in order, at most MaxSummaryNames
}

// MaxSummaryNames caps GroupSummary.TagNames.
const MaxSummaryNames = 64

// Summary returns each group's name, place, tag and block counts and
// distinct tag names: the structure of the file, none of its values.
func (c *Checkpoint) Summary() []GroupSummary {
	out := make([]GroupSummary, len(c.Groups))
	for i, g := range c.Groups {
		s := GroupSummary{Name: g.Name, Offset: g.Offset, Size: g.Size, Tags: len(g.Tags), TagNames: []string{}}
		seen := map[string]bool{}
		for _, t := range g.Tags {
			if t.Block != nil {
				s.Blocks++
				s.BlockBytes += t.Block.DiskSize
				if t.Block.Compressed {
					s.Compressed++
				}
			}
			if !seen[t.Name] && len(s.TagNames) < MaxSummaryNames {
				seen[t.Name] = true
				s.TagNames = append(s.TagNames, t.Name)
			}
		}
		out[i] = s
	}
	return out
}
