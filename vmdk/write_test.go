package vmdk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

var allSubformats = []string{SubformatMonolithicSparse, SubformatMonolithicFlat, SubformatTwoGbMaxExtentSparse, SubformatStreamOptimized}

// writeCase is a random disk: src holds garbage everywhere (so bytes
// outside Data runs must not leak), runs say what is stored.
type writeCase struct {
	size int64
	src  []byte
	runs []Run
}

// newWriteCase builds a disk of size bytes with random Data and Zero runs,
// unaligned to sectors and grains unless align > 1.
func newWriteCase(rng *rand.Rand, size, align int64) *writeCase {
	c := &writeCase{size: size, src: make([]byte, size)}
	for i := range c.src {
		c.src[i] = byte(i*31 + i>>9 + 1)
	}
	for i := int64(0); i+8 <= size; i += 4096 {
		c.src[i] = byte(rng.Uint32())
	}
	pos := int64(0)
	for pos < size {
		gap := rng.Int64N(300000) / align * align
		pos += gap
		if pos >= size {
			break
		}
		n := max(align, (1+rng.Int64N(400000))/align*align)
		n = min(n, size-pos)
		st := Data
		if rng.IntN(3) == 0 {
			st = Zero
		}
		if len(c.runs) > 0 {
			last := &c.runs[len(c.runs)-1]
			if last.Off+last.Len == pos && last.State == st {
				last.Len += n
				pos += n
				continue
			}
		}
		c.runs = append(c.runs, Run{Off: pos, Len: n, State: st})
		pos += n
	}
	// Always data at the very end, cut short of a grain.
	if len(c.runs) == 0 || c.runs[len(c.runs)-1].Off+c.runs[len(c.runs)-1].Len < size {
		c.runs = append(c.runs, Run{Off: size - min(size, 777*align), Len: min(size, 777*align), State: Data})
		if len(c.runs) > 1 {
			p := &c.runs[len(c.runs)-2]
			if p.Off+p.Len > c.runs[len(c.runs)-1].Off {
				c.runs = c.runs[:len(c.runs)-1]
			}
		}
	}
	return c
}

// want is what the disk must read as (size rounded up to a sector):
// Data bytes from src, zeros elsewhere. With xf set, it applies the test
// Transform the way Write must: to every stored grain (any grain holding a
// Data byte) or, for flat disks, to everything.
func (c *writeCase) want(grain int64, xf bool, flat bool) []byte {
	capB := (c.size + 511) &^ 511
	out := make([]byte, capB)
	stored := make([]bool, (capB+grain-1)/grain)
	for _, r := range c.runs {
		if r.State != Data {
			continue
		}
		copy(out[r.Off:r.Off+r.Len], c.src[r.Off:r.Off+r.Len])
		for g := r.Off / grain; g*grain < r.Off+r.Len; g++ {
			stored[g] = true
		}
	}
	if xf {
		for g := range stored {
			if stored[g] || flat {
				s := int64(g) * grain
				e := min(s+grain, capB)
				testXOR(out[s:e], out[s:e], s)
			}
		}
	}
	return out
}

// testXOR is the test Transform: xor with a pattern of the virtual offset.
func testXOR(dst, src []byte, off int64) {
	for i := range src {
		o := off + int64(i)
		dst[i] = src[i] ^ byte(o>>9) ^ byte(o*7) ^ 0x5c
	}
}

func sha(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

func qemuCheck(t *testing.T, path string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", path).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img check %s: %v\n%s", path, err, out)
	}
}

