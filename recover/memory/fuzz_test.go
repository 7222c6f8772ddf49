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
	writerPool = sync.Pool{New: func() any { return new(Writer) }}
)

// fuzzCompress is compress with a pooled Writer.
func fuzzCompress(t *testing.T, flat []byte, opts *WriterOptions) ([]byte, EncoderStats) {
	e := writerPool.Get().(*Writer)
	defer writerPool.Put(e)
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
		if len(flat) > 16<<10 {
			return
		}
		enc, st := fuzzCompress(t, flat, &WriterOptions{BlockSize: int(bs), ChainDepth: int(bs % 5)})
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
