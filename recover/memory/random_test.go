package memory

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// encodeForTest compresses flat with small blocks (references cross them).
func encodeForTest(t *testing.T, flat []byte, block int) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := NewWriter(&b, &WriterOptions{BlockSize: block})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(flat); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// RandomFlat reads what Flatten writes, at any offset, in any order, and
// its history checkpoints are right after evictions.
func TestRandomFlat(t *testing.T) {
	flat := mixedMemory(3, 3<<20+777)
	for _, block := range []int{4096, 64 << 10, 1 << 20} {
		stream := encodeForTest(t, flat, block)
		var want bytes.Buffer
		if _, err := Flatten(&want, bytes.NewReader(stream), "s"); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want.Bytes(), flat) {
			t.Fatal("the encoder or Flatten is wrong")
		}
		f, err := NewRandomFlat(bytes.NewReader(stream), int64(len(stream)), "s")
		if err != nil {
			t.Fatal(err)
		}
		if f.Size() != int64(len(flat)) {
			t.Fatalf("size %d, want %d", f.Size(), len(flat))
		}
		rng := rand.New(rand.NewPCG(uint64(block), 1))
		for range 300 {
			off := rng.Int64N(int64(len(flat)))
			n := min(rng.IntN(200<<10)+1, len(flat)-int(off))
			got := make([]byte, n)
			if _, err := f.ReadAt(got, off); err != nil {
				t.Fatalf("block %d: ReadAt(%d, %d): %v", block, n, off, err)
			}
			if !bytes.Equal(got, flat[off:off+int64(n)]) {
				t.Fatalf("block %d: ReadAt(%d, %d) differs", block, n, off)
			}
		}
		if err := iotest.TestReader(io.NewSectionReader(f, 0, f.Size()), flat); err != nil {
			t.Fatal(err)
		}
	}
}

// A damaged block body fails when it is read, as corrupt, naming an
// offset; the blocks before it still read.
func TestRandomFlatCorrupt(t *testing.T) {
	flat := mixedMemory(4, 1<<20)
	stream := encodeForTest(t, flat, 64<<10)
	f, err := NewRandomFlat(bytes.NewReader(stream), int64(len(stream)), "s")
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), stream...)
	k := len(f.blocks) - 2
	br := f.blocks[k]
	bad[br.in+BlockHeaderSize] = 0xff // a first control byte with F>>5 = 7
	g, err := NewRandomFlat(bytes.NewReader(bad), int64(len(bad)), "s")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if _, err := g.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, flat[:4096]) {
		t.Fatalf("block 0: %v", err)
	}
	var me *Error
	if _, err := g.ReadAt(buf, br.out); !errors.Is(err, keysafe.ErrCorrupt) || !errors.As(err, &me) {
		t.Fatalf("damaged block: %v", err)
	}
	// A compressedSize past the input is refused when the view is made.
	cut := stream[:len(stream)-100]
	if _, err := NewRandomFlat(bytes.NewReader(cut), int64(len(cut)), "s"); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("cut stream: %v", err)
	}
}

// FuzzRandomFlat: on any input, RandomFlat never panics, and where Flatten
// succeeds it reads the same bytes (backwards, to exercise checkpoints and
// the cache).
func FuzzRandomFlat(f *testing.F) {
	f.Add(encodeForTestF(f, mixedMemory(5, 20000), 4096))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, stream []byte) {
		if len(stream) > 64<<10 {
			return
		}
		r, err := NewRandomFlat(bytes.NewReader(stream), int64(len(stream)), "s")
		if err != nil || r.Size() > 256<<10 {
			return
		}
		var want bytes.Buffer
		_, ferr := Flatten(&want, bytes.NewReader(stream), "s")
		got := make([]byte, r.Size())
		for off := r.Size(); off > 0; {
			n := min(off, 3000)
			off -= n
			if _, err := r.ReadAt(got[off:off+n], off); err != nil {
				if ferr == nil {
					t.Fatalf("RandomFlat fails where Flatten does not: %v", err)
				}
				return
			}
		}
		if ferr == nil && !bytes.Equal(got, want.Bytes()) {
			t.Fatal("RandomFlat differs from Flatten")
		}
	})
}

func encodeForTestF(f *testing.F, flat []byte, block int) []byte {
	var b bytes.Buffer
	w, err := NewWriter(&b, &WriterOptions{BlockSize: block})
	if err != nil {
		f.Fatal(err)
	}
	w.Write(flat)
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	return b.Bytes()
}
