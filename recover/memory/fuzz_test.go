package memory

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

const maxFuzzInput = 64 << 10

var (
	readerPool = sync.Pool{New: func() any { return NewFlatReader(nil, "") }}
	// cachedWriter survives garbage collections (a sync.Pool does not):
	// a fresh Writer's tables cost more than a small fuzz input.
	cachedWriter struct {
		sync.Mutex
		w Writer
	}
)

// fuzzCompress is compress with a reused Writer.
func fuzzCompress(t *testing.T, flat []byte, opts *WriterOptions) ([]byte, EncoderStats) {
	cachedWriter.Lock()
	defer cachedWriter.Unlock()
	e := &cachedWriter.w
	var out bytes.Buffer
	if err := e.Reset(&out, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Write(flat); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), e.Stats()
}

// FuzzFlatReader: any input decodes or fails with ErrCorrupt, never panics
// or loops; what decodes re-encodes to a stream that decodes to the same
// bytes.
func FuzzFlatReader(f *testing.F) {
	f.Add(block(12, len(vec1), vec1...))
	f.Add(cat(block(271, 10, 0x00, 'X', 0xff, 0xff, 0x05, 0xff, 0x00, 0x10, 0x00, 'Y'), block(5, 4, 0x20, 'Z', 0x41, 0x0f), block(3, 3, 'r', 'a', 'w'), make([]byte, 20)))
	f.Add(block(300, 5, 0x00, 'a', 0x5f, 0xff, 0x00))
	enc, _ := compress(f, mixedMemory(7, 20000), &WriterOptions{BlockSize: 4096})
	f.Add(enc)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > maxFuzzInput {
			return
		}
		d := readerPool.Get().(*FlatReader)
		defer readerPool.Put(d)
		d.Reset(bytes.NewReader(in), "fuzz")
		var out bytes.Buffer
		n, err := d.WriteTo(&out)
		if n != int64(out.Len()) {
			t.Fatalf("WriteTo says %d, wrote %d", n, out.Len())
		}
		if err != nil {
			var e *Error
			if !errors.Is(err, keysafe.ErrCorrupt) || !errors.As(err, &e) || e.Offset < 0 || e.Offset > int64(len(in)) {
				t.Fatalf("error %v (offset outside the input or not ErrCorrupt)", err)
			}
			return
		}
		enc, _ := fuzzCompress(t, out.Bytes(), &WriterOptions{BlockSize: 1 << 16})
		got, err := io.ReadAll(NewFlatReader(bytes.NewReader(enc), ""))
		if err != nil || !bytes.Equal(got, out.Bytes()) {
			t.Fatalf("re-encoded stream: %v", err)
		}
	})
}

// FuzzRoundTrip: the encoder's output always decodes to its input, for any
// data and block size.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("abcdabcddddd"), uint16(4))
	f.Add(make([]byte, 5000), uint16(1000))
	f.Add(mixedMemory(8, 30000), uint16(0))
	f.Fuzz(func(t *testing.T, flat []byte, bs uint16) {
		if len(flat) > 8<<10 {
			return
		}
		size := int(bs)
		if size == 0 {
			size = 1 << 16 // small window buffers: fast execs
		}
		enc, st := fuzzCompress(t, flat, &WriterOptions{BlockSize: size, ChainDepth: int(bs % 5)})
		if st.In != int64(len(flat)) {
			t.Fatalf("stats in %d of %d", st.In, len(flat))
		}
		d := readerPool.Get().(*FlatReader)
		defer readerPool.Put(d)
		d.Reset(bytes.NewReader(enc), "")
		var out bytes.Buffer
		if _, err := d.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), flat) {
			t.Fatalf("round trip (block size %d): %v", bs, err)
		}
	})
}

// FuzzCheckpoint: any input parses or fails with ErrCorrupt; a parsed file
// rebuilt with the writer parses to the same groups and tags; its memory
// layout, if valid, makes a physical view.
func FuzzCheckpoint(f *testing.F) {
	b, _ := handState()
	f.Add(b)
	var s StateFile
	s.Magic = MagicCheckpoint32
	s.Group("cpu").Uint64("CR64", 1, 0, 3)
	s.MemoryGroup(handRegions, []uint64{1}, make([]byte, 100))
	b, _ = s.Bytes()
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > maxFuzzInput {
			return
		}
		c, err := ParseCheckpoint(bytes.NewReader(in), int64(len(in)), "fuzz")
		if err != nil {
			if !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatalf("not ErrCorrupt: %v", err)
			}
			return
		}
		if m, err := c.Memory("fuzz"); err == nil {
			if _, err := NewPhysical(bytes.NewReader(nil), 1<<60, m.Regions, ""); err != nil {
				t.Fatalf("valid layout refused: %v", err)
			}
		} else if !errors.Is(err, keysafe.ErrCorrupt) {
			t.Fatalf("Memory: not ErrCorrupt: %v", err)
		}
		// Rebuild and compare.
		w := StateFile{Magic: c.Magic, Version: c.Version}
		for _, g := range c.Groups {
			if len(g.Name) >= GroupNameSize {
				return
			}
			wg := w.Group(g.Name)
			for _, tg := range g.Tags {
				if tg.Block != nil {
					wg.Block(tg.Name, in[tg.Block.DataOffset:tg.Block.DataOffset+int64(tg.Block.DiskSize)], tg.Indices...)
				} else {
					wg.Value(tg.Name, tg.Value, tg.Indices...)
				}
			}
		}
		out, err := w.Bytes()
		if err != nil {
			t.Fatalf("rebuild: %v", err)
		}
		c2, err := ParseCheckpoint(bytes.NewReader(out), int64(len(out)), "")
		if err != nil {
			t.Fatalf("rebuilt file: %v", err)
		}
		if len(c2.Groups) != len(c.Groups) {
			t.Fatalf("%d groups, want %d", len(c2.Groups), len(c.Groups))
		}
		for i, g := range c.Groups {
			g2 := c2.Groups[i]
			if g2.Name != g.Name || len(g2.Tags) != len(g.Tags) {
				t.Fatalf("group %d differs", i)
			}
			for k, tg := range g.Tags {
				t2 := g2.Tags[k]
				if t2.Name != tg.Name || !slicesEqual(t2.Indices, tg.Indices) || !bytes.Equal(t2.Value, tg.Value) || (t2.Block == nil) != (tg.Block == nil) {
					t.Fatalf("group %d tag %d differs", i, k)
				}
				if tg.Block != nil && (t2.Block.DiskSize != tg.Block.DiskSize ||
					!bytes.Equal(out[t2.Block.DataOffset:][:t2.Block.DiskSize], in[tg.Block.DataOffset:][:tg.Block.DiskSize])) {
					t.Fatalf("group %d block %d differs", i, k)
				}
			}
		}
	})
}

func slicesEqual(a, b []uint32) bool {
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
