package vmdk

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Test images for the ESXi delta extents. No real COWD or SEsparse sample
// is public, so these builders lay files out exactly as qemu's
// block/vmdk.c reads them, and TestDeltaQemuAgrees proves qemu-img reads
// the same bytes from them as our reader does.

// deltaGrain is what a test puts in one grain of a delta.
type deltaGrain struct {
	state State // Data or Zero (Zero only for SEsparse)
	data  []byte
}

// buildCOWD writes a COWD extent of capSectors sectors with grainSectors
// sectors per grain. Grains are stored in a shuffled order so that file
// order differs from virtual order.
func buildCOWD(t testing.TB, path string, capSectors, grainSectors uint32, grains map[int64]deltaGrain, rng *rand.Rand) {
	t.Helper()
	grainBytes := int64(grainSectors) * 512
	perGT := int64(cowdGTEntries) * int64(grainSectors)
	nGD := (int64(capSectors) + perGT - 1) / perGT
	const gdSector = 4 // the header takes 4 sectors, as VMware's does
	gdBytes := (nGD*4 + 511) / 512 * 512
	next := int64(gdSector)*512 + gdBytes // next free byte
	gd := make([]uint32, nGD)
	gts := make(map[int64][]uint32)
	// Tables first, for every directory slot that has a grain.
	keys := make([]int64, 0, len(grains))
	for gi := range grains {
		keys = append(keys, gi)
	}
	slicesSort(keys)
	for _, gi := range keys {
		d := gi / cowdGTEntries
		if gd[d] == 0 {
			gd[d] = uint32(next / 512)
			gts[d] = make([]uint32, cowdGTEntries)
			next += cowdGTEntries * 4
		}
	}
	rng.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, gi := range keys {
		g := grains[gi]
		if g.state != Data {
			t.Fatalf("COWD has no zeroed grains")
		}
		gts[gi/cowdGTEntries][gi%cowdGTEntries] = uint32(next / 512)
		buf := make([]byte, grainBytes)
		copy(buf, g.data)
		if _, err := f.WriteAt(buf, next); err != nil {
			t.Fatal(err)
		}
		next += grainBytes
	}
	h := make([]byte, 2048)
	copy(h, "COWD")
	le := binary.LittleEndian
	le.PutUint32(h[4:], 1)
	le.PutUint32(h[8:], 3)
	le.PutUint32(h[12:], capSectors)
	le.PutUint32(h[16:], grainSectors)
	le.PutUint32(h[20:], gdSector)
	le.PutUint32(h[24:], uint32(nGD))
	le.PutUint32(h[28:], uint32(next/512))
	if _, err := f.WriteAt(h, 0); err != nil {
		t.Fatal(err)
	}
	gdb := make([]byte, nGD*4)
	for i, v := range gd {
		le.PutUint32(gdb[4*i:], v)
	}
	if _, err := f.WriteAt(gdb, gdSector*512); err != nil {
		t.Fatal(err)
	}
	for d, gt := range gts {
		b := make([]byte, cowdGTEntries*4)
		for i, v := range gt {
			le.PutUint32(b[4*i:], v)
		}
		if _, err := f.WriteAt(b, int64(gd[d])*512); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(next); err != nil {
		t.Fatal(err)
	}
}

// buildSESparse writes an SEsparse extent. Grains go to random cluster
// numbers (some above 4095, so the bit shuffle of the entry matters);
// Zero grains alternate between type 1 (unmapped) and type 2 (zeroed).
func buildSESparse(t testing.TB, path string, capSectors uint64, grains map[int64]deltaGrain, rng *rand.Rand) {
	t.Helper()
	const grainBytes = seSparseGrainSectors * 512
	perGT := int64(seSparseGTEntries)
	nGD := (int64(capSectors)/seSparseGrainSectors + perGT) / perGT
	gdSectors := (nGD*8 + 511) / 512
	const volSector = 1
	gdSector := int64(2)
	gtBase := gdSector + gdSectors
	le := binary.LittleEndian
	gd := make([]uint64, nGD)
	gts := map[int64][]uint64{}
	nGT := int64(0)
	keys := make([]int64, 0, len(grains))
	for gi := range grains {
		keys = append(keys, gi)
	}
	slicesSort(keys)
	for _, gi := range keys {
		d := gi / perGT
		if gd[d] == 0 {
			// Tables in reverse order of first use, so GT index != GD index.
			gd[d] = 1 // placeholder
			gts[d] = make([]uint64, perGT)
			nGT++
		}
	}
	idx := uint64(nGT)
	for d := range gd {
		if gd[d] != 0 {
			idx--
			gd[d] = 0x1000000000000000 | idx
		}
	}
	grainsSector := gtBase + nGT*seSparseGTSectors
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	used := map[uint64]bool{}
	end := grainsSector * 512
	for i, gi := range keys {
		g := grains[gi]
		var e uint64
		switch g.state {
		case Zero:
			e = uint64(1+i%2) << 60
		case Data:
			var c uint64
			for {
				c = uint64(rng.IntN(len(grains) + 500))
				if !used[c] {
					break
				}
			}
			used[c] = true
			e = 3<<60 | (c&0xfff)<<48 | c>>12
			buf := make([]byte, grainBytes)
			copy(buf, g.data)
			off := grainsSector*512 + int64(c)*grainBytes
			if _, err := f.WriteAt(buf, off); err != nil {
				t.Fatal(err)
			}
			end = max(end, off+grainBytes)
		}
		gts[gi/perGT][gi%perGT] = e
	}
	h := make([]byte, 512)
	put := func(off int, v uint64) { le.PutUint64(h[off:], v) }
	put(0, seSparseConstMagic)
	put(8, seSparseVersion)
	put(16, capSectors)
	put(24, seSparseGrainSectors)
	put(32, seSparseGTSectors)
	put(80, volSector)
	put(88, 1)
	put(128, uint64(gdSector))
	put(136, uint64(gdSectors))
	put(144, uint64(gtBase))
	put(152, uint64(nGT*seSparseGTSectors))
	put(192, uint64(grainsSector))
	put(200, uint64((end-grainsSector*512)/512))
	v := make([]byte, 512)
	le.PutUint64(v[0:], seSparseVolMagic)
	le.PutUint64(v[8:], uint64(nGT))
	for _, w := range []struct {
		b   []byte
		off int64
	}{{h, 0}, {v, volSector * 512}} {
		if _, err := f.WriteAt(w.b, w.off); err != nil {
			t.Fatal(err)
		}
	}
	gdb := make([]byte, gdSectors*512)
	for i, e := range gd {
		le.PutUint64(gdb[8*i:], e)
	}
	if _, err := f.WriteAt(gdb, gdSector*512); err != nil {
		t.Fatal(err)
	}
	for d, gt := range gts {
		b := make([]byte, perGT*8)
		for i, e := range gt {
			le.PutUint64(b[8*i:], e)
		}
		off := (gtBase + int64(gd[d]&0xffffffff)*seSparseGTSectors) * 512
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(end); err != nil {
		t.Fatal(err)
	}
}

func slicesSort(s []int64) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// randomGrains picks grains over a disk of capBytes: about a third data
// (patterned with the grain number), some zeroed when zeros is true.
func randomGrains(rng *rand.Rand, capBytes, grainBytes int64, zeros bool, count int) map[int64]deltaGrain {
	n := (capBytes + grainBytes - 1) / grainBytes
	m := map[int64]deltaGrain{}
	// Always the first and the last (partial) grain, plus runs.
	pick := []int64{0, n - 1}
	for len(pick) < count {
		start := rng.Int64N(n)
		for k := int64(0); k < 1+rng.Int64N(6) && start+k < n; k++ {
			pick = append(pick, start+k)
		}
	}
	for _, gi := range pick {
		if zeros && rng.IntN(4) == 0 {
			m[gi] = deltaGrain{state: Zero}
			continue
		}
		b := make([]byte, grainBytes)
		for i := range b {
			b[i] = byte(gi*7 + int64(i)*13 + int64(i>>9))
		}
		binary.LittleEndian.PutUint64(b, uint64(gi))
		m[gi] = deltaGrain{state: Data, data: b}
	}
	return m
}

// composeDelta reads a whole delta over base the way a chain does, using
// only the extent interface.
func composeDelta(t testing.TB, e extent, base []byte) []byte {
	t.Helper()
	out := make([]byte, e.size())
	for off := int64(0); off < e.size(); {
		st, n, err := e.mapAt(off)
		if err != nil {
			t.Fatalf("mapAt(%d): %v", off, err)
		}
		if n <= 0 || n > e.size()-off {
			t.Fatalf("mapAt(%d) n=%d", off, n)
		}
		switch st {
		case Unallocated:
			copy(out[off:off+n], base[off:off+n])
		case Zero:
		case Data:
			if err := e.readAt(out[off:off+n], off); err != nil {
				t.Fatalf("readAt(%d,%d): %v", off, n, err)
			}
		}
		off += n
	}
	return out
}

// expectDelta is what a delta with grains over base must read as.
func expectDelta(base []byte, grainBytes int64, grains map[int64]deltaGrain) []byte {
	out := bytes.Clone(base)
	for gi, g := range grains {
		s := gi * grainBytes
		e := min(s+grainBytes, int64(len(out)))
		if g.state == Zero {
			clear(out[s:e])
		} else {
			copy(out[s:e], g.data)
		}
	}
	return out
}

func patternBase(n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(0xa5 ^ i ^ i>>11)
	}
	return b
}

// writeChainForQemu writes base.vmdk (monolithicFlat) and a descriptor
// delta.vmdk with one extent line of typ over extFile, and returns the
// descriptor's path.
func writeChainForQemu(t testing.TB, dir string, base []byte, createType, typ, extFile string) string {
	t.Helper()
	sectors := len(base) / 512
	if err := os.WriteFile(filepath.Join(dir, "base-flat.vmdk"), base, 0o644); err != nil {
		t.Fatal(err)
	}
	baseDesc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=abcdef01\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n# Extent description\nRW %d FLAT \"base-flat.vmdk\" 0\n\nddb.adapterType = \"lsilogic\"\n", sectors)
	if err := os.WriteFile(filepath.Join(dir, "base.vmdk"), []byte(baseDesc), 0o644); err != nil {
		t.Fatal(err)
	}
	desc := fmt.Sprintf("# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=abcdef01\ncreateType=\"%s\"\nparentFileNameHint=\"base.vmdk\"\n\n# Extent description\nRW %d %s \"%s\"\n\nddb.adapterType = \"lsilogic\"\n", createType, sectors, typ, extFile)
	p := filepath.Join(dir, "delta.vmdk")
	if err := os.WriteFile(p, []byte(desc), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// qemuRaw converts path to raw with qemu-img and returns the bytes.
func qemuRaw(t testing.TB, path string) []byte {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img is required (scripts/peers.sh installs it)")
	}
	out := filepath.Join(t.TempDir(), "qemu.raw")
	cmd := exec.Command("qemu-img", "convert", "-O", "raw", path, out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert %s: %v\n%s", path, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func openFileExtent(t testing.TB, path string, open func(f *os.File, size int64, name string) (extent, error)) extent {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	e, err := open(f, st.Size(), path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return e
}

func openCOWDFile(f *os.File, size int64, name string) (extent, error) {
	return newCOWDExtent(f, size, name)
}

func openSESparseFile(f *os.File, size int64, name string) (extent, error) {
	return newSESparseExtent(f, size, name)
}

// TestDeltaQemuAgrees builds COWD and SEsparse deltas over a flat base and
// proves that qemu-img, our extent reader and the model all read the same
// bytes: capacities not a multiple of the grain, grains stored out of
// order, zeroed/unmapped grains hiding the parent, unallocated ones showing
// it, several grain tables.
func TestDeltaQemuAgrees(t *testing.T) {
	cases := []struct {
		name       string
		capSectors int64
		grain      int64 // sectors
		sesparse   bool
	}{
		{"cowd-grain1", 9000, 1, false},        // 3 grain tables of 4096 one-sector grains
		{"cowd-grain16", 70000 - 3, 16, false}, // capacity not a multiple of the grain
		{"sesparse", 2*32768 + 8*5 + 3, 8, true},
		{"sesparse-big", 3 * 32768, 8, true}, // clusters above 4095: the bit shuffle
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 42))
			dir := t.TempDir()
			capBytes := c.capSectors * 512
			gb := c.grain * 512
			count := 300
			if c.name == "sesparse-big" {
				count = 4700
			}
			grains := randomGrains(rng, capBytes, gb, c.sesparse, count)
			base := patternBase(capBytes)
			ext := filepath.Join(dir, "delta-delta.vmdk")
			var e extent
			var desc string
			if c.sesparse {
				buildSESparse(t, ext, uint64(c.capSectors), grains, rng)
				desc = writeChainForQemu(t, dir, base, "seSparse", "SESPARSE", "delta-delta.vmdk")
				e = openFileExtent(t, ext, openSESparseFile)
			} else {
				buildCOWD(t, ext, uint32(c.capSectors), uint32(c.grain), grains, rng)
				desc = writeChainForQemu(t, dir, base, "vmfsSparse", "VMFSSPARSE", "delta-delta.vmdk")
				e = openFileExtent(t, ext, openCOWDFile)
			}
			if e.size() != capBytes {
				t.Fatalf("size %d, want %d", e.size(), capBytes)
			}
			want := expectDelta(base, gb, grains)
			got := composeDelta(t, e, base)
			q := qemuRaw(t, desc)
			if sha256.Sum256(q) != sha256.Sum256(want) {
				t.Fatalf("qemu-img disagrees with the model (%d vs %d bytes)", len(q), len(want))
			}
			if !bytes.Equal(got, want) {
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("reader differs from qemu-img at byte %d (grain %d)", i, int64(i)/gb)
					}
				}
			}
			// The whole chain through Open (descriptor, delta, flat parent).
			if got := readDisk(t, desc); !bytes.Equal(got, q) {
				t.Fatalf("Open reads the chain differently from qemu-img (first diff at %d)", firstDiff(got, q))
			}
			t.Logf("%s: %d grains, sha256 %x agree", c.name, len(grains), sha256.Sum256(q))
		})
	}
}

