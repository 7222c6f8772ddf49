package vmdk

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// Builders of small valid extents for the fuzz targets: a fuzz input
// describes a disk (layout, geometry, which grains hold what) and the
// builder lays out a file of a few KiB around it, the way VMware and qemu
// write them (docs/formats.md §12). Patches (offset, XOR byte) then change the
// header, the maps or the stream. An unchanged file must read back exactly
// what was built, allocation map included; a changed one must fail only
// with ErrCorrupt or ErrUnsupported and keep every run inside the disk.
// Sizes are capped here, so each input costs microseconds, not megabytes.

// Layouts of a built hosted sparse file.
const (
	layoutSparse        = iota // monolithicSparse: GD (+ redundant GD) and GTs up front, plain grains
	layoutStreamBare           // streamOptimized, GD up front, bare zlib grains
	layoutStreamMarkers        // streamOptimized, GD up front, grain markers
	layoutStreamAtEnd          // VMware's stream: grains, GT/GD markers, footer, end-of-stream
)

const (
	// fuzzMaxVirtualSect caps the virtual size of a built sparse file
	// (256 KiB).
	fuzzMaxVirtualSect = 512
	// fuzzMaxDataGrains caps the data grains of a built file.
	fuzzMaxDataGrains = 16
	// fuzzReadBudget caps the bytes a check reads from a changed file.
	fuzzReadBudget = 256 << 10
	// fuzzMaxRuns caps the runs a check walks.
	fuzzMaxRuns = 4096
)

var errFuzzEnough = errors.New("enough")

// span is a byte range of a built file.
type span struct{ off, n int }

// built is a built extent file and what it must read as.
type built struct {
	file   []byte
	want   []byte // virtual content (nil when too large to hold: deltas)
	size   int64  // virtual bytes
	runs   []Run  // allocation map: Data and Zero runs, merged
	data   map[int64][]byte
	grain  int64
	header []span // header fields (and the footer's copy)
	meta   []span // grain directories, grain tables, metadata markers
	body   span   // everything after the header
}

// patch XORs the triplets of p (big-endian u16 offset, byte) into the
// bytes of regions (offset modulo their total length) and reports whether
// any byte changed.
func (b *built) patch(p []byte, regions []span) bool {
	total := 0
	for _, r := range regions {
		total += r.n
	}
	if total == 0 {
		return false
	}
	changed := false
	for i := 0; i+3 <= len(p); i += 3 {
		o := int(binary.BigEndian.Uint16(p[i:])) % total
		for _, r := range regions {
			if o < r.n {
				b.file[r.off+o] ^= p[i+2]
				changed = changed || p[i+2] != 0
				break
			}
			o -= r.n
		}
	}
	return changed
}

// grainKey names one cached grain: its size, number and content kind.
type grainKey struct {
	bytes, gi int64
	kind      byte
}

var grainCacheMu sync.Mutex
var grainCacheMap = map[grainKey][2][]byte{} // plain, zlib

// fuzzGrain returns the content of grain gi (kind 0: zeros, 1: text,
// 2: random; 1 and 2 start with the grain number, so a grain read from
// the wrong place shows) and its zlib form, both cached: compressing is
// the only costly step, done once per grain.
func fuzzGrain(grainBytes, gi int64, kind byte) (plain, z []byte) {
	k := grainKey{grainBytes, gi, kind % 3}
	grainCacheMu.Lock()
	defer grainCacheMu.Unlock()
	if c, ok := grainCacheMap[k]; ok {
		return c[0], c[1]
	}
	plain = make([]byte, grainBytes)
	switch k.kind {
	case 1:
		for i := range plain {
			plain[i] = "vmcrypt fuzz grain, "[i%20]
		}
	case 2:
		r := rand.New(rand.NewPCG(uint64(gi), uint64(grainBytes)))
		for i := range plain {
			plain[i] = byte(r.Uint32())
		}
	}
	if k.kind != 0 {
		binary.LittleEndian.PutUint64(plain, uint64(gi)+1)
	}
	var zb bytes.Buffer
	zw := zlib.NewWriter(&zb)
	zw.Write(plain)
	zw.Close()
	grainCacheMap[k] = [2][]byte{plain, zb.Bytes()}
	return plain, zb.Bytes()
}