// TestWriteQemuReadsBack writes every subformat from random patterned data
// with holes and Zero runs, a size that is neither a multiple of the grain
// nor of a sector, and proves qemu-img reads back exactly the input.
func TestWriteQemuReadsBack(t *testing.T) {
	for _, xf := range []bool{false, true} {
		for i, sf := range allSubformats {
			t.Run(fmt.Sprintf("%s/transform=%v", sf, xf), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(i), 9))
				size := int64(9<<20) + 64<<10 + 3*512 + 100 // not grain nor sector aligned
				c := newWriteCase(rng, size, 1)
				dir := t.TempDir()
				p := filepath.Join(dir, "disk.vmdk")
				var progress atomic.Int64
				o := &WriteOptions{Subformat: sf, SplitSize: 4 << 20, Jobs: 3,
					Progress: func(done, _ int64) { progress.Store(done) }}
				grain := int64(DefaultGrainSize)
				if xf {
					o.Transform = testXOR
					o.GrainSize = 16 << 10
					grain = o.GrainSize
				}
				if err := Write(context.Background(), p, bytes.NewReader(c.src), c.size, c.runs, o); err != nil {
					t.Fatal(err)
				}
				capB := (size + 511) &^ 511
				if progress.Load() != capB {
					t.Errorf("progress added up to %d, want %d", progress.Load(), capB)
				}
				if sf == SubformatMonolithicFlat {
					grain = flatChunk
				}
				want := c.want(grain, xf, sf == SubformatMonolithicFlat)
				got := qemuRaw(t, p)
				if sha(got) != sha(want) {
					t.Fatalf("qemu-img reads %d bytes sha256 %s, want %d bytes %s (first diff at %d)", len(got), sha(got)[:16], len(want), sha(want)[:16], firstDiff(got, want))
				}
				if sf != SubformatMonolithicFlat {
					qemuCheck(t, p)
				}
				if got := readDisk(t, p); !bytes.Equal(got, want) {
					t.Fatalf("Open reads back differently (first diff at %d)", firstDiff(got, want))
				}
				checkAllocated(t, p, c, grain, xf, sf)
				// No temporary file left behind.
				ents, _ := os.ReadDir(dir)
				for _, e := range ents {
					if strings.Contains(e.Name(), ".tmp-") {
						t.Errorf("temporary file %s left behind", e.Name())
					}
				}
				if sf == SubformatTwoGbMaxExtentSparse && len(ents) != 1+3 {
					t.Errorf("split disk has %d files, want descriptor + 3 extents", len(ents))
				}
			})
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestWriteDeltaChain writes a base and a delta with a parent in each
// sparse subformat; qemu-img must read the delta as the base overlaid with
// the delta's Data and Zero grains (zeroed grains hide the parent).
func TestWriteDeltaChain(t *testing.T) {
	for i, sf := range []string{SubformatMonolithicSparse, SubformatTwoGbMaxExtentSparse, SubformatStreamOptimized} {
		t.Run(sf, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(i), 77))
			size := int64(6<<20) + 5*512
			dir := t.TempDir()
			base := newWriteCase(rng, size, 512)
			for j := range base.runs {
				base.runs[j].State = Data
			}
			bp := filepath.Join(dir, "base.vmdk")
			if err := Write(context.Background(), bp, bytes.NewReader(base.src), size, base.runs, &WriteOptions{CID: 0x1234abcd}); err != nil {
				t.Fatal(err)
			}
			// The delta: grain-aligned runs over different data.
			d := newWriteCase(rng, size, DefaultGrainSize)
			for j := range d.src {
				d.src[j] ^= 0xff
			}
			dp := filepath.Join(dir, "delta.vmdk")
			o := &WriteOptions{Subformat: sf, SplitSize: 2 << 20, Parent: &ParentInfo{CID: 0x1234abcd, FileNameHint: "base.vmdk"}}
			if err := Write(context.Background(), dp, bytes.NewReader(d.src), size, d.runs, o); err != nil {
				t.Fatal(err)
			}
			want := base.want(DefaultGrainSize, false, false)
			for _, r := range d.runs {
				e := min(r.Off+r.Len, int64(len(want)))
				if r.State == Zero {
					clear(want[r.Off:e])
				} else {
					copy(want[r.Off:e], d.src[r.Off:e])
				}
			}
			got := qemuRaw(t, dp)
			if sha(got) != sha(want) {
				t.Fatalf("qemu-img reads the chain differently (first diff at %d)", firstDiff(got, want))
			}
			if got := readDisk(t, dp); !bytes.Equal(got, want) {
				t.Fatalf("Open reads the chain differently (first diff at %d)", firstDiff(got, want))
			}
			qemuCheck(t, dp)
		})
	}
}

