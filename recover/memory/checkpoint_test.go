package memory

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// handState is a state file assembled byte by byte from the layout in
// Volatility 3's vmware.py and crash's vmware_vmss.h (not by the writer):
// groups "Checkpoint" and "memory"; two regions with a hole (pages 0..16
// at flat page 0, pages 0x20..0x28 at flat page 16) and a 3-byte
// MainMemKnownZero block.
func handState() (b []byte, memPos int) {
	le := binary.LittleEndian
	u32 := func(v uint32) []byte { return le.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return le.AppendUint64(nil, v) }
	name64 := func(s string) []byte { n := make([]byte, 64); copy(n, s); return n }
	tag := func(flags byte, name string, rest ...[]byte) []byte {
		t := append([]byte{flags, byte(len(name))}, name...)
		for _, r := range rest {
			t = append(t, r...)
		}
		return t
	}
	ckpt := cat(tag(0x04, "version", u32(8)), []byte{0, 0}) // 13 + 2 bytes
	mem := cat(
		tag(0x04, "regionsCount", u32(2)),
		tag(0x44, "regionPPN", u32(0), u32(0)),
		tag(0x44, "regionPageNum", u32(0), u32(0)),
		tag(0x44, "regionSize", u32(0), u32(16)),
		tag(0x44, "regionPPN", u32(1), u32(0x20)),
		tag(0x44, "regionPageNum", u32(1), u32(16)),
		tag(0x44, "regionSize", u32(1), u32(8)),
		tag(0x3f, "MainMemKnownZero", u64(3), u64(3), []byte{0, 0}, []byte{0x01, 0x00, 0x80}),
		[]byte{0, 0},
	)
	hdr := cat(u32(MagicCheckpoint), u32(0), u32(2))
	pos0 := 12 + 2*80
	memPos = pos0 + len(ckpt)
	table := cat(name64("Checkpoint"), u64(uint64(pos0)), u64(uint64(len(ckpt))),
		name64("memory"), u64(uint64(memPos)), u64(uint64(len(mem))))
	return cat(hdr, table, ckpt, mem), memPos
}

var handRegions = []Region{{PPN: 0, PageNum: 0, Pages: 16}, {PPN: 0x20, PageNum: 16, Pages: 8}}

func TestParseHandState(t *testing.T) {
	b, memPos := handState()
	c, err := ParseCheckpoint(bytes.NewReader(b), int64(len(b)), "hand.vmsn")
	if err != nil {
		t.Fatal(err)
	}
	if c.Magic != MagicCheckpoint || len(c.Groups) != 2 || c.Groups[0].Name != "Checkpoint" || c.Groups[1].Name != "memory" || c.Groups[1].Offset != int64(memPos) {
		t.Fatalf("groups: %+v", c.Groups)
	}
	if v, ok := c.Group("Checkpoint").Tag("version").Uint(); !ok || v != 8 {
		t.Fatalf("version tag %d %v", v, ok)
	}
	g := c.Group("memory")
	if len(g.Tags) != 8 {
		t.Fatalf("%d memory tags, want 8", len(g.Tags))
	}
	kz := g.Tag("MainMemKnownZero")
	// tag at memPos + 18 + 6×(19|23|20 pairs): its data is 2+16+8+8+2 bytes in.
	wantData := int64(memPos + 18 + 2*(19+23+20) + 36)
	if kz == nil || kz.Block == nil || kz.Block.DiskSize != 3 || kz.Block.DataOffset != wantData || !bytes.Equal(b[wantData:wantData+3], []byte{1, 0, 0x80}) {
		t.Fatalf("MainMemKnownZero: %+v (want data at %d)", kz, wantData)
	}
	m, err := c.Memory("hand.vmsn")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Regions, handRegions) || m.Embedded != nil || m.KnownZeroPages != 24 {
		t.Fatalf("layout %+v", m)
	}

	// The writer makes the same bytes from the same content.
	var s StateFile
	s.Group("Checkpoint").Uint32("version", 8)
	mg := s.Group("memory").Uint32("regionsCount", 2)
	for i, r := range handRegions {
		mg.Uint32("regionPPN", uint32(r.PPN), uint32(i)).Uint32("regionPageNum", uint32(r.PageNum), uint32(i)).Uint32("regionSize", uint32(r.Pages), uint32(i))
	}
	mg.Block("MainMemKnownZero", []byte{1, 0, 0x80})
	w, err := s.Bytes()
	if err != nil || !bytes.Equal(w, b) {
		t.Fatalf("writer differs from the hand-assembled file: %v\n%x\n%x", err, w, b)
	}
}

