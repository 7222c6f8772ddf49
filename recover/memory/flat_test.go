package memory

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// block returns a block header for usize and csize followed by stream.
func block(usize, csize int, stream ...byte) []byte {
	b := make([]byte, BlockHeaderSize, BlockHeaderSize+len(stream))
	binary.LittleEndian.PutUint32(b[0:], uint32(usize))
	binary.LittleEndian.PutUint32(b[8:], uint32(csize))
	return append(b, stream...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// vec1 is a hand-assembled stream: literal "abcd" (first control byte with
// the 1<<5 marker), match length 4 distance 4, match length 4 distance 1
// (overlapping) -> "abcdabcddddd".
var vec1 = []byte{0x23, 'a', 'b', 'c', 'd', 0x40, 0x03, 0x40, 0x00}

func TestHandAssembled(t *testing.T) {
	// Block 1: literal "X"; then C=0xff: length escape 0xff,0x05 (9+255+5 =
	// 269) and distance escape 0x0010 (0x2010), reaching before the start
	// of the file, which reads zeros; then literal "Y".
	b1 := block(271, 10, 0x00, 'X', 0xff, 0xff, 0x05, 0xff, 0x00, 0x10, 0x00, 'Y')
	// Block 2: literal "Z", then a match (lf=2: length 4, distance
	// 0x10f+1 = 272) reaching back into block 1's first bytes: "X\0\0\0".
	b2 := block(5, 4, 0x20, 'Z', 0x41, 0x0f)
	// Block 3: stored raw.
	b3 := block(3, 3, 'r', 'a', 'w')
	// Block 4: vec1.
	b4 := block(12, len(vec1), vec1...)
	// End marker and zero padding.
	in := cat(b1, b2, b3, b4, make([]byte, BlockHeaderSize+5))

	want := cat([]byte("X"), make([]byte, 269), []byte("Y"), []byte("ZX\x00\x00\x00"), []byte("raw"), []byte("abcdabcddddd"))
	var out bytes.Buffer
	n, err := Flatten(&out, bytes.NewReader(in), "hand.vmem")
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(want)) || !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("got %d bytes %q\nwant %d bytes %q", n, out.Bytes(), len(want), want)
	}
	// The same through Read, one byte at a time, and with a reader that
	// returns one byte per call.
	got, err := io.ReadAll(iotest.OneByteReader(NewFlatReader(iotest.OneByteReader(bytes.NewReader(in)), "")))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Read: %v, equal %v", err, bytes.Equal(got, want))
	}
	d := NewFlatReader(bytes.NewReader(in), "")
	if err := iotest.TestReader(d, want); err != nil {
		t.Fatal(err)
	}
	if total, raw := d.Blocks(); total != 4 || raw != 1 {
		t.Fatalf("blocks %d raw %d, want 4 and 1", total, raw)
	}
}

func TestEmptyAndPadding(t *testing.T) {
	for _, in := range [][]byte{nil, make([]byte, 7), make([]byte, BlockHeaderSize), make([]byte, 100)} {
		n, err := Flatten(io.Discard, bytes.NewReader(in), "")
		if err != nil || n != 0 {
			t.Fatalf("%d zero bytes: n=%d err=%v", len(in), n, err)
		}
	}
}

