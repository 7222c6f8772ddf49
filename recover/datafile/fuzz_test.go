package datafile

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// fuzzMaxPages caps the pages of a fuzzed container: a few pages reach
// every path (first, middle, last partial page) at thousands of inputs a
// second.
const fuzzMaxPages = 3

// Modes of FuzzReader (the mode argument).
const (
	fuzzIgnoreMAC = 1 << 0 // read with Options.IgnoreMAC
	fuzzKey64     = 1 << 1 // a 64-byte (XTS-sized) dataFileKey
	fuzzOtherKey  = 1 << 2 // read with a key other than the writer's
	fuzzRaw       = 1 << 3 // the file is fill as it is, no container built
	fuzzVersion2  = 1 << 4 // header version 2 (.vmem)
)

// FuzzReader builds a small valid container (header + up to three pages)
// around fuzzed plaintext, then changes it: patch triplets (big-endian u16,
// byte) XOR a byte of the header (offset with bit 15 set: header byte
// offset&63) or of the pages; cut truncates (< 0) or extends (> 0) the file.
// Keys are made once, outside the loop. Whatever the change:
//   - a failure returns no Reader and wraps ErrCorrupt or ErrUnsupported;
//   - an accepted header describes the file exactly (pages * 4096 + 4096);
//   - WriteTo and ReadAt agree, and give exactly what an independent
//     AES-CBC decryption of the pages gives, trimmed to logicalSize;
//   - with the MAC checked, accepted output is always the original
//     plaintext (zero padding at most past it): no change slips through,
//     and under another key nothing but an empty file is accepted;
//   - an unchanged file reads back the fuzzed plaintext exactly.
//
// fuzzRaw feeds the bytes as a whole file instead (header parsing of
// arbitrary data).
func FuzzReader(f *testing.F) {
	keys := [2][]byte{testKey(32), testKey(64)}
	other := [2][]byte{bytes.Repeat([]byte{7}, 32), bytes.Repeat([]byte{7}, 64)}
	f.Add(uint16(0), []byte{}, []byte{}, int16(0), uint8(0))
	f.Add(uint16(100), []byte("nvram"), []byte{}, int16(0), uint8(0))
	f.Add(uint16(DataPerPage), []byte{1, 2, 3}, []byte{}, int16(0), uint8(fuzzKey64|fuzzVersion2))
	f.Add(uint16(DataPerPage+1), []byte("x"), []byte{}, int16(0), uint8(fuzzIgnoreMAC))
	f.Add(uint16(9000), []byte("abc"), []byte{0x00, 0x07, 0x40}, int16(0), uint8(0))             // ciphertext byte
	f.Add(uint16(9000), []byte("abc"), []byte{0x10, 0x00, 0x01}, int16(0), uint8(fuzzIgnoreMAC)) // IV byte, MAC ignored
	f.Add(uint16(5000), []byte("abc"), []byte{0x80, 0x18, 0x08}, int16(0), uint8(0))             // logicalSize lowered into data
	f.Add(uint16(5000), []byte("abc"), []byte{0x80, 0x18, 0x40}, int16(0), uint8(0))             // logicalSize raised into padding
	f.Add(uint16(5000), []byte("abc"), []byte{0x80, 0x04, 0x03}, int16(0), uint8(0))             // version
	f.Add(uint16(5000), []byte("abc"), []byte{0x80, 0x30, 0x01}, int16(0), uint8(0))             // reserved byte
	f.Add(uint16(5000), []byte("abc"), []byte{}, int16(-1), uint8(0))                            // cut short
	f.Add(uint16(5000), []byte("abc"), []byte{}, int16(PageSize), uint8(0))                      // a page appended
	f.Add(uint16(5000), []byte("abc"), []byte{}, int16(0), uint8(fuzzOtherKey))                  // another key
	f.Add(uint16(5000), []byte("abc"), []byte{}, int16(0), uint8(fuzzOtherKey|fuzzIgnoreMAC))    //
	f.Add(uint16(0), []byte{0x9e, 0xdd, 0x43, 0x89}, []byte{}, int16(0), uint8(fuzzRaw))         // a bare magic
	f.Fuzz(func(t *testing.T, size uint16, fill, patch []byte, cut int16, mode uint8) {
		if len(fill) > HeaderSize+fuzzMaxPages*PageSize || len(patch) > 3*32 {
			return
		}
		ki := 0
		if mode&fuzzKey64 != 0 {
			ki = 1
		}
		wkey, rkey := keys[ki], keys[ki]
		if mode&fuzzOtherKey != 0 {
			rkey = other[ki]
		}
		var file, plain []byte
		changed := true
		if mode&fuzzRaw != 0 {
			file = fill
		} else {
			plain = make([]byte, int(size)%(fuzzMaxPages*DataPerPage+1))
			if len(fill) > 0 {
				for i := range plain {
					plain[i] = fill[i%len(fill)]
				}
			}
			version := uint32(1)
			if mode&fuzzVersion2 != 0 {
				version = 2
			}
			var buf bytes.Buffer
			if err := Encrypt(&buf, bytes.NewReader(plain), int64(len(plain)), wkey, version, mrand.NewChaCha8([32]byte{2})); err != nil {
				t.Fatal(err)
			}
			file, changed = changeFile(buf.Bytes(), patch, int(cut))
		}
		ignore := mode&fuzzIgnoreMAC != 0
		r, err := NewReader(bytes.NewReader(file), int64(len(file)), rkey, &Options{Name: "fuzz", IgnoreMAC: ignore})
		if err != nil {
			if r != nil {
				t.Fatal("partial Reader with an error")
			}
			if !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			if !changed && mode&fuzzOtherKey == 0 {
				t.Fatalf("unchanged file refused: %v", err)
			}
			return
		}
		h := r.Header()
		if r.Size() != h.LogicalSize || r.Size() < 0 || h.Pages()*PageSize+HeaderSize != int64(len(file)) {
			t.Fatalf("header %+v does not describe a %d-byte file", h, len(file))
		}
		var out bytes.Buffer
		n, err := r.WriteTo(&out)
		if err != nil {
			if !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatalf("WriteTo: unexpected error kind: %v", err)
			}
			if ignore {
				t.Fatalf("IgnoreMAC read failed: %v", err)
			}
			if !changed && mode&fuzzOtherKey == 0 {
				t.Fatalf("unchanged file does not read: %v", err)
			}
			return
		}
		got := out.Bytes()
		if n != r.Size() || int64(len(got)) != n {
			t.Fatalf("WriteTo wrote %d (%d) of %d", n, len(got), r.Size())
		}
		all := make([]byte, r.Size()+1)
		if k, err := r.ReadAt(all, 0); k != len(got) || err != io.EOF || !bytes.Equal(all[:k], got) {
			t.Fatalf("ReadAt %d %v disagrees with WriteTo", k, err)
		}
		if off := int64(cut) & 0x3fff; off < r.Size() {
			w := all[:min(int64(len(fill))+1, r.Size()-off)]
			if k, err := r.ReadAt(w, off); k != len(w) || (err != nil && err != io.EOF) || !bytes.Equal(w, got[off:off+int64(k)]) {
				t.Fatalf("ReadAt(%d bytes at %d): %d %v disagrees with WriteTo", len(w), off, k, err)
			}
		}
		if ref := refDecrypt(file, rkey); !bytes.Equal(got, ref[:len(got)]) {
			t.Fatal("output differs from an independent decryption of the pages")
		}
		if !ignore && !refMACsOK(file, rkey) {
			t.Fatal("accepted with a page whose MODEL MAC does not match")
		}
		if mode&fuzzRaw != 0 {
			return
		}
		if !ignore && mode&fuzzOtherKey != 0 && len(got) > 0 {
			t.Fatalf("%d bytes accepted under another key", len(got))
		}
		if !ignore && mode&fuzzOtherKey == 0 {
			padded := append(bytes.Clone(plain), make([]byte, DataPerPage)...)
			if len(got) > (len(plain)+DataPerPage-1)/DataPerPage*DataPerPage || !bytes.Equal(got, padded[:len(got)]) {
				t.Fatalf("accepted output of %d bytes is not the %d-byte plaintext", len(got), len(plain))
			}
			// A logicalSize lowered into the data of the pages the file
			// still holds is caught (pages cut off with it cannot be).
			if i := bytes.IndexFunc(padded[len(got):min(int(h.Pages()*DataPerPage), len(padded))], func(r rune) bool { return r != 0 }); i >= 0 {
				t.Fatalf("logicalSize %d accepted, though the pages hold data at %d", len(got), len(got)+i)
			}
		}
		if !changed && mode&fuzzOtherKey == 0 && !bytes.Equal(got, plain) {
			t.Fatal("unchanged file does not read back its plaintext")
		}
	})
}