// TestPadSizeHonoured: a block's padSize moves its data (crash and
// Volatility 2 read it so).
func TestPadSizeHonoured(t *testing.T) {
	le := binary.LittleEndian
	stream := cat([]byte{0x3f, 1, 'M'}, le.AppendUint64(nil, 2), le.AppendUint64(nil, 2), []byte{4, 0}, []byte{9, 9, 9, 9}, []byte{0xaa, 0xbb}, []byte{0x01, 1, 'x', 7}, []byte{0, 0})
	name := make([]byte, 64)
	copy(name, "g")
	b := cat(le.AppendUint32(nil, MagicCheckpoint), le.AppendUint32(nil, 0), le.AppendUint32(nil, 1), name, le.AppendUint64(nil, 92), le.AppendUint64(nil, uint64(len(stream))), stream)
	c, err := ParseCheckpoint(bytes.NewReader(b), int64(len(b)), "")
	if err != nil {
		t.Fatal(err)
	}
	g := c.Group("g")
	if len(g.Tags) != 2 || g.Tags[0].Block.DataOffset != 92+3+16+2+4 || g.Tags[0].Block.PadSize != 4 || !bytes.Equal(g.Tags[1].Value, []byte{7}) {
		t.Fatalf("tags %+v %+v", g.Tags[0].Block, g.Tags[1])
	}
}

func TestStateFileRoundTrip(t *testing.T) {
	for _, magic := range []uint32{MagicCheckpoint, MagicCheckpoint32, MagicCheckpointOld, MagicCheckpointPartial} {
		var s StateFile
		s.Magic = magic
		s.Group("Checkpoint").Uint32("version", 8).Value("name", []byte("snap"))
		s.Group("cpu").Uint32("cpu:numVCPUs", 1).Uint64("CR64", 0x1ae000, 0, 3)
		emb := mixedMemory(9, 24*PageSize)
		s.MemoryGroup(handRegions, []uint64{3, 17}, emb)
		b, err := s.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseCheckpoint(bytes.NewReader(b), int64(len(b)), "")
		if err != nil {
			t.Fatalf("%#x: %v", magic, err)
		}
		if v, _ := c.Group("cpu").Tag("CR64", 0, 3).Uint(); v != 0x1ae000 {
			t.Fatalf("CR64[0][3] = %#x", v)
		}
		m, err := c.Memory("")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(m.Regions, handRegions) || m.AlignMask != 0xffff || m.KnownZeroPages != 24 || m.Embedded == nil {
			t.Fatalf("%#x: layout %+v", magic, m)
		}
		e := m.Embedded
		if e.DiskSize != uint64(len(emb)) || !bytes.Equal(b[e.DataOffset:e.DataOffset+int64(e.DiskSize)], emb) {
			t.Fatalf("%#x: embedded memory not where the parser says", magic)
		}
		kz := c.Group("memory").Tag("MainMemKnownZero").Block
		if bm := b[kz.DataOffset : kz.DataOffset+3]; !bytes.Equal(bm, []byte{0x08, 0, 0x02}) {
			t.Fatalf("known-zero bitmap %x", bm)
		}
	}
}

func TestCheckpointCorrupt(t *testing.T) {
	good, memPos := handState()
	le := binary.LittleEndian
	set32 := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		le.PutUint32(b[off:], v)
		return b
	}
	set64 := func(off int, v uint64) []byte {
		b := bytes.Clone(good)
		le.PutUint64(b[off:], v)
		return b
	}
	regionPPN1 := memPos + 18 + 19 + 23 + 20 // the tag regionPPN[1]
	cases := []struct {
		name string
		b    []byte
		off  int64
	}{
		{"short header", good[:11], 0},
		{"bad magic", set32(0, 0x12345678), 0},
		{"huge groupCount", set32(8, 0xffffffff), 8},
		{"groupCount past the file", set32(8, 1000), 8},
		{"group position past the end", set64(12+80+64, uint64(len(good))), 12 + 80 + 64},
		{"group size past the end", set64(12+64+8, 1<<40), 12 + 64 + 8},
		{"truncated in a tag name", good[:regionPPN1+5], int64(regionPPN1 + 2)},
		{"truncated in a block", good[:len(good)-4], int64(len(good) - 2 - 3 - 36)},
		{"block past the end", set64(len(good)-2-3-2-16, 1<<50), int64(len(good) - 2 - 3 - 2 - 16 - 16 - 2)},
		{"no terminator", good[:len(good)-2], int64(len(good) - 2)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseCheckpoint(bytes.NewReader(c.b), int64(len(c.b)), "x.vmsn")
			var e *Error
			if !errors.Is(err, keysafe.ErrCorrupt) || !errors.As(err, &e) || e.File != "x.vmsn" {
				t.Fatalf("err %v", err)
			}
			if e.Offset != c.off {
				t.Fatalf("offset %d, want %d (%v)", e.Offset, c.off, err)
			}
		})
	}

	// Layout problems the parser lets through and Memory refuses.
	layout := []struct {
		name string
		b    []byte
	}{
		{"huge regionsCount", set32(memPos+2+12, 1<<30)},
		{"missing regionPPN[1]", func() []byte { b := bytes.Clone(good); b[regionPPN1+2] = 'X'; return b }()},
		{"overlapping regions", set32(regionPPN1+2+9+4, 0x08)},
		{"overlapping in the flat file", set32(regionPPN1+19+2+13+4, 8)},
		{"empty region", set32(memPos+18+19+23+2+10+4, 0)},
		{"no memory group", func() []byte { b := bytes.Clone(good); copy(b[12+80:], "memorX"); return b }()},
	}
	for _, c := range layout {
		t.Run(c.name, func(t *testing.T) {
			cp, err := ParseCheckpoint(bytes.NewReader(c.b), int64(len(c.b)), "x.vmsn")
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			_, err = cp.Memory("x.vmsn")
			if !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatalf("err %v", err)
			}
		})
	}
}