func TestCorrupt(t *testing.T) {
	good := block(12, len(vec1), vec1...)
	hdrOnly := func(usize, csize uint64) []byte {
		b := make([]byte, BlockHeaderSize)
		binary.LittleEndian.PutUint64(b[0:], usize)
		binary.LittleEndian.PutUint64(b[8:], csize)
		return b
	}
	cases := []struct {
		name  string
		in    []byte
		off   int64
		field string
	}{
		{"uncompressedSize above max", hdrOnly(MaxBlockSize+1, 100), 0, "uncompressedSize"},
		{"uncompressedSize high half", hdrOnly(1<<32|12, 9), 0, "uncompressedSize"},
		{"uncompressedSize 0", hdrOnly(0, 9), 0, "uncompressedSize"},
		{"compressedSize 0", hdrOnly(12, 0), 8, "compressedSize"},
		{"compressedSize above max", hdrOnly(12, uint64(MaxCompressedSize(12)+1)), 8, "compressedSize"},
		{"compressedSize past the input", block(12, 100, vec1...), 8, "compressedSize"},
		{"header truncated", []byte{12, 0, 0, 0, 0}, 0, "block header"},
		{"ends inside a literal run", block(12, 3, 0x23, 'a', 'b'), 16, "literal run"},
		{"ends inside a length escape", block(300, 4, 0x00, 'a', 0xff, 0xff), 18, "length escape"},
		{"ends before the distance", block(300, 3, 0x00, 'a', 0x40), 18, "match distance"},
		{"ends inside a distance escape", block(300, 5, 0x00, 'a', 0x5f, 0xff, 0x00), 18, "distance escape"},
		{"decompresses to less", block(20, len(vec1), vec1...), 16 + 9, "stream"},
		{"decompresses to more (match)", block(10, len(vec1), vec1...), 16 + 7, "match"},
		{"decompresses to more (literal)", block(2, 5, 0x23, 'a', 'b', 'c', 'd'), 16, "match"},
		{"bytes after the block's output", block(8, len(vec1), vec1...), 16 + 7, "stream"},
		{"first control byte F>>5 == 2", block(12, 9, 0x43, 'a', 'b', 'c', 'd', 0x40, 0x03, 0x40, 0x00), 16, "first control byte"},
		{"first control byte F>>5 == 7", block(12, 9, 0xe3, 'a', 'b', 'c', 'd', 0x40, 0x03, 0x40, 0x00), 16, "first control byte"},
		{"non-zero after the end marker", cat(good, make([]byte, BlockHeaderSize+2), []byte{1}), 25 + 16 + 2, "end marker"},
		{"second block bad", cat(good, hdrOnly(MaxBlockSize+1, 1)), 25, "uncompressedSize"},
		{"second block truncated header", cat(good, []byte{1, 2, 3}), 25, "block header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Flatten(io.Discard, bytes.NewReader(c.in), "x.vmem")
			if !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err %T is not *Error", err)
			}
			if e.Offset != c.off || e.Field != c.field || e.File != "x.vmem" {
				t.Fatalf("offset %d field %q file %q, want %d %q", e.Offset, e.Field, e.File, c.off, c.field)
			}
			// Read reports the same error, sticky.
			d := NewFlatReader(bytes.NewReader(c.in), "x.vmem")
			_, err1 := io.ReadAll(d)
			_, err2 := d.Read(make([]byte, 1))
			if !errors.Is(err1, keysafe.ErrCorrupt) || err2 != err1 {
				t.Fatalf("Read: %v then %v", err1, err2)
			}
		})
	}
}

