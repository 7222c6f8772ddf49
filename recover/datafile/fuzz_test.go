package datafile

import (
	"bytes"
	"errors"
	"io"
	mrand "math/rand/v2"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// FuzzReader feeds arbitrary files to the header parser and the page
// reader: they must never panic, never return a partial Reader with an
// error, and fail only with the package's sentinels. A second half encrypts
// the fuzzed bytes as plaintext and checks the round trip.
func FuzzReader(f *testing.F) {
	key := testKey(32)
	seed := func(n int, flip int) []byte {
		var buf bytes.Buffer
		rng := mrand.NewChaCha8([32]byte{1})
		if err := Encrypt(&buf, bytes.NewReader(plain(n)), int64(n), key, 1, rng); err != nil {
			f.Fatal(err)
		}
		b := buf.Bytes()
		if flip >= 0 && flip < len(b) {
			b[flip] ^= 0x40
		}
		return b
	}
	f.Add(seed(0, -1), false)
	f.Add(seed(100, -1), false)
	f.Add(seed(5000, -1), true)
	f.Add(seed(5000, HeaderSize+7), false)
	f.Add(seed(5000, 0x18), false)
	f.Add(seed(4064, 4), false)
	f.Add([]byte{0x9e, 0xdd, 0x43, 0x89}, false)
	f.Fuzz(func(t *testing.T, b []byte, ignore bool) {
		r, err := NewReader(bytes.NewReader(b), int64(len(b)), key, &Options{Name: "fuzz", IgnoreMAC: ignore})
		if err != nil {
			if r != nil {
				t.Fatal("partial Reader with an error")
			}
			if !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) {
				t.Fatalf("unexpected error kind: %v", err)
			}
		} else {
			if r.Size() < 0 || r.Header().Pages()*PageSize+HeaderSize > int64(len(b)) {
				t.Fatalf("header %+v does not fit a %d-byte file", r.Header(), len(b))
			}
			var out bytes.Buffer
			n, err := r.WriteTo(&out)
			if err == nil && n != r.Size() {
				t.Fatalf("WriteTo wrote %d of %d", n, r.Size())
			}
			if err != nil && !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatalf("WriteTo: unexpected error kind: %v", err)
			}
			if ignore && err != nil {
				t.Fatalf("IgnoreMAC read failed: %v", err)
			}
			if err == nil {
				all := make([]byte, r.Size())
				if k, err := r.ReadAt(all, 0); k != len(all) || (err != nil && err != io.EOF) || !bytes.Equal(all, out.Bytes()) {
					t.Fatalf("ReadAt %d %v disagrees with WriteTo", k, err)
				}
			}
		}
		// Round trip with b as plaintext.
		var enc bytes.Buffer
		if err := Encrypt(&enc, bytes.NewReader(b), int64(len(b)), key, 2, mrand.NewChaCha8([32]byte{2})); err != nil {
			t.Fatal(err)
		}
		r2, err := NewReader(bytes.NewReader(enc.Bytes()), int64(enc.Len()), key, nil)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if _, err := r2.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), b) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