// fileBuf is a growing file image written by sectors.
type fileBuf struct{ b []byte }

func (f *fileBuf) put(sect int64, p []byte) {
	end := int(sect)*SectorSize + len(p)
	if end > len(f.b) {
		f.b = append(f.b, make([]byte, end-len(f.b))...)
	}
	copy(f.b[sect*SectorSize:], p)
}

// end pads the image to sect sectors.
func (f *fileBuf) end(sect int64) {
	f.put(sect, nil)
	f.b = f.b[:sect*SectorSize]
}

func sectorsFor(n int64) int64 { return (n + SectorSize - 1) / SectorSize }

// sparseSpec is a small hosted sparse or stream-optimized disk.
type sparseSpec struct {
	layout     int
	grainSect  int64 // 8, 16 or 32
	gtes       int64 // 1..512
	capSect    int64 // 1..fuzzMaxVirtualSect (a descriptor refuses 0)
	redundant  bool  // a redundant GD (monolithicSparse)
	zeroFlag   bool  // header flag bit 2
	descriptor bool  // an embedded descriptor
	unclean    bool
	states     []byte // per grain: &3 0 unallocated, 1 zeroed, 2-3 data of kind (b>>2)%3; bit 7: a free sector before it
}

// sparseSpecOf decodes a fuzz input: shape bits 0-1 layout, 2 redundant
// GD, 3 zeroed-grain flag, 4 no descriptor, 5 unclean shutdown, 6-7 grain
// size (8 << n sectors, n = 3 read as 0).
func sparseSpecOf(shape uint8, gtes, capSect uint16, states []byte) sparseSpec {
	gs := int64(8) << (shape >> 6 % 3)
	if shape>>6 == 3 {
		gs = 8
	}
	return sparseSpec{
		layout:     int(shape & 3),
		grainSect:  gs,
		gtes:       1 + int64(gtes)%maxGTEsPerGT,
		capSect:    1 + int64(capSect)%fuzzMaxVirtualSect,
		redundant:  shape&4 != 0 && shape&3 == layoutSparse,
		zeroFlag:   shape&8 != 0,
		descriptor: shape&16 == 0,
		unclean:    shape&32 != 0,
		states:     states,
	}
}

// addRun appends r to runs, merging it with the last run when adjacent and
// of the same state (as Link.WalkAllocated reports them).
func addRun(runs []Run, r Run) []Run {
	if n := len(runs); n > 0 && runs[n-1].Off+runs[n-1].Len == r.Off && runs[n-1].State == r.State {
		runs[n-1].Len += r.Len
		return runs
	}
	return append(runs, r)
}

// sparseHeaderBytes encodes a KDMV header.
func sparseHeaderBytes(h sparseHeader) []byte {
	b := make([]byte, SectorSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], sparseMagic)
	le.PutUint32(b[4:], h.Version)
	le.PutUint32(b[8:], h.Flags)
	le.PutUint64(b[12:], h.Capacity)
	le.PutUint64(b[20:], h.GrainSize)
	le.PutUint64(b[28:], h.DescriptorOffset)
	le.PutUint64(b[36:], h.DescriptorSize)
	le.PutUint32(b[44:], h.NumGTEsPerGT)
	le.PutUint64(b[48:], h.RGDOffset)
	le.PutUint64(b[56:], h.GDOffset)
	le.PutUint64(b[64:], h.OverHead)
	b[72] = h.UncleanShutdown
	copy(b[73:77], "\n \r\n")
	le.PutUint16(b[77:], h.CompressAlgo)
	return b
}