// TestWriteDescriptorFields checks the descriptor lines the options ask for.
func TestWriteDescriptorFields(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "e.vmdk")
	src := bytes.Repeat([]byte{1}, 1<<20)
	o := &WriteOptions{Subformat: SubformatMonolithicFlat, EncryptionKeys: "vmware:key/list/(pair/(null/vmware%3akey%2ffqid/x))", IOFilters: "vmwarevmcrypt",
		CID: 0xdeadbeef, DDB: []Field{{"ddb.adapterType", "lsilogic"}, {"ddb.uuid", "60 00 C2 9a"}}}
	if err := Write(context.Background(), p, bytes.NewReader(src), int64(len(src)), nil, o); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ParseDescriptor(b, p)
	if err != nil {
		t.Fatal(err)
	}
	if d.EncryptionKeys != o.EncryptionKeys || d.CID != 0xdeadbeef || d.ParentCID != NoParentCID || d.CreateType != SubformatMonolithicFlat {
		t.Fatalf("descriptor header: %+v", d)
	}
	for k, v := range map[string]string{"ddb.iofilters": "vmwarevmcrypt", "ddb.adapterType": "lsilogic", "ddb.uuid": "60 00 C2 9a"} {
		if got, _ := d.DDBValue(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if lc, _ := d.DDBValue("ddb.longContentID"); !strings.HasSuffix(lc, "deadbeef") || len(lc) != 32 {
		t.Errorf("longContentID %q", lc)
	}
	if len(d.Extents) != 1 || d.Extents[0].File != "e-flat.vmdk" || d.Extents[0].Sectors != 2048 {
		t.Errorf("extents %+v", d.Extents)
	}
	if got := qemuRaw(t, p); !bytes.Equal(got, src) {
		t.Fatal("flat disk reads back wrong")
	}
}

// failingReader fails after a number of bytes.
type failingReader struct {
	r     io.ReaderAt
	after int64
}

var errSourceBroken = errors.New("source broken")

func (f *failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.after {
		return 0, errSourceBroken
	}
	return f.r.ReadAt(p, off)
}

// TestWriteFailureCleansUp proves a failing source leaves no file behind
// in any subformat, and that bad arguments and existing outputs are
// refused before anything is written.
func TestWriteFailureCleansUp(t *testing.T) {
	src := bytes.Repeat([]byte{7}, 8<<20)
	for _, sf := range allSubformats {
		dir := t.TempDir()
		p := filepath.Join(dir, "x.vmdk")
		err := Write(context.Background(), p, &failingReader{bytes.NewReader(src), 5 << 20}, int64(len(src)), nil, &WriteOptions{Subformat: sf, SplitSize: 2 << 20})
		if !errors.Is(err, errSourceBroken) {
			t.Fatalf("%s: error %v, want the source error", sf, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("%s: %d files left behind (%s...)", sf, len(ents), ents[0].Name())
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "x.vmdk")
	if err := os.WriteFile(p, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(context.Background(), p, bytes.NewReader(src), int64(len(src)), nil, nil); !errors.Is(err, os.ErrExist) {
		t.Fatalf("existing output: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "keep" {
		t.Fatal("existing output was touched")
	}
	if err := Write(context.Background(), p, bytes.NewReader(src), int64(len(src)), nil, &WriteOptions{Overwrite: true}); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	bad := []struct {
		name string
		runs []Run
		o    WriteOptions
	}{
		{"subformat", nil, WriteOptions{Subformat: "vmfs"}},
		{"grain", nil, WriteOptions{GrainSize: 3000}},
		{"split", nil, WriteOptions{Subformat: SubformatTwoGbMaxExtentSparse, SplitSize: 100000}},
		{"flat parent", nil, WriteOptions{Subformat: SubformatMonolithicFlat, Parent: &ParentInfo{1, "p.vmdk"}}},
		{"overlap", []Run{{0, 100, Data, 0}, {50, 100, Data, 0}}, WriteOptions{}},
		{"beyond", []Run{{0, 9 << 20, Data, 0}}, WriteOptions{}},
		{"state", []Run{{0, 100, Unallocated, 0}}, WriteOptions{}},
		{"delta unaligned", []Run{{0, 100, Data, 0}}, WriteOptions{Parent: &ParentInfo{1, "p.vmdk"}}},
	}
	for _, b := range bad {
		d := t.TempDir()
		if err := Write(context.Background(), filepath.Join(d, "b.vmdk"), bytes.NewReader(src), int64(len(src)), b.runs, &b.o); err == nil {
			t.Errorf("%s: accepted", b.name)
		}
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("%s: files left behind", b.name)
		}
	}
}

// checkAllocated proves the allocation map of the written disk: every
// Data byte of the input lies in a Data run (or, without a Transform,
// reads as zeros), and nothing outside the grains touched by runs is
// allocated (flat disks: nothing but stored chunks, or all with a
// Transform).
func checkAllocated(t *testing.T, p string, c *writeCase, grain int64, xf bool, sf string) {
	t.Helper()
	d, err := Open(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	runs, err := d.Allocated()
	if err != nil {
		t.Fatal(err)
	}
	capB := d.Size()
	alloc := make([]State, capB/512)
	for _, r := range runs {
		for s := r.Off / 512; s < (r.Off+r.Len)/512; s++ {
			alloc[s] = r.State
		}
	}
	touched := make([]bool, capB/512)
	for _, r := range c.runs {
		for g := r.Off / grain * grain; g < r.Off+r.Len; g += grain {
			for s := g / 512; s < min(g+grain, capB)/512; s++ {
				touched[s] = true
			}
		}
		if r.State != Data {
			continue
		}
		for s := r.Off / 512; s < (r.Off+r.Len+511)/512; s++ {
			if alloc[s] != Data && (xf || !AllZero(c.src[s*512:min(s*512+512, c.size)])) {
				t.Fatalf("sector %d holds input data but is %v", s, alloc[s])
			}
		}
	}
	if sf == SubformatMonolithicFlat && xf {
		return // everything is stored
	}
	for s, st := range alloc {
		if st != Unallocated && !touched[s] {
			t.Fatalf("sector %d is %v though no run touches its grain", s, st)
		}
	}
}

// TestWriteEdgeSizes covers tiny disks, sizes exactly on grain and split
// boundaries, an empty allocation map and a map of only Zero runs, in
// every subformat, against qemu-img and Open.
func TestWriteEdgeSizes(t *testing.T) {
	for _, size := range []int64{1, 1000, DefaultGrainSize + 512, 1 << 20} {
		src := make([]byte, size)
		for i := range src {
			src[i] = byte(i%251 + 1)
		}
		for _, rk := range []string{"nil", "empty", "zero"} {
			var runs []Run
			want := make([]byte, (size+511)&^511)
			switch rk {
			case "nil":
				copy(want, src)
			case "empty":
				runs = []Run{}
			case "zero":
				runs = []Run{{Off: 0, Len: size, State: Zero}}
			}
			for _, sf := range allSubformats {
				dir := t.TempDir()
				p := filepath.Join(dir, "e.vmdk")
				if err := Write(context.Background(), p, bytes.NewReader(src), size, runs, &WriteOptions{Subformat: sf, SplitSize: 512 << 10}); err != nil {
					t.Fatalf("%s size %d runs %s: %v", sf, size, rk, err)
				}
				if got := qemuRaw(t, p); !bytes.Equal(got, want) {
					t.Fatalf("%s size %d runs %s: qemu-img reads %d bytes, differs at %d", sf, size, rk, len(got), firstDiff(got, want))
				}
				if got := readDisk(t, p); !bytes.Equal(got, want) {
					t.Fatalf("%s size %d runs %s: Open reads differently at %d", sf, size, rk, firstDiff(got, want))
				}
			}
		}
	}
}