// TestDeltaMapRuns checks mapAt against the grain map: every state is
// reported exactly, runs never cross a state change, and reads of unaligned
// pieces return the right bytes.
func TestDeltaMapRuns(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	dir := t.TempDir()
	capSectors := int64(3*32768 + 13)
	grains := randomGrains(rng, capSectors*512, 4096, true, 400)
	p := filepath.Join(dir, "d.vmdk")
	buildSESparse(t, p, uint64(capSectors), grains, rng)
	e := openFileExtent(t, p, openSESparseFile)
	want := expectDelta(make([]byte, capSectors*512), 4096, grains)
	for off := int64(0); off < e.size(); {
		st, n, err := e.mapAt(off)
		if err != nil {
			t.Fatal(err)
		}
		for o := off; o < off+n; o += 4096 {
			g, ok := grains[o/4096]
			ws := Unallocated
			if ok {
				ws = g.state
			}
			if ws != st {
				t.Fatalf("offset %d: state %v, want %v", o, st, ws)
			}
		}
		if st == Data {
			// Unaligned sub-reads.
			for k := 0; k < 4; k++ {
				a := off + rng.Int64N(n)
				l := 1 + rng.Int64N(off+n-a)
				buf := make([]byte, l)
				if err := e.readAt(buf, a); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(buf, want[a:a+l]) {
					t.Fatalf("readAt(%d,%d) wrong bytes", a, l)
				}
			}
		} else if err := e.readAt(make([]byte, 1), off); !errors.Is(err, errDeltaNotData) {
			t.Fatalf("readAt on %v: %v", st, err)
		}
		off += n
	}
}

