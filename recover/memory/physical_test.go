package memory

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// expectedPhysical lays flat out by hand for handRegions: flat pages 0..16
// at physical pages 0..16, flat pages 16..24 at physical 0x20..0x28, zeros
// between.
func expectedPhysical(flat []byte) []byte {
	img := make([]byte, 0x28*PageSize)
	copy(img[0:16*PageSize], flat[0:16*PageSize])
	copy(img[0x20*PageSize:], flat[16*PageSize:24*PageSize])
	return img
}

// recorder is a PhysicalTarget in memory that remembers what was written.
type recorder struct {
	b      []byte
	writes [][2]int64
}

func (r *recorder) WriteAt(p []byte, off int64) (int, error) {
	if need := off + int64(len(p)); need > int64(len(r.b)) {
		r.b = append(r.b, make([]byte, need-int64(len(r.b)))...)
	}
	r.writes = append(r.writes, [2]int64{off, off + int64(len(p))})
	return copy(r.b[off:], p), nil
}

func (r *recorder) Truncate(n int64) error {
	if n > int64(len(r.b)) {
		r.b = append(r.b, make([]byte, n-int64(len(r.b)))...)
	}
	r.b = r.b[:n]
	return nil
}

func TestPhysicalReaderAt(t *testing.T) {
	flat := mixedMemory(10, 24*PageSize)
	want := expectedPhysical(flat)
	p, err := NewPhysical(bytes.NewReader(flat), int64(len(flat)), handRegions, "")
	if err != nil {
		t.Fatal(err)
	}
	if p.Size() != int64(len(want)) {
		t.Fatalf("size %d, want %d", p.Size(), len(want))
	}
	if err := iotest.TestReader(io.NewSectionReader(p, 0, p.Size()), want); err != nil {
		t.Fatal(err)
	}
	// A read across region 0's end, the hole and region 1's start.
	b := make([]byte, 0x14*PageSize)
	if n, err := p.ReadAt(b, 15*PageSize+7); n != len(b) || err != nil || !bytes.Equal(b, want[15*PageSize+7:][:len(b)]) {
		t.Fatalf("cross-hole read: %d %v", n, err)
	}
	// Reading past the end: short with io.EOF.
	if n, err := p.ReadAt(b[:100], p.Size()-40); n != 40 || err != io.EOF {
		t.Fatalf("read at the end: %d %v", n, err)
	}
	if rt := RegionTable(handRegions); rt[1].PhysStart != 0x20*PageSize || rt[1].FlatOffset != 16*PageSize || rt[1].PhysEnd != 0x28*PageSize || rt[1].Size != 8*PageSize {
		t.Fatalf("region table %+v", rt)
	}
}

func TestPhysicalErrors(t *testing.T) {
	flat := make([]byte, 23*PageSize) // one page short of region 1's end
	if _, err := NewPhysical(bytes.NewReader(flat), int64(len(flat)), handRegions, ""); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("short flat: %v", err)
	}
	_, err := WritePhysical(&recorder{}, bytes.NewReader(flat), handRegions, "m.vmem")
	var e *Error
	if !errors.Is(err, keysafe.ErrCorrupt) || !errors.As(err, &e) || e.Offset != int64(len(flat)) {
		t.Fatalf("WritePhysical short flat: %v", err)
	}
	overlap := []Region{{PPN: 0, PageNum: 0, Pages: 4}, {PPN: 2, PageNum: 4, Pages: 4}}
	if _, err := NewPhysical(bytes.NewReader(flat), int64(len(flat)), overlap, ""); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("overlap: %v", err)
	}
	if _, err := WritePhysical(&recorder{}, bytes.NewReader(flat), overlap, ""); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("overlap: %v", err)
	}
}

func TestWritePhysical(t *testing.T) {
	flat := mixedMemory(11, 24*PageSize)
	flat = append(flat, bytes.Repeat([]byte{0xee}, 3*PageSize)...) // flat pages outside every region
	want := expectedPhysical(flat)
	// Regions listed out of flat order: the writer sorts them.
	rs := []Region{handRegions[1], handRegions[0]}
	r := &recorder{}
	st, err := WritePhysical(r, bytes.NewReader(flat), rs, "")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.b, want) || st.Size != int64(len(want)) {
		t.Fatalf("image differs (size %d, want %d)", st.Size, len(want))
	}
	if st.Written+st.ZeroSkipped != 24*PageSize || st.ZeroSkipped == 0 {
		t.Fatalf("stats %+v", st)
	}
	// Nothing was written in the hole, nor over an all-zero page.
	for _, w := range r.writes {
		if w[0] < 0x20*PageSize && w[1] > 16*PageSize {
			t.Fatalf("write %v touches the hole", w)
		}
		for pg := w[0] / PageSize; pg*PageSize < w[1]; pg++ {
			if allZero(want[pg*PageSize : (pg+1)*PageSize]) {
				t.Fatalf("write %v covers the all-zero page %d", w, pg)
			}
		}
	}

	// Into a real file: the same bytes, the right size.
	path := filepath.Join(t.TempDir(), "phys.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := WritePhysical(f, bytes.NewReader(flat), rs, ""); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
		t.Fatal("file image differs")
	}
}

func TestPhysicalIdentity(t *testing.T) {
	flat := mixedMemory(12, 5*PageSize+100)
	r := &recorder{}
	st, err := WritePhysical(r, bytes.NewReader(flat), nil, "")
	if err != nil || st.Size != int64(len(flat)) || !bytes.Equal(r.b, flat) {
		t.Fatalf("identity write: %v size %d", err, st.Size)
	}
	p, err := NewPhysical(bytes.NewReader(flat), int64(len(flat)), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := iotest.TestReader(io.NewSectionReader(p, 0, p.Size()), flat); err != nil {
		t.Fatal(err)
	}
}