// marker is a stream metadata marker sector: numSectors, 0, type.
func marker(numSectors uint64, typ uint32) []byte {
	b := make([]byte, SectorSize)
	binary.LittleEndian.PutUint64(b, numSectors)
	binary.LittleEndian.PutUint32(b[12:], typ)
	return b
}

// buildSparse lays out sp as a file.
func buildSparse(sp sparseSpec) *built {
	le := binary.LittleEndian
	g := sp.grainSect
	gb := g * SectorSize
	nGrains := (sp.capSect + g - 1) / g
	nGD := (sp.capSect + g*sp.gtes - 1) / (g * sp.gtes)
	gdSect, gtSect := sectorsFor(nGD*4), sectorsFor(sp.gtes*4)
	capBytes := sp.capSect * SectorSize
	b := &built{want: make([]byte, capBytes), size: capBytes, data: map[int64][]byte{}, grain: gb}

	// What each grain holds.
	type grainState struct {
		st   State
		kind byte
		gap  bool
	}
	states := make([]grainState, nGrains)
	hasGT := make([]bool, nGD)
	nData := 0
	for gi := range min(nGrains, int64(len(sp.states))) {
		s := sp.states[gi]
		switch {
		case s&3 == 1:
			states[gi] = grainState{st: Zero}
		case s&3 >= 2 && nData < fuzzMaxDataGrains:
			states[gi] = grainState{st: Data, kind: s >> 2 % 3, gap: s&0x80 != 0}
			nData++
		default:
			continue
		}
		hasGT[gi/sp.gtes] = true
	}
	for gi, s := range states {
		n := min(gb, capBytes-int64(gi)*gb)
		if s.st == Data {
			p, _ := fuzzGrain(gb, int64(gi), s.kind)
			copy(b.want[int64(gi)*gb:], p[:n])
			b.data[int64(gi)] = p[:n]
		}
		if s.st != Unallocated {
			b.runs = addRun(b.runs, Run{Off: int64(gi) * gb, Len: n, State: s.st})
		}
	}

	h := sparseHeader{Version: 1, Flags: flagNewlineTest, Capacity: uint64(sp.capSect), GrainSize: uint64(g), NumGTEsPerGT: uint32(sp.gtes)}
	if sp.layout != layoutSparse {
		h.Version, h.Flags, h.CompressAlgo = 3, h.Flags|flagCompressed, compressDeflate
		if sp.layout != layoutStreamBare {
			h.Flags |= flagMarkers
		}
	}
	if sp.zeroFlag {
		h.Flags |= flagZeroedGTE
	}
	if sp.unclean {
		h.UncleanShutdown = 1
	}
	f := &fileBuf{}
	sec := int64(1)
	if sp.descriptor {
		ct := "monolithicSparse"
		if sp.layout != layoutSparse {
			ct = "streamOptimized"
		}
		d := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=1234abcd\nparentCID=ffffffff\ncreateType=\"%s\"\n\n# Extent description\nRW %d SPARSE \"fuzz.vmdk\"\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n", ct, sp.capSect)
		h.DescriptorOffset, h.DescriptorSize = 1, uint64(sectorsFor(int64(len(d))))
		f.put(1, []byte(d))
		sec += int64(h.DescriptorSize)
	}

	gte := make([]uint32, nGD*sp.gtes) // every table's entries, in GD order
	gdAt := func(at int64) {           // GD at sector at, its tables from tabs
		b.meta = append(b.meta, span{int(at) * SectorSize, int(nGD * 4)})
	}
	putTables := func(gd, tabs int64) int64 { // writes a GD and its tables; returns the sector after
		raw := make([]byte, gdSect*SectorSize)
		for i := range nGD {
			if hasGT[i] {
				le.PutUint32(raw[4*i:], uint32(tabs))
				t := make([]byte, gtSect*SectorSize)
				for j := range sp.gtes {
					le.PutUint32(t[4*j:], gte[i*sp.gtes+j])
				}
				f.put(tabs, t)
				b.meta = append(b.meta, span{int(tabs) * SectorSize, int(sp.gtes * 4)})
				tabs += gtSect
			}
		}
		f.put(gd, raw)
		gdAt(gd)
		return tabs
	}
	// Grains: stored in order, after the metadata (up front) or the header.
	var gdSec, rgdSec, over int64
	nGT := int64(0)
	for _, x := range hasGT {
		if x {
			nGT++
		}
	}
	if sp.layout == layoutStreamAtEnd {
		over = max(sec, 2) // a grain at sector 1 would read as GTE 1, a zeroed grain
	} else {
		if sp.redundant {
			rgdSec = sec
			sec += gdSect + nGT*gtSect
		}
		gdSec = sec
		sec += gdSect + nGT*gtSect
		over = (sec + g - 1) / g * g
	}
	h.OverHead = uint64(over)
	sec = over
	for gi, s := range states {
		switch s.st {
		case Zero:
			gte[gi] = 1
		case Data:
			if s.gap {
				sec++
			}
			gte[gi] = uint32(sec)
			p, z := fuzzGrain(gb, int64(gi), s.kind)
			switch sp.layout {
			case layoutSparse:
				f.put(sec, p)
				sec += g
			case layoutStreamBare:
				f.put(sec, z)
				sec += sectorsFor(int64(len(z)))
			default:
				m := make([]byte, grainMarkerLen, grainMarkerLen+len(z))
				le.PutUint64(m, uint64(int64(gi)*g))
				le.PutUint32(m[8:], uint32(len(z)))
				f.put(sec, append(m, z...))
				sec += sectorsFor(int64(len(m) + len(z)))
			}
		}
	}
	if sp.layout != layoutStreamAtEnd {
		h.GDOffset = uint64(gdSec)
		if sp.redundant {
			h.Flags |= flagRedundantGT
			h.RGDOffset = uint64(rgdSec)
			putTables(rgdSec, rgdSec+gdSect)
		}
		putTables(gdSec, gdSec+gdSect)
		f.put(0, sparseHeaderBytes(h))
		f.end(sec)
		b.header = []span{{0, SectorSize}}
	} else {
		// GT markers and tables, a GD marker and the GD, the footer.
		tabs := make([]int64, nGD)
		for i := range nGD {
			if hasGT[i] {
				f.put(sec, marker(uint64(gtSect), markerGT))
				b.meta = append(b.meta, span{int(sec) * SectorSize, 16})
				tabs[i] = sec + 1
				t := make([]byte, gtSect*SectorSize)
				for j := range sp.gtes {
					le.PutUint32(t[4*j:], gte[i*sp.gtes+j])
				}
				f.put(sec+1, t)
				b.meta = append(b.meta, span{int(sec+1) * SectorSize, int(sp.gtes * 4)})
				sec += 1 + gtSect
			}
		}
		f.put(sec, marker(uint64(gdSect), markerGD))
		b.meta = append(b.meta, span{int(sec) * SectorSize, 16})
		raw := make([]byte, gdSect*SectorSize)
		for i, t := range tabs {
			le.PutUint32(raw[4*i:], uint32(t))
		}
		f.put(sec+1, raw)
		gdAt(sec + 1)
		fh := h
		fh.GDOffset = uint64(sec + 1)
		sec += 1 + gdSect
		f.put(sec, marker(1, markerFooter))
		f.put(sec+1, sparseHeaderBytes(fh))
		b.header = []span{{0, SectorSize}, {int(sec+1) * SectorSize, SectorSize}}
		f.put(sec+2, make([]byte, SectorSize)) // end of stream
		f.end(sec + 3)
		h.GDOffset = gdAtEnd
		f.put(0, sparseHeaderBytes(h))
	}
	b.file = f.b
	b.body = span{SectorSize, len(f.b) - SectorSize}
	return b
}