// changeFile applies FuzzReader's patch triplets and cut to a copy of b
// and reports whether the result differs from b.
func changeFile(b, patch []byte, cut int) ([]byte, bool) {
	out := bytes.Clone(b)
	body := len(out) - HeaderSize
	for i := 0; i+3 <= len(patch); i += 3 {
		o := int(binary.BigEndian.Uint16(patch[i:]))
		switch {
		case o&0x8000 != 0:
			out[o&63] ^= patch[i+2]
		case body > 0:
			out[HeaderSize+o%body] ^= patch[i+2]
		}
	}
	switch {
	case cut < 0:
		out = out[:max(0, len(out)+cut)]
	case cut > 0:
		out = append(out, make([]byte, min(cut, fuzzMaxPages*PageSize))...)
	}
	return out, !bytes.Equal(out, b)
}

// refDecrypt decrypts every whole page of a container file with AES-CBC
// under key[:32] (docs/formats.md §9), written apart from the Reader: the
// Reader's output must be a prefix of it.
func refDecrypt(file, key []byte) []byte {
	blk, err := aes.NewCipher(key[:32])
	if err != nil {
		panic(err)
	}
	var out []byte
	for off := HeaderSize; off+PageSize <= len(file); off += PageSize {
		ct := bytes.Clone(file[off : off+DataPerPage])
		cipher.NewCBCDecrypter(blk, file[off+DataPerPage:off+DataPerPage+IVSize]).CryptBlocks(ct, ct)
		out = append(out, ct...)
	}
	return out
}

// refMACsOK checks the MODEL MAC of every page: the first 16 bytes of
// HMAC-SHA256(key, u64 pageIndex || IV || ciphertext).
func refMACsOK(file, key []byte) bool {
	for pg, off := 0, HeaderSize; off+PageSize <= len(file); pg, off = pg+1, off+PageSize {
		m := hmac.New(sha256.New, key)
		m.Write(binary.LittleEndian.AppendUint64(nil, uint64(pg)))
		m.Write(file[off+DataPerPage : off+DataPerPage+IVSize])
		m.Write(file[off : off+DataPerPage])
		if !hmac.Equal(m.Sum(nil)[:MACSize], file[off+DataPerPage+IVSize:off+PageSize]) {
			return false
		}
	}
	return true
}