// cowdHeaderFor returns a minimal valid COWD file image for mutation.
func validCOWD(t testing.TB) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.vmdk")
	rng := rand.New(rand.NewPCG(1, 2))
	buildCOWD(t, p, 3000, 1, randomGrains(rng, 3000*512, 512, false, 20), rng)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func validSESparse(t testing.TB) []byte {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s.vmdk")
	rng := rand.New(rand.NewPCG(3, 4))
	buildSESparse(t, p, 20000, randomGrains(rng, 20000*512, 4096, true, 20), rng)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func put32(b []byte, off int, v uint32) []byte {
	c := bytes.Clone(b)
	binary.LittleEndian.PutUint32(c[off:], v)
	return c
}

func put64(b []byte, off int, v uint64) []byte {
	c := bytes.Clone(b)
	binary.LittleEndian.PutUint64(c[off:], v)
	return c
}

// firstGTE returns the file offset of the first grain-table entry, found
// through the directory, for corrupting entries.
func cowdFirstGT(b []byte) int {
	le := binary.LittleEndian
	gd := int(le.Uint32(b[20:])) * 512
	return int(le.Uint32(b[gd:])) * 512
}

// TestDeltaCorrupt flips one field at a time and asserts the sentinel and
// the field named in the FormatError.
func TestDeltaCorrupt(t *testing.T) {
	c := validCOWD(t)
	s := validSESparse(t)
	gt := cowdFirstGT(c)
	le := binary.LittleEndian
	seGD := int(le.Uint64(s[128:])) * 512
	cases := []struct {
		name   string
		se     bool
		b      []byte
		sent   error
		field  string
		atRead bool // the error comes from mapAt, not open
	}{
		{"cowd magic", false, append([]byte("COWX"), c[4:]...), ErrCorrupt, "COWD magic", false},
		{"cowd version", false, put32(c, 4, 2), ErrUnsupported, "COWD version", false},
		{"cowd capacity 0", false, put32(c, 12, 0), ErrCorrupt, "COWD numSectors", false},
		{"cowd grain 0", false, put32(c, 16, 0), ErrCorrupt, "COWD grainSize", false},
		{"cowd grain huge", false, put32(c, 16, 1<<30), ErrUnsupported, "COWD grainSize", false},
		{"cowd gd entries short", false, put32(c, 24, 0), ErrCorrupt, "COWD numGDEntries", false},
		{"cowd gd entries huge", false, put32(c, 24, 0xffffffff), ErrUnsupported, "COWD numGDEntries", false},
		{"cowd capacity beyond gd", false, put32(c, 12, 0xffffffff), ErrCorrupt, "COWD numGDEntries", false},
		{"cowd gd offset out", false, put32(c, 20, 0x7fffffff), ErrCorrupt, "COWD gdOffset", false},
		{"cowd gd offset 0", false, put32(c, 20, 0), ErrCorrupt, "COWD gdOffset", false},
		{"cowd gt out", false, put32(c, int(le.Uint32(c[20:]))*512, 0xffffff), ErrCorrupt, "COWD grain directory entry", false},
		{"cowd grain out", false, put32(c, gt, 0xfffffff0), ErrCorrupt, "COWD grain table entry", true},
		{"cowd truncated", false, c[:20], ErrCorrupt, "COWD header", false},
		{"se magic", true, put64(s, 0, 0xcafebabf), ErrCorrupt, "SEsparse const header magic", false},
		{"se version", true, put64(s, 8, 0x0000000200000002), ErrUnsupported, "SEsparse version", false},
		{"se grain", true, put64(s, 24, 16), ErrUnsupported, "SEsparse grainSize", false},
		{"se gt size", true, put64(s, 32, 32), ErrUnsupported, "SEsparse grainTableSize", false},
		{"se flags", true, put64(s, 40, 1), ErrUnsupported, "SEsparse flags", false},
		{"se reserved", true, put64(s, 64, 1), ErrUnsupported, "SEsparse reserved field", false},
		{"se pad", true, put64(s, 400, 1), ErrUnsupported, "SEsparse const header padding", false},
		{"se capacity 0", true, put64(s, 16, 0), ErrCorrupt, "SEsparse capacity", false},
		{"se capacity huge", true, put64(s, 16, 1<<62), ErrUnsupported, "SEsparse capacity", false},
		{"se capacity beyond gd", true, put64(s, 16, 1<<30), ErrCorrupt, "SEsparse grainDirSize", false},
		{"se gd size huge", true, put64(s, 136, 1<<40), ErrUnsupported, "SEsparse grainDirSize", false},
		{"se vol offset", true, put64(s, 80, 1<<50), ErrCorrupt, "SEsparse volatileHeaderOffset", false},
		{"se vol magic", true, put64(s, 512, 1), ErrCorrupt, "SEsparse volatile header magic", false},
		{"se dirty", true, put64(s, 512+24, 1), ErrUnsupported, "SEsparse replayJournal", false},
		{"se vol pad", true, put64(s, 512+100, 1), ErrUnsupported, "SEsparse volatile header padding", false},
		{"se gd offset", true, put64(s, 128, 1<<40), ErrCorrupt, "SEsparse grainDirOffset", false},
		{"se gd entry form", true, put64(s, seGD, 0x2000000000000000), ErrCorrupt, "SEsparse grain directory entry", false},
		{"se gd entry out", true, put64(s, seGD, 0x10000000ffffffff), ErrCorrupt, "SEsparse grain directory entry", false},
		{"se grains offset", true, put64(s, 192, 1<<40), ErrCorrupt, "SEsparse grainsOffset", false},
		{"se gt offset", true, put64(s, 144, 1<<40), ErrCorrupt, "SEsparse grainTablesOffset", false},
		{"se truncated", true, s[:300], ErrCorrupt, "SEsparse const header", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e extent
			var err error
			r := bytes.NewReader(tc.b)
			if tc.se {
				e, err = newSESparseExtent(r, int64(len(tc.b)), "x.vmdk")
			} else {
				e, err = newCOWDExtent(r, int64(len(tc.b)), "x.vmdk")
			}
			if tc.atRead {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				err = mapAll(e)
			} else if e != nil {
				t.Fatalf("open returned an extent with error %v", err)
			}
			if !errors.Is(err, tc.sent) {
				t.Fatalf("error %v, want %v", err, tc.sent)
			}
			var fe *FormatError
			if !errors.As(err, &fe) || fe.Field != tc.field {
				t.Fatalf("error %v does not name field %q", err, tc.field)
			}
		})
	}
}