// openFuzzSparse opens data as a monolithic sparse or stream file, and,
// when that fails, with the marker scan of truncated streams.
func openFuzzSparse(data []byte) (*Link, error) {
	l := &Link{Path: "fuzz.vmdk", cache: &gtCache{}}
	err := l.openMonolithic(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		l = &Link{Path: "fuzz.vmdk", cache: &gtCache{}, scanStreams: true}
		err = l.openMonolithic(bytes.NewReader(data), int64(len(data)))
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

// checkSparse opens the (possibly changed) file of b and checks it:
// exact: unchanged, it must read as built; dataOK: whatever it reads as
// Data must be the built bytes (a stream only cut short, rebuilt by the
// marker scan); otherwise only the generic checks.
func checkSparse(t *testing.T, b *built, exact, dataOK bool) {
	l, err := openFuzzSparse(b.file)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("open: %v is neither ErrCorrupt nor ErrUnsupported", err)
		}
		if exact {
			t.Fatalf("the unchanged file does not open: %v", err)
		}
		return
	}
	var model *built
	if exact || dataOK {
		model = b
	}
	runs, err := walkFuzz(t, l.Size(), l.WalkAllocated, l.ReadAt, model)
	if err != nil && err != errFuzzEnough && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupported) {
		t.Fatalf("walk/read: %v is neither ErrCorrupt nor ErrUnsupported", err)
	}
	if dataOK && err != nil {
		t.Fatalf("reading a stream cut short: %v", err)
	}
	if !exact {
		return
	}
	if err != nil {
		t.Fatalf("the unchanged file does not read: %v", err)
	}
	if l.Size() != b.size || !runsEqual(runs, b.runs) {
		t.Fatalf("size %d, map %v; built %d, %v", l.Size(), runs, b.size, b.runs)
	}
	all := make([]byte, b.size)
	if n, err := l.ReadAt(all, 0); n != len(all) || err != nil || !bytes.Equal(all, b.want) {
		t.Fatalf("ReadAt of the whole disk: %d, %v, equal %v", n, err, bytes.Equal(all, b.want))
	}
}

