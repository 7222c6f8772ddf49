package mount

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// patternPeriod is the period of the test content: not a power of two, so
// a read from the wrong MiB or page shows.
const patternPeriod = 1<<20 + 7

// patternTable holds one period of test content, never zero, so a hole read
// where data was expected shows.
var patternTable = func() []byte {
	b := make([]byte, 2*patternPeriod)
	for i := range b {
		o := i % patternPeriod
		b[i] = byte(o*131+o>>9) | 1
	}
	return b
}()

// pattern is the content of offset o in test files.
func pattern(o int64) byte { return patternTable[o%patternPeriod] }

// fillPattern writes the content of [off, off+len(p)) into p.
func fillPattern(p []byte, off int64) {
	for len(p) > 0 {
		n := copy(p, patternTable[off%patternPeriod:][:min(len(p), patternPeriod)])
		p, off = p[n:], off+int64(n)
	}
}

// patternReader serves pattern bytes for [0, size). When runs is not nil it
// records every call that touches bytes outside the runs (a hole read that
// reached Data).
type patternReader struct {
	size      int64
	runs      []Run
	calls     atomic.Int64
	holeReads atomic.Int64
	// failOff/failLen: a range that returns errFail.
	failOff, failLen int64
	panicOff         int64 // a read covering this offset panics (when > 0)
}

var errFail = errors.New("test: damaged range")

