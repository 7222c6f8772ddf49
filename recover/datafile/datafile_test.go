package datafile

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

func testKey(n int) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = byte(0x80 + i)
	}
	return k
}

func plain(n int) []byte {
	b := make([]byte, n)
	r := mrand.New(mrand.NewPCG(1, uint64(n)))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func encrypt(t testing.TB, p, key []byte, version uint32) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Encrypt(&buf, bytes.NewReader(p), int64(len(p)), key, version, rand.Reader); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	for _, keyLen := range []int{32, 64} {
		for _, n := range []int{0, 1, 4063, 4064, 4065, 3*4064 + 17, 200 * 4064} {
			p := plain(n)
			key := testKey(keyLen)
			f := encrypt(t, p, key, 2)
			if want := HeaderSize + (n+DataPerPage-1)/DataPerPage*PageSize; len(f) != want {
				t.Fatalf("n=%d: file is %d bytes, want %d", n, len(f), want)
			}
			r, err := NewReader(bytes.NewReader(f), int64(len(f)), key, &Options{Name: "vm.vmem"})
			if err != nil {
				t.Fatalf("n=%d: %v", n, err)
			}
			if r.Size() != int64(n) || r.Header().Version != 2 {
				t.Fatalf("header %+v", r.Header())
			}
			// Sequential.
			var out bytes.Buffer
			if _, err := r.WriteTo(&out); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), p) {
				t.Fatalf("n=%d keyLen=%d: WriteTo differs", n, keyLen)
			}
			// io.ReaderAt contract (iotest reads at odd offsets, checks EOF).
			if n > 4*4064 {
				// iotest reads byte by byte: keep it to small files.
			} else if err := iotest.TestReader(io.NewSectionReader(r, 0, r.Size()), p); err != nil {
				t.Fatalf("n=%d: %v", n, err)
			}
			// Reads crossing page boundaries.
			if n > 5000 {
				got := make([]byte, 5000)
				if _, err := r.ReadAt(got, 4000); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, p[4000:9000]) {
					t.Fatal("cross-page ReadAt differs")
				}
			}
			// ReadAt past the end: short read with io.EOF.
			tail := make([]byte, 10)
			k, err := r.ReadAt(tail, int64(n)-3)
			if n >= 3 && (k != 3 || err != io.EOF) {
				t.Fatalf("tail read: %d %v", k, err)
			}
		}
	}
}