func runsEqual(a, b []Run) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// walkFuzz walks an allocation map (at most fuzzMaxRuns runs), checks
// each run lies inside the disk, after the previous one, and reads Data
// runs (at most fuzzReadBudget bytes in all) with readAt. With a model,
// Data read must be the model's bytes and Zero runs lie where the model
// holds zeros. It returns the runs seen.
func walkFuzz(t *testing.T, size int64, walk func(func(Run) error) error, readAt func([]byte, int64) (int, error), model *built) ([]Run, error) {
	var runs []Run
	budget := int64(fuzzReadBudget)
	buf := make([]byte, 64<<10)
	end := int64(0)
	err := walk(func(r Run) error {
		if r.Off < end || r.Len <= 0 || r.Off+r.Len > size || (r.State != Data && r.State != Zero) || r.Level != 0 {
			t.Fatalf("bad run %+v (size %d, previous end %d)", r, size, end)
		}
		end = r.Off + r.Len
		if runs = append(runs, r); len(runs) > fuzzMaxRuns {
			return errFuzzEnough
		}
		for off := r.Off; off < r.Off+r.Len && budget > 0; {
			n := min(r.Off+r.Len-off, int64(len(buf)), budget)
			if r.State == Data {
				if k, err := readAt(buf[:n], off); k != int(n) || err != nil {
					if err == nil {
						t.Fatalf("short read %d of %d with no error", k, n)
					}
					return err
				}
			} else {
				clear(buf[:n])
			}
			if model != nil && !modelHas(model, buf[:n], off) {
				t.Fatalf("%v run: bytes at %d differ from the built disk", r.State, off)
			}
			budget -= n
			off += n
		}
		return nil
	})
	return runs, err
}