func (r *patternReader) ReadAt(p []byte, off int64) (int, error) {
	r.calls.Add(1)
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	end := off + int64(len(p))
	if r.failLen > 0 && off < r.failOff+r.failLen && end > r.failOff {
		return 0, fmt.Errorf("%w at %d", errFail, off)
	}
	if r.panicOff > 0 && off <= r.panicOff && end > r.panicOff {
		panic("test: Data panics")
	}
	if r.runs != nil && !inRuns(r.runs, off, end) {
		r.holeReads.Add(1)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), r.size-off))
	fillPattern(p[:n], off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// inRuns reports whether the sorted runs cover [off, end) (adjacent runs
// together).
func inRuns(runs []Run, off, end int64) bool {
	for _, r := range runs {
		if r.Off <= off && off < r.End() {
			off = r.End()
		}
	}
	return off >= end
}

// expected builds the content of a file of size with runs (nil = all data).
func expected(size int64, runs []Run) []byte {
	b := make([]byte, size)
	if runs == nil {
		runs = []Run{{0, size}}
	}
	for _, r := range runs {
		fillPattern(b[r.Off:r.End()], r.Off)
	}
	return b
}

func TestValidate(t *testing.T) {
	d := bytes.NewReader(nil)
	bad := []struct {
		name  string
		files []File
	}{
		{"empty name", []File{{Name: "", Data: d}}},
		{"absolute", []File{{Name: "/a", Data: d}}},
		{"dotdot", []File{{Name: "a/../b", Data: d}}},
		{"dot", []File{{Name: "./a", Data: d}}},
		{"double slash", []File{{Name: "a//b", Data: d}}},
		{"trailing slash", []File{{Name: "a/", Data: d}}},
		{"NUL", []File{{Name: "a\x00b", Data: d}}},
		{"long", []File{{Name: string(bytes.Repeat([]byte("x"), MaxNameLen+1)), Data: d}}},
		{"deep", []File{{Name: "a/b/c/d/e/f/g/h/i/j", Data: d}}},
		{"negative size", []File{{Name: "a", Size: -1, Data: d}}},
		{"no data", []File{{Name: "a", Size: 1}}},
		{"no data with runs", []File{{Name: "a", Size: 10, Allocated: []Run{{0, 1}}}}},
		{"duplicate", []File{{Name: "a", Data: d}, {Name: "a", Data: d}}},
		{"file is folder", []File{{Name: "a", Data: d}, {Name: "a/b", Data: d}}},
		{"folder is file", []File{{Name: "a/b", Data: d}, {Name: "a", Data: d}}},
		{"run past end", []File{{Name: "a", Size: 10, Data: d, Allocated: []Run{{5, 6}}}}},
		{"run starts past end", []File{{Name: "a", Size: 10, Data: d, Allocated: []Run{{11, 0}}}}},
		{"negative run", []File{{Name: "a", Size: 10, Data: d, Allocated: []Run{{-1, 2}}}}},
		{"negative length", []File{{Name: "a", Size: 10, Data: d, Allocated: []Run{{2, -1}}}}},
		{"overlap", []File{{Name: "a", Size: 10, Data: d, Allocated: []Run{{0, 5}, {4, 2}}}}},
		{"unsorted", []File{{Name: "a", Size: 10, Data: d, Allocated: []Run{{5, 1}, {0, 2}}}}},
		{"overflow", []File{{Name: "a", Size: 10, Data: d, Allocated: []Run{{5, 1<<63 - 1}}}}},
	}
	for _, c := range bad {
		if _, err := validate(c.files); !errors.Is(err, ErrBadFile) {
			t.Errorf("%s: got %v, want ErrBadFile", c.name, err)
		}
	}
	if _, err := validate(make([]File, MaxFiles+1)); !errors.Is(err, ErrBadFile) {
		t.Errorf("too many files: got %v, want ErrBadFile", err)
	}

	in := []File{
		{Name: "a/b/c.raw", Size: 100, Data: d, Allocated: []Run{{0, 10}, {10, 5}, {20, 0}, {30, 70}}},
		{Name: "a/b/d.raw", Size: 100, Data: d},
		{Name: "hole", Size: 100, Allocated: []Run{}},
		{Name: "zero", Size: 0},
	}
	out, err := validate(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []Run{{0, 15}, {30, 70}}
	if fmt.Sprint(out[0].Allocated) != fmt.Sprint(want) {
		t.Errorf("normalised runs %v, want %v", out[0].Allocated, want)
	}
	if out[1].Allocated != nil || out[2].Allocated == nil || len(out[2].Allocated) != 0 {
		t.Errorf("nil/empty runs not kept: %v %v", out[1].Allocated, out[2].Allocated)
	}
	if len(in[0].Allocated) != 4 {
		t.Error("validate modified the caller's runs")
	}
}

// TestReadFile reads random ranges of a file with holes and compares them
// with the expected bytes; no hole read may reach Data.
func TestReadFile(t *testing.T) {
	const size = 1<<20 + 333
	runs := []Run{{0, 1}, {4096, 4096}, {10000, 7}, {65536, 300000}, {size - 100, 100}}
	src := &patternReader{size: size, runs: runs}
	files, err := validate([]File{{Name: "f", Size: size, Data: src, Allocated: runs}})
	if err != nil {
		t.Fatal(err)
	}
	f := &files[0]
	want := expected(size, runs)
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 70000)
	for range 300 {
		off := rng.Int64N(size)
		n := rng.Int64N(min(int64(len(buf)), size-off)) + 1
		p := buf[:n]
		for i := range p {
			p[i] = 0xee // must be overwritten, holes too
		}
		if err := readFile(f, p, off); err != nil {
			t.Fatalf("read %d+%d: %v", off, n, err)
		}
		if !bytes.Equal(p, want[off:off+n]) {
			t.Fatalf("read %d+%d: wrong bytes", off, n)
		}
	}
	if src.holeReads.Load() != 0 {
		t.Errorf("%d reads of holes reached Data", src.holeReads.Load())
	}

	// A file that is one hole never calls Data (which is nil).
	hole := &File{Name: "h", Size: 1000, Allocated: []Run{}}
	p := bytes.Repeat([]byte{1}, 1000)
	if err := readFile(hole, p, 0); err != nil || !bytes.Equal(p, make([]byte, 1000)) {
		t.Errorf("hole file: %v", err)
	}
}

// TestReadFileErrors: a failing, short or truncated Data is an error naming
// the file and offset, never a short read.
func TestReadFileErrors(t *testing.T) {
	src := &patternReader{size: 1 << 20, failOff: 8192, failLen: 10}
	f := &File{Name: "disk.raw", Size: 1 << 20, Data: src}
	p := make([]byte, 4096)
	if err := readFile(f, p, 0); err != nil {
		t.Fatalf("good range: %v", err)
	}
	err := readFile(f, p, 8000)
	var re *readError
	if !errors.Is(err, errFail) || !errors.As(err, &re) || re.File != "disk.raw" || re.Offset != 8000 {
		t.Fatalf("damaged range: got %v", err)
	}

	// Data shorter than Size: io.EOF before the end is an error.
	short := &File{Name: "s", Size: 100, Data: bytes.NewReader(make([]byte, 50))}
	if err := readFile(short, make([]byte, 60), 0); !errors.Is(err, errShortRead) {
		t.Errorf("short data: got %v, want errShortRead", err)
	}
	// io.EOF with a full read is fine.
	full := &File{Name: "s", Size: 50, Data: bytes.NewReader(make([]byte, 50))}
	if err := readFile(full, make([]byte, 50), 0); err != nil {
		t.Errorf("full read with EOF: %v", err)
	}
}

// TestSeekFile compares seekFile with a byte-by-byte scan of the map.
func TestSeekFile(t *testing.T) {
	const size = 3100
	runs := []Run{{0, 10}, {10, 10}, {100, 1}, {2000, 1000}, {3090, 10}}
	files, err := validate([]File{
		{Name: "f", Size: size, Data: bytes.NewReader(nil), Allocated: runs},
		{Name: "g", Size: size, Data: bytes.NewReader(nil)},
		{Name: "h", Size: size, Allocated: []Run{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for fi := range files {
		f := &files[fi]
		data := func(o int64) bool { return f.Allocated == nil || inRuns(f.Allocated, o, o+1) }
		for off := int64(-1); off <= size+1; off++ {
			for _, whence := range []int{seekData, seekHole} {
				want, wantErr := int64(-1), off < 0 || off >= size
				if !wantErr {
					o := off
					for o < size && data(o) == (whence == seekHole) {
						o++
					}
					if o == size && whence == seekData {
						wantErr = true
					}
					want = o
				}
				got, err := seekFile(f, off, whence)
				if wantErr {
					if !errors.Is(err, errNoMore) {
						t.Fatalf("%s seek(%d, %d) = %d, %v; want errNoMore", f.Name, off, whence, got, err)
					}
					continue
				}
				if err != nil || got != want {
					t.Fatalf("%s seek(%d, %d) = %d, %v; want %d", f.Name, off, whence, got, err, want)
				}
			}
		}
	}
	if _, err := seekFile(&files[0], 0, 0); err == nil {
		t.Error("SEEK_SET accepted")
	}
}

// FuzzFileMap: any allocation map is either refused with ErrBadFile or
// served consistently: reads give the pattern in runs and zeros elsewhere,
// seeks agree with a scan, and holes never reach Data.
func FuzzFileMap(f *testing.F) {
	f.Add([]byte{0x10, 0x00, 0, 0, 4, 0, 8, 0, 4, 0})
	f.Add([]byte{0xff, 0x0f, 0, 0, 0, 1, 0, 2, 0, 1, 0xff, 0x0e, 1, 0})
	f.Add([]byte{0x00, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < 2 || len(b) > 2+4*64 {
			return
		}
		u16 := func(i int) int64 { return int64(b[i]) | int64(b[i+1])<<8 }
		size := u16(0) % 8192
		var runs []Run
		for i := 2; i+4 <= len(b); i += 4 {
			runs = append(runs, Run{u16(i) - 16, u16(i+2) - 16}) // some negative
		}
		src := &patternReader{size: size, runs: runs}
		files, err := validate([]File{{Name: "f", Size: size, Data: src, Allocated: runs}})
		if err != nil {
			if !errors.Is(err, ErrBadFile) {
				t.Fatalf("error %v is not ErrBadFile", err)
			}
			return
		}
		fl := &files[0]
		data := func(o int64) bool { return runs == nil || inRuns(runs, o, o+1) }
		got := make([]byte, size)
		if err := readFile(fl, got, 0); err != nil {
			t.Fatal(err)
		}
		for o := range size {
			want := byte(0)
			if data(o) {
				want = pattern(o)
			}
			if got[o] != want {
				t.Fatalf("byte %d = %#x, want %#x (runs %v)", o, got[o], want, runs)
			}
		}
		if src.holeReads.Load() != 0 {
			t.Fatalf("hole read reached Data (runs %v)", runs)
		}
		for _, off := range []int64{0, size / 3, size / 2, size - 1} {
			if off < 0 {
				continue
			}
			for _, whence := range []int{seekData, seekHole} {
				want, wantErr := off, false
				for want < size && data(want) == (whence == seekHole) {
					want++
				}
				wantErr = off >= size || want == size && whence == seekData
				g, err := seekFile(fl, off, whence)
				if wantErr != (err != nil) || (!wantErr && g != want) {
					t.Fatalf("seek(%d, %d) = %d, %v; want %d (runs %v)", off, whence, g, err, want, runs)
				}
			}
		}
	})
}