// TestIOErrorIsNotCorrupt: a failing input is an I/O error, not ErrCorrupt.
func TestIOErrorIsNotCorrupt(t *testing.T) {
	boom := errors.New("boom")
	in := block(12, len(vec1), vec1...)
	for _, cut := range []int{0, 4, 20} {
		r := io.MultiReader(bytes.NewReader(in[:cut]), iotest.ErrReader(boom))
		_, err := Flatten(io.Discard, r, "")
		if !errors.Is(err, boom) || errors.Is(err, keysafe.ErrCorrupt) {
			t.Fatalf("cut %d: %v", cut, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	flat := mixedMemory(1, 1<<20+1234)
	for _, o := range []WriterOptions{
		{BlockSize: 1},
		{BlockSize: 7, ChainDepth: 1},
		{BlockSize: 4096},
		{BlockSize: 65536},
		{BlockSize: 65536, Store: true},
		{},
	} {
		src := flat
		if o.BlockSize == 1 || o.BlockSize == 7 {
			src = flat[:40000]
		}
		enc, st := compress(t, src, &o)
		var out bytes.Buffer
		n, err := Flatten(&out, bytes.NewReader(enc), "")
		if err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		if n != int64(len(src)) || !bytes.Equal(out.Bytes(), src) {
			t.Fatalf("%+v: round trip differs (%d of %d bytes)", o, n, len(src))
		}
		bs := o.BlockSize
		if bs == 0 {
			bs = BlockSize
		}
		if wantBlocks := int64((len(src) + bs - 1) / bs); st.Blocks != wantBlocks || st.In != int64(len(src)) || st.Out != int64(len(enc)) {
			t.Fatalf("%+v: stats %+v, want %d blocks", o, st, wantBlocks)
		}
		if o.Store && st.RawBlocks != st.Blocks {
			t.Fatalf("Store: %d of %d blocks raw", st.RawBlocks, st.Blocks)
		}
	}
}

// TestEncoderFeatures: on memory-shaped data (plus one random block) the
// encoder uses every part of the grammar, and the decoder undoes it.
func TestEncoderFeatures(t *testing.T) {
	const bs = 256 << 10
	flat := mixedMemory(2, 6*bs)
	r := rand.New(rand.NewPCG(3, 3))
	for i := 2 * bs; i < 3*bs; i++ { // block 2: incompressible
		flat[i] = byte(r.Uint32())
	}
	clear(flat[:8192]) // memory starts with zero pages
	enc, st := compress(t, flat, &WriterOptions{BlockSize: bs})
	for name, v := range map[string]int64{
		"raw blocks": st.RawBlocks, "matches": st.Matches, "length escapes": st.LengthEscapes,
		"0xff continuations": st.LongLengths, "distance escapes": st.DistanceEscapes,
		"cross-block references": st.CrossBlock, "references before the start": st.BeforeStart,
	} {
		if v == 0 {
			t.Errorf("no %s: %+v", name, st)
		}
	}
	if st.RawBlocks != 1 {
		t.Errorf("%d raw blocks, want 1 (block 2)", st.RawBlocks)
	}
	got, err := io.ReadAll(NewFlatReader(bytes.NewReader(enc), ""))
	if err != nil || !bytes.Equal(got, flat) {
		t.Fatalf("round trip: %v", err)
	}
	if len(enc) >= len(flat)*3/4 {
		t.Errorf("compressed %d of %d bytes: the encoder hardly compresses", len(enc), len(flat))
	}
}

// TestZeroAllocsPerBlock: decoding allocates nothing per block once its
// buffers have grown.
func TestZeroAllocsPerBlock(t *testing.T) {
	enc, _ := compress(t, mixedMemory(4, 1<<20), &WriterOptions{BlockSize: 32 << 10})
	br := bytes.NewReader(enc)
	d := NewFlatReader(br, "")
	allocs := testing.AllocsPerRun(3, func() {
		br.Reset(enc)
		d.Reset(br, "")
		if _, err := d.WriteTo(io.Discard); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per 32-block decode, want 0", allocs)
	}
}

func TestLooksCompressed(t *testing.T) {
	enc, _ := compress(t, mixedMemory(5, 100000), nil)
	if !LooksCompressed(enc) {
		t.Fatal("encoder output not recognised")
	}
	for _, b := range [][]byte{
		nil, make([]byte, 64), []byte("\xd2\xbe\xd2\xbe\x08\x00\x00\x00"),
		block(12, 9, 0x43, 'a'), block(MaxBlockSize+1, 9, 0x03),
	} {
		if LooksCompressed(b) {
			t.Fatalf("%x taken for a .vmem", b)
		}
	}
	if !LooksCompressed(block(3, 3, 'r', 'a', 'w')) {
		t.Fatal("raw block not recognised")
	}
}

// chunkSource writes data in pieces, then fails with err (nil: success).
type chunkSource struct {
	data []byte
	err  error
}

func (s chunkSource) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for b := s.data; len(b) > 0; {
		k := min(len(b), 77777)
		m, err := w.Write(b[:k])
		n += int64(m)
		if err != nil {
			return n, err
		}
		b = b[k:]
	}
	return n, s.err
}

func TestFlattenConcurrent(t *testing.T) {
	flat := mixedMemory(13, 5<<20+999)
	enc, _ := compress(t, flat, nil)
	var out bytes.Buffer
	n, err := FlattenConcurrent(&out, chunkSource{data: enc}, "")
	if err != nil || n != int64(len(flat)) || !bytes.Equal(out.Bytes(), flat) {
		t.Fatalf("n %d err %v", n, err)
	}
	// A source failing midway: its error, not a corrupt stream.
	boom := errors.New("boom")
	if _, err := FlattenConcurrent(io.Discard, chunkSource{data: enc[:len(enc)/2], err: boom}, ""); !errors.Is(err, boom) {
		t.Fatalf("source error: %v", err)
	}
	// A corrupt stream stops a source that would write forever.
	bad := cat(block(12, len(vec1), vec1...), block(12, 9, 0x43, 'a', 'b', 'c', 'd', 0x40, 0x03, 0x40, 0x00))
	if _, err := FlattenConcurrent(io.Discard, endless(bad), ""); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("corrupt: %v", err)
	}
}

// endless writes itself over and over until the writer fails.
type endless []byte

func (e endless) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		m, err := w.Write(e)
		n += int64(m)
		if err != nil {
			return n, err
		}
	}
}

// TestWriterReset: a reused Writer writes exactly what a fresh one does.
func TestWriterReset(t *testing.T) {
	a := mixedMemory(16, 300000)
	b := mixedMemory(17, 200000)
	o := &WriterOptions{BlockSize: 50000}
	fresh, _ := compress(t, b, o)
	var out bytes.Buffer
	w, _ := NewWriter(&out, o)
	w.Write(a)
	w.Close()
	out.Reset()
	if err := w.Reset(&out, o); err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), fresh) {
		t.Fatal("a reused Writer's output differs from a fresh one's")
	}
	if st := w.Stats(); st.In != int64(len(b)) || st.Blocks != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestIsCompressed(t *testing.T) {
	flat := mixedMemory(19, 300000)
	clear(flat[:PageSize])
	enc, _ := compress(t, flat, &WriterOptions{BlockSize: 100000})
	one, _ := compress(t, flat[:5000], nil)
	ivt := bytes.Clone(flat) // a BIOS guest's page 0: the real-mode interrupt table
	for i := 0; i < 1024; i += 4 {
		binary.LittleEndian.PutUint32(ivt[i:], 0xf000ff53)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"compressed", enc, true}, {"one block", one, true}, {"one block, zero padding", cat(one, make([]byte, 40)), true},
		{"flat, zero page 0", flat, false}, {"flat, IVT", ivt, false}, {"empty", nil, false},
		{"first block only, then garbage", cat(one, []byte("garbage header..")), false},
		{"truncated", enc[:100], false},
	} {
		if got := IsCompressed(bytes.NewReader(c.b), int64(len(c.b))); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