// TestSESparseBadEntries covers grain-table entry decoding errors.
func TestSESparseBadEntries(t *testing.T) {
	s := validSESparse(t)
	le := binary.LittleEndian
	gd := int(le.Uint64(s[128:])) * 512
	gtIdx := le.Uint64(s[gd:]) & 0xffffffff
	gt := int(le.Uint64(s[144:])+gtIdx*64) * 512
	for _, e := range []uint64{0x0000000000000001, 0x4000000000000000, 0xf000000000000000, 0x3000ffffffffffff} {
		b := put64(s, gt, e)
		x, err := newSESparseExtent(bytes.NewReader(b), int64(len(b)), "x.vmdk")
		if err != nil {
			t.Fatal(err)
		}
		err = mapAll(x)
		var fe *FormatError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &fe) || fe.Field != "SEsparse grain table entry" || fe.Offset != int64(gt) {
			t.Fatalf("entry %#x: %v", e, err)
		}
	}
}

func mapAll(e extent) error {
	buf := make([]byte, 1<<16)
	var total int64
	for off, calls := int64(0), 0; off < e.size() && calls < 200000; calls++ {
		st, n, err := e.mapAt(off)
		if err != nil {
			return err
		}
		if n <= 0 || n > e.size()-off {
			return fmt.Errorf("mapAt(%d) returned n=%d", off, n)
		}
		if st == Data && total < 64<<20 {
			for o := off; o < off+n; o += int64(len(buf)) {
				l := min(int64(len(buf)), off+n-o)
				if err := e.readAt(buf[:l], o); err != nil {
					return err
				}
				total += l
			}
		}
		off += n
	}
	return nil
}