// modelHas reports whether p is what the built disk holds at off.
func modelHas(m *built, p []byte, off int64) bool {
	if m.want != nil {
		return off+int64(len(p)) <= int64(len(m.want)) && bytes.Equal(p, m.want[off:off+int64(len(p))])
	}
	for len(p) > 0 {
		gi := off / m.grain
		in := off - gi*m.grain
		n := min(int64(len(p)), m.grain-in)
		if d, ok := m.data[gi]; ok {
			if in+n > int64(len(d)) || !bytes.Equal(p[:n], d[in:in+n]) {
				return false
			}
		} else if bytes.IndexFunc(p[:n], func(r rune) bool { return r != 0 }) >= 0 {
			return false
		}
		p, off = p[n:], off+n
	}
	return true
}

// deltaSpec is a small COWD or SEsparse delta.
type deltaSpec struct {
	capSect   int64
	grainSect int64 // COWD only (SEsparse grains are 8 sectors)
	extraGD   bool  // COWD: one more GD entry than needed
	grains    []byte
}

// deltaGrains decodes grain triplets (big-endian u16 grain number modulo
// the grain count, kind byte) into grain numbers and kinds, first come
// first kept, at most fuzzMaxDataGrains.
func deltaGrains(p []byte, nGrains int64) (gis []int64, kinds []byte) {
	seen := map[int64]bool{}
	for i := 0; i+3 <= len(p) && len(gis) < fuzzMaxDataGrains && nGrains > 0; i += 3 {
		gi := int64(binary.BigEndian.Uint16(p[i:])) % nGrains
		if !seen[gi] {
			seen[gi] = true
			gis = append(gis, gi)
			kinds = append(kinds, p[i+2])
		}
	}
	return gis, kinds
}

// deltaModel fills the runs and data of b from grains in state order.
func deltaModel(b *built, states map[int64]State, kinds map[int64]byte) {
	keys := make([]int64, 0, len(states))
	for gi := range states {
		keys = append(keys, gi)
	}
	slicesSort(keys)
	for _, gi := range keys {
		n := min(b.grain, b.size-gi*b.grain)
		if states[gi] == Data {
			p, _ := fuzzGrain(b.grain, gi, kinds[gi])
			b.data[gi] = p[:n]
		}
		b.runs = addRun(b.runs, Run{Off: gi * b.grain, Len: n, State: states[gi]})
	}
}

// buildCOWDBytes lays out a COWD extent: a 2048-byte header, the GD at
// sector 4, a 4096-entry table per GD slot with grains, then the grains in
// the order given.
func buildCOWDBytes(sp deltaSpec) *built {
	le := binary.LittleEndian
	g := sp.grainSect
	nGrains := (sp.capSect + g - 1) / g
	nGD := (sp.capSect + cowdGTEntries*g - 1) / (cowdGTEntries * g)
	gdEntries := nGD
	if sp.extraGD {
		gdEntries++
	}
	b := &built{size: sp.capSect * SectorSize, grain: g * SectorSize, data: map[int64][]byte{}}
	gis, kinds := deltaGrains(sp.grains, nGrains)
	states, kindOf := map[int64]State{}, map[int64]byte{}
	const gdSector = 4
	sec := gdSector + sectorsFor(gdEntries*4)
	gt := map[int64]int64{} // GD slot -> table sector
	for _, gi := range gis {
		if _, ok := gt[gi/cowdGTEntries]; !ok {
			gt[gi/cowdGTEntries] = sec
			sec += cowdGTEntries * 4 / SectorSize
		}
	}
	f := &fileBuf{}
	tabs := map[int64][]byte{} // table sector -> entries
	for i, gi := range gis {
		states[gi], kindOf[gi] = Data, kinds[i]
		p, _ := fuzzGrain(b.grain, gi, kinds[i])
		f.put(sec, p)
		tab := gt[gi/cowdGTEntries]
		if tabs[tab] == nil {
			tabs[tab] = make([]byte, cowdGTEntries*4)
		}
		le.PutUint32(tabs[tab][gi%cowdGTEntries*4:], uint32(sec))
		sec += g
	}
	gd := make([]byte, gdEntries*4)
	for slot, tab := range gt {
		le.PutUint32(gd[4*slot:], uint32(tab))
		f.put(tab, tabs[tab])
		b.meta = append(b.meta, span{int(tab) * SectorSize, cowdGTEntries * 4})
	}
	f.put(gdSector, gd)
	b.meta = append(b.meta, span{gdSector * SectorSize, len(gd)})
	h := make([]byte, 4*SectorSize)
	copy(h, "COWD")
	le.PutUint32(h[4:], 1)
	le.PutUint32(h[8:], 3)
	le.PutUint32(h[12:], uint32(sp.capSect))
	le.PutUint32(h[16:], uint32(g))
	le.PutUint32(h[20:], gdSector)
	le.PutUint32(h[24:], uint32(gdEntries))
	le.PutUint32(h[28:], uint32(sec))
	f.put(0, h)
	f.end(max(sec, gdSector+sectorsFor(gdEntries*4)))
	b.file = f.b
	b.header = []span{{0, cowdHeaderLen}}
	b.body = span{cowdHeaderLen, len(f.b) - cowdHeaderLen}
	deltaModel(b, states, kindOf)
	return b
}