// Concurrent ReadAt from many goroutines (run with -race).
func TestConcurrentReadAt(t *testing.T) {
	p := plain(64 * 4064)
	key := testKey(32)
	f := encrypt(t, p, key, 1)
	r, err := NewReader(bytes.NewReader(f), int64(len(f)), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func(g int) {
			buf := make([]byte, 777)
			for off := int64(g * 13); off+777 <= int64(len(p)); off += 5003 {
				if _, err := r.ReadAt(buf, off); err != nil {
					done <- err
					return
				}
				if !bytes.Equal(buf, p[off:off+777]) {
					done <- errors.New("mismatch")
					return
				}
			}
			done <- nil
		}(g)
	}
	for i := 0; i < 8; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// Every flipped byte of a page (ciphertext, IV or MAC) is caught by the
// MODEL MAC as corruption — not a wrong key — naming the page; IgnoreMAC
// reads past it.
func TestFlippedByte(t *testing.T) {
	p := plain(3 * 4064)
	key := testKey(64)
	for _, at := range []int{HeaderSize, HeaderSize + 100, HeaderSize + PageSize + DataPerPage, HeaderSize + 2*PageSize + DataPerPage + IVSize + 15} {
		f := encrypt(t, p, key, 1)
		f[at] ^= 1
		// The MAC rule probes the pages when the reader is made: the
		// flipped page is found there (a large file: when it is read).
		r, err := NewReader(bytes.NewReader(f), int64(len(f)), key, &Options{Name: "vm.nvram"})
		if err == nil {
			_, err = r.WriteTo(io.Discard)
		}
		if !errors.Is(err, keysafe.ErrCorrupt) || errors.Is(err, keysafe.ErrWrongKey) {
			t.Fatalf("flip at %d: WriteTo err %v, want ErrCorrupt", at, err)
		}
		var de *Error
		pg := int64(at-HeaderSize) / PageSize
		if !errors.As(err, &de) || de.File != "vm.nvram" || de.Offset != HeaderSize+pg*PageSize+DataPerPage+IVSize {
			t.Fatalf("flip at %d: error %#v does not name the file and page %d", at, err, pg)
		}
		if !errors.Is(err, ErrMACMismatch) {
			t.Fatalf("flip at %d: %v, want ErrMACMismatch", at, err)
		}
		// IgnoreMAC: reads; only a MAC flip leaves the plaintext intact.
		r2, _ := NewReader(bytes.NewReader(f), int64(len(f)), key, &Options{IgnoreMAC: true})
		var out bytes.Buffer
		if _, err := r2.WriteTo(&out); err != nil {
			t.Fatalf("IgnoreMAC: %v", err)
		}
		intact := (at-HeaderSize)%PageSize >= DataPerPage+IVSize
		if bytes.Equal(out.Bytes(), p) != intact {
			t.Fatalf("flip at %d: IgnoreMAC output equal=%v, want %v", at, !intact, intact)
		}
	}
}

// A key other than the file's matches no page's MAC: to the MAC rule that
// is an unknown scheme, so what remains catches it: the zero padding after
// logicalSize, the plaintext's magic (CheckPlain), StrictMAC. (The key
// that opened the VMX was proven right by encryption.data's MAC, so this
// is damage, never a wrong key.)
func TestOtherKeyIsCorrupt(t *testing.T) {
	f := encrypt(t, plain(5000), testKey(32), 1)
	other := testKey(32)
	other[0] ^= 1
	if _, err := NewReader(bytes.NewReader(f), int64(len(f)), other, nil); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("padding: err %v", err)
	}
	whole := encrypt(t, plain(2*4064), testKey(32), 1)
	magic := func(b []byte) error {
		if !bytes.HasPrefix(b, plain(4)) {
			return errors.New("no magic")
		}
		return nil
	}
	if _, err := NewReader(bytes.NewReader(whole), int64(len(whole)), other, &Options{CheckPlain: magic}); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("magic: err %v", err)
	}
	if _, err := NewReader(bytes.NewReader(whole), int64(len(whole)), other, &Options{StrictMAC: true}); !errors.Is(err, ErrMACUnknown) || !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("strict: err %v", err)
	}
	if _, err := NewReader(bytes.NewReader(f), int64(len(f)), other[:31], nil); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("31-byte key: %v", err)
	}
}

// The all-or-nothing rule of docs/formats.md §9: random MACs (a real
// VMware file) decrypt exactly, "not checked"; half model and half random
// is damaged, naming the first bad page; StrictMAC refuses the unknown
// scheme; the model file is "verified".
func TestMACRule(t *testing.T) {
	key := testKey(64)
	p := plain(20 * DataPerPage)
	enc := func(unknown bool) []byte {
		var b bytes.Buffer
		if err := EncryptWith(&b, bytes.NewReader(p), int64(len(p)), key, 1, rand.Reader, &EncryptOptions{UnknownMAC: unknown}); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	model, unknown := enc(false), enc(true)
	for _, c := range []struct {
		name string
		f    []byte
		want string
	}{{"model", model, MACModel}, {"unknown", unknown, MACUnknown}} {
		r, err := NewReader(bytes.NewReader(c.f), int64(len(c.f)), key, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var out bytes.Buffer
		if _, err := r.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), p) || r.MACStatus() != c.want {
			t.Fatalf("%s: %v equal=%v status %q", c.name, err, bytes.Equal(out.Bytes(), p), r.MACStatus())
		}
	}
	if _, err := NewReader(bytes.NewReader(unknown), int64(len(unknown)), key, &Options{StrictMAC: true}); !errors.Is(err, ErrMACUnknown) {
		t.Fatalf("strict: %v", err)
	}
	// Mixed: pages 0-9 model, 10-19 random. Found when the reader is
	// made (the probe spans the file), or at the first bad page read.
	mixed := append([]byte(nil), model...)
	copy(mixed[HeaderSize+10*PageSize:], unknown[HeaderSize+10*PageSize:])
	r, err := NewReader(bytes.NewReader(mixed), int64(len(mixed)), key, &Options{Name: "m.vmsn"})
	if err == nil {
		_, err = r.WriteTo(io.Discard)
	}
	var de *Error
	if !errors.Is(err, ErrMACMismatch) || !errors.As(err, &de) || de.Offset != HeaderSize+10*PageSize+DataPerPage+IVSize {
		t.Fatalf("mixed: %v", err)
	}
	// Mixed the other way round, with one model page hidden between
	// probed pages: found when that page is read.
	mixed2 := append([]byte(nil), unknown...)
	copy(mixed2[HeaderSize+6*PageSize:HeaderSize+7*PageSize], model[HeaderSize+6*PageSize:])
	r, err = NewReader(bytes.NewReader(mixed2), int64(len(mixed2)), key, nil)
	if err == nil {
		_, err = r.WriteTo(io.Discard)
	}
	if !errors.As(err, &de) || !errors.Is(err, ErrMACMismatch) || de.Offset != HeaderSize+6*PageSize+DataPerPage+IVSize {
		t.Fatalf("hidden model page: %v", err)
	}
}