// readDisk opens path with Open and reads the whole virtual disk.
func readDisk(t testing.TB, path string) []byte {
	t.Helper()
	d, err := Open(path, nil)
	if err != nil {
		t.Fatalf("Open %s: %v", path, err)
	}
	defer d.Close()
	b := make([]byte, d.Size())
	if n, err := d.ReadAt(b, 0); n != len(b) || err != nil {
		t.Fatalf("ReadAt: %d, %v", n, err)
	}
	return b
}

// TestDeltaConcurrent reads one COWD and one SEsparse extent from many
// goroutines at once (run with -race): with 16 cached tables and more in
// use, slots are evicted while other readers work.
func TestDeltaConcurrent(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	dir := t.TempDir()
	cp := filepath.Join(dir, "c.vmdk")
	cg := randomGrains(rng, 20*4096*512, 512, false, 2000)
	buildCOWD(t, cp, 20*4096, 1, cg, rng)
	sp := filepath.Join(dir, "s.vmdk")
	sg := randomGrains(rng, 20*32768*512, 4096, true, 2000)
	buildSESparse(t, sp, 20*32768, sg, rng)
	for _, c := range []struct {
		e      extent
		grains map[int64]deltaGrain
		gb     int64
	}{{openFileExtent(t, cp, openCOWDFile), cg, 512}, {openFileExtent(t, sp, openSESparseFile), sg, 4096}} {
		keys := make([]int64, 0, len(c.grains))
		for gi, g := range c.grains {
			if g.state == Data {
				keys = append(keys, gi)
			}
		}
		errc := make(chan error, 8)
		for w := range 8 {
			go func() {
				r := rand.New(rand.NewPCG(uint64(w), 1))
				buf := make([]byte, c.gb)
				for range 500 {
					gi := keys[r.IntN(len(keys))]
					off := gi * c.gb
					n := min(c.gb, c.e.size()-off)
					st, _, err := c.e.mapAt(off)
					if err == nil && st != Data {
						err = fmt.Errorf("grain %d is %v", gi, st)
					}
					if err == nil {
						err = c.e.readAt(buf[:n], off)
					}
					if err == nil && !bytes.Equal(buf[:n], c.grains[gi].data[:n]) {
						err = fmt.Errorf("grain %d: wrong bytes", gi)
					}
					if err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
		}
		for range 8 {
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
		}
	}
}