// buildSESparseBytes lays out an SEsparse extent: const header, volatile
// header at sector 1, the GD at sector 2, 64-sector tables (in reverse
// order of their GD slots, so a table's index differs from its slot),
// then grains in clusters in the order given. Grain kinds &3: 0 unmapped,
// 1 zeroed, 2-3 data of kind (k>>2)%3.
func buildSESparseBytes(sp deltaSpec) *built {
	le := binary.LittleEndian
	const g = seSparseGrainSectors
	nGrains := (sp.capSect + g - 1) / g
	perGT := int64(seSparseGTEntries)
	nGD := (nGrains + perGT - 1) / perGT
	gdSectors := max(1, sectorsFor(nGD*8))
	const volSector, gdSector = 1, 2
	gtBase := gdSector + gdSectors
	b := &built{size: sp.capSect * SectorSize, grain: g * SectorSize, data: map[int64][]byte{}}
	gis, kinds := deltaGrains(sp.grains, nGrains)
	slots := map[int64]bool{}
	for _, gi := range gis {
		slots[gi/perGT] = true
	}
	idx := map[int64]uint64{} // GD slot -> table index, reversed
	n := uint64(len(slots))
	for d := range nGD {
		if slots[d] {
			n--
			idx[d] = n
		}
	}
	grainsSector := gtBase + int64(len(slots))*seSparseGTSectors
	f := &fileBuf{}
	f.put(grainsSector, nil)
	states, kindOf := map[int64]State{}, map[int64]byte{}
	tabs := map[int64][]byte{} // GD slot -> table entries
	cluster := uint64(0)
	for i, gi := range gis {
		var e uint64
		switch k := kinds[i]; {
		case k&3 < 2:
			e, states[gi] = uint64(1+k&1)<<60, Zero
		default:
			states[gi], kindOf[gi] = Data, k>>2
			p, _ := fuzzGrain(b.grain, gi, k>>2)
			f.put(grainsSector+int64(cluster)*g, p)
			e = 3<<60 | (cluster&0xfff)<<48 | cluster>>12
			cluster++
		}
		if tabs[gi/perGT] == nil {
			tabs[gi/perGT] = make([]byte, seSparseGTEntries*8)
		}
		le.PutUint64(tabs[gi/perGT][gi%perGT*8:], e)
	}
	for d, t := range tabs {
		f.put(gtBase+int64(idx[d])*seSparseGTSectors, t)
	}
	end := grainsSector + int64(cluster)*g
	f.end(end)
	gd := make([]byte, gdSectors*SectorSize)
	for d, i := range idx {
		le.PutUint64(gd[8*d:], 0x1000000000000000|i)
		b.meta = append(b.meta, span{int(gtBase+int64(i)*seSparseGTSectors) * SectorSize, seSparseGTEntries * 8})
	}
	f.put(gdSector, gd)
	b.meta = append(b.meta, span{gdSector * SectorSize, int(nGD * 8)})
	h := make([]byte, SectorSize)
	put := func(off int, v uint64) { le.PutUint64(h[off:], v) }
	put(0, seSparseConstMagic)
	put(8, seSparseVersion)
	put(16, uint64(sp.capSect))
	put(24, seSparseGrainSectors)
	put(32, seSparseGTSectors)
	put(80, volSector)
	put(88, 1)
	put(128, gdSector)
	put(136, uint64(gdSectors))
	put(144, uint64(gtBase))
	put(152, uint64(len(slots))*seSparseGTSectors)
	put(192, uint64(grainsSector))
	put(200, uint64(end-grainsSector))
	v := make([]byte, SectorSize)
	le.PutUint64(v[0:], seSparseVolMagic)
	le.PutUint64(v[8:], uint64(len(slots)))
	f.put(0, h)
	f.put(volSector, v)
	b.file = f.b
	b.header = []span{{0, SectorSize}, {volSector * SectorSize, SectorSize}}
	b.body = span{SectorSize, len(f.b) - SectorSize}
	deltaModel(b, states, kindOf)
	return b
}