func TestHeaderChecks(t *testing.T) {
	key := testKey(32)
	good := encrypt(t, plain(3*4064), key, 1)
	set32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b }
	}
	cases := []struct {
		name string
		mod  func([]byte) []byte
		want error
	}{
		{"magic", set32(0, 0x8943dd9f), keysafe.ErrCorrupt},
		{"version 0", set32(4, 0), keysafe.ErrUnsupported},
		{"version 3", set32(4, 3), keysafe.ErrUnsupported},
		{"dataPerPage", set32(8, 4096), keysafe.ErrUnsupported},
		{"ivSize", set32(12, 12), keysafe.ErrUnsupported},
		{"macSize", set32(16, 32), keysafe.ErrUnsupported},
		{"reserved 0x14", set32(0x14, 1), keysafe.ErrUnsupported},
		{"reserved tail", func(b []byte) []byte { b[4095] = 1; return b }, keysafe.ErrUnsupported},
		{"logicalSize too big", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[0x18:], 3*4064+1); return b }, keysafe.ErrCorrupt},
		{"logicalSize huge", func(b []byte) []byte { binary.LittleEndian.PutUint64(b[0x18:], 1<<63); return b }, keysafe.ErrCorrupt},
		{"truncated page", func(b []byte) []byte { return b[:len(b)-1] }, keysafe.ErrCorrupt},
		{"truncated header", func(b []byte) []byte { return b[:4095] }, keysafe.ErrCorrupt},
	}
	for _, c := range cases {
		f := c.mod(append([]byte(nil), good...))
		_, err := NewReader(bytes.NewReader(f), int64(len(f)), key, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
	}
	// The header is outside the MODEL MAC, so a changed logicalSize must
	// not pass: fewer pages than the file holds, a cut inside the data of
	// the last page, or a page appended are all corrupt, never a shorter
	// or longer plaintext with success.
	odd := encrypt(t, plain(2*4064+100), key, 1)
	for _, c := range []struct {
		name string
		f    []byte
		ls   uint64
	}{
		{"whole pages dropped", good, 4064},
		{"cut inside the last page's data", odd, 2*4064 + 50},
		{"cut to the last page's start", odd, 2 * 4064},
		{"a page appended", append(append([]byte(nil), good...), make([]byte, PageSize)...), 3 * 4064},
	} {
		f := append([]byte(nil), c.f...)
		binary.LittleEndian.PutUint64(f[0x18:], c.ls)
		if _, err := NewReader(bytes.NewReader(f), int64(len(f)), key, nil); !errors.Is(err, keysafe.ErrCorrupt) || !strings.Contains(err.Error(), "logicalSize") {
			t.Errorf("%s: %v, want a corrupt logicalSize", c.name, err)
		}
	}
}

// A decrypted .vmsn starts with d2 be d2 be (docs/formats.md §9): the round trip
// keeps it.
func TestVMSNMagicKept(t *testing.T) {
	p := append([]byte{0xd2, 0xbe, 0xd2, 0xbe}, plain(10000)...)
	key := testKey(32)
	f := encrypt(t, p, key, 1)
	if bytes.Contains(f, p[:64]) {
		t.Fatal("plaintext visible in the container")
	}
	r, _ := NewReader(bytes.NewReader(f), int64(len(f)), key, nil)
	h := sha256.New()
	if _, err := r.WriteTo(h); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.Sum(nil), sha256Sum(p)) {
		t.Fatal("sha256 differs")
	}
	if !IsDataFile(f) || IsDataFile(p) {
		t.Fatal("IsDataFile")
	}
}

func sha256Sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

func BenchmarkWriteTo(b *testing.B) {
	p := plain(16 << 20)
	key := testKey(32)
	f := encrypt(b, p, key, 2)
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		r, _ := NewReader(bytes.NewReader(f), int64(len(f)), key, nil)
		if _, err := r.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