func TestCheckRegions(t *testing.T) {
	for _, rs := range [][]Region{
		{{PPN: MaxPhysPages - 1, Pages: 2}},
		{{PageNum: MaxPhysPages - 1, Pages: 2}},
		{{PPN: 1 << 63, Pages: 1 << 63}},
		{{Pages: 0}},
		{{PPN: 0, PageNum: 0, Pages: 4}, {PPN: 3, PageNum: 4, Pages: 1}},
		{{PPN: 0, PageNum: 0, Pages: 4}, {PPN: 8, PageNum: 3, Pages: 1}},
	} {
		if err := CheckRegions(rs); !errors.Is(err, keysafe.ErrCorrupt) {
			t.Fatalf("%+v: %v", rs, err)
		}
	}
	if err := CheckRegions(handRegions); err != nil {
		t.Fatal(err)
	}
}

// TestMaxTags: a file of tiny tags stops at the cap (lowered here to keep
// the test fast), with bounded work.
func TestMaxTags(t *testing.T) {
	if maxTags != MaxTags {
		t.Fatal("maxTags is not MaxTags")
	}
	defer func(n int) { maxTags = n }(maxTags)
	maxTags = 5000
	le := binary.LittleEndian
	name := make([]byte, 64)
	copy(name, "g")
	stream := bytes.Repeat([]byte{0x01, 0, 7}, maxTags+1) // unnamed 1-byte values
	b := cat(le.AppendUint32(nil, MagicCheckpoint), le.AppendUint32(nil, 0), le.AppendUint32(nil, 1), name, le.AppendUint64(nil, 92), le.AppendUint64(nil, 0), stream, []byte{0, 0})
	_, err := ParseCheckpoint(bytes.NewReader(b), int64(len(b)), "")
	var e *Error
	if !errors.Is(err, keysafe.ErrCorrupt) || !errors.As(err, &e) || e.Offset != int64(92+3*maxTags) {
		t.Fatalf("err %v", err)
	}
}

func TestNoRegionsIsIdentity(t *testing.T) {
	var s StateFile
	s.Group("memory").Block("Memory", make([]byte, 8192), 0, 0)
	b, _ := s.Bytes()
	c, err := ParseCheckpoint(bytes.NewReader(b), int64(len(b)), "")
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Memory("")
	if err != nil || len(m.Regions) != 0 || m.Embedded == nil || m.Embedded.DiskSize != 8192 {
		t.Fatalf("%+v %v", m, err)
	}
}

func TestEmbeddedFlatAndSummary(t *testing.T) {
	var s StateFile
	s.Group("cpu").Uint64("CR64", 0x1ae000, 0, 3).Uint64("CR64", 5, 0, 4)
	flat := mixedMemory(18, 24*PageSize)
	s.MemoryGroup(handRegions, nil, flat)
	b, _ := s.Bytes()
	c, err := ParseCheckpoint(bytes.NewReader(b), int64(len(b)), "")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := c.Memory("")
	sr, err := m.EmbeddedFlat(bytes.NewReader(b), "")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, sr.Size())
	if _, err := sr.ReadAt(got, 0); err != nil || !bytes.Equal(got, flat) {
		t.Fatalf("embedded flat: %v", err)
	}
	sum := c.Summary()
	if len(sum) != 2 || sum[0].Tags != 2 || !reflect.DeepEqual(sum[0].TagNames, []string{"CR64"}) || sum[1].Blocks != 2 || sum[1].BlockBytes != uint64(len(flat)+3) {
		t.Fatalf("summary %+v", sum)
	}
	// A compressed Memory block is unsupported; no Memory block is corrupt.
	m.Embedded.Compressed = true
	if _, err := m.EmbeddedFlat(bytes.NewReader(b), ""); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("compressed: %v", err)
	}
	m.Embedded = nil
	if _, err := m.EmbeddedFlat(bytes.NewReader(b), ""); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("absent: %v", err)
	}
}