// checkDelta opens a (possibly changed) delta file and checks it as
// checkSparse does; a failed open returns no extent and a *FormatError.
func checkDelta(t *testing.T, b *built, open func(*bytes.Reader, int64) (extent, error), exact bool) {
	e, err := open(bytes.NewReader(b.file), int64(len(b.file)))
	if err != nil {
		var fe *FormatError
		if e != nil || !errors.As(err, &fe) || !(errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupported)) {
			t.Fatalf("bad failure: %v (extent %v)", err, e)
		}
		if exact {
			t.Fatalf("the unchanged file does not open: %v", err)
		}
		return
	}
	walk := func(fn func(Run) error) error {
		m := merger{fn: fn}
		for off, calls := int64(0), 0; off < e.size(); calls++ {
			if calls > fuzzMaxRuns {
				return errFuzzEnough
			}
			st, n, err := e.mapAt(off)
			if err != nil {
				return err
			}
			if n <= 0 || n > e.size()-off {
				t.Fatalf("mapAt(%d) returned n=%d (size %d)", off, n, e.size())
			}
			if st != Unallocated {
				if err := m.add(Run{Off: off, Len: n, State: st}); err != nil {
					return err
				}
			}
			off += n
		}
		return m.flush()
	}
	readAt := func(p []byte, off int64) (int, error) {
		// Data runs may span grains stored apart: read grain by grain
		// through mapAt, as Link.ReadAt does.
		done := 0
		for done < len(p) {
			st, n, err := e.mapAt(off)
			if err != nil {
				return done, err
			}
			if st != Data {
				t.Fatalf("read of a Data run met %v at %d", st, off)
			}
			n = min(n, int64(len(p)-done))
			if err := e.readAt(p[done:done+int(n)], off); err != nil {
				return done, err
			}
			done += int(n)
			off += n
		}
		return done, nil
	}
	var model *built
	if exact {
		model = b
	}
	runs, err := walkFuzz(t, e.size(), walk, readAt, model)
	if err != nil && err != errFuzzEnough && !errors.Is(err, ErrCorrupt) {
		t.Fatalf("walk/read: %v is not ErrCorrupt", err)
	}
	if exact && (err != nil || e.size() != b.size || !runsEqual(runs, b.runs)) {
		t.Fatalf("unchanged file: %v; size %d, map %v; built %d, %v", err, e.size(), runs, b.size, b.runs)
	}
}
