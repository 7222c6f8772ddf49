package esxi

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The real vector (testdata/SOURCES.md).
const (
	realKeyID      = "7e62cec5-6aef-4d7e-838b-cae32eefd251"
	realKeyHex     = "ae29634dca8627013f7c7cf2d05b4d5cc444d42cd4e8acbaa4fb815dda3b3066"
	realPlainSize  = 94293
	realPlainSHA   = "fe131620351b9fd5fc4aef219bf3211340f3742464c038e1695e7b6667f86952"
	realEnvelope   = "testdata/local.tgz.ve"
	realKeyStore   = "testdata/encryption.info"
	realVMTar      = "testdata/test.vgz"
	testContextCfg = ContextConfiguration
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func realKey(t testing.TB) []byte {
	k, _ := hex.DecodeString(realKeyHex)
	return k
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// fieldOf returns the field of a *FormatError in err's chain ("" if none).
func fieldOf(err error) string {
	var fe *FormatError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

func parseBytes(t testing.TB, b []byte) (*Envelope, error) {
	t.Helper()
	return Parse("test.ve", bytes.NewReader(b), int64(len(b)))
}

// TestRealVectorDecrypts: the key store yields the documented key and id,
// the envelope names that id, and it decrypts (context found by itself)
// to exactly 94293 bytes with the documented sha256; crypto/cipher's GCM
// opening the whole vector agrees.
func TestRealVectorDecrypts(t *testing.T) {
	ks, err := ParseKeyStore(realKeyStore, readTestdata(t, realKeyStore))
	if err != nil {
		t.Fatal(err)
	}
	if ks.Mode != ModeNone || ks.Sealed() || ks.IncludeKeyCache || !ks.IncludeKeyCacheSet || ks.KeyID != realKeyID || ks.Version != "1" {
		t.Fatalf("key store: %+v", ks)
	}
	key, err := ks.Key()
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(key) != realKeyHex {
		t.Fatalf("key %x, want %s", key, realKeyHex)
	}
	raw := readTestdata(t, realEnvelope)
	e, err := parseBytes(t, raw)
	if err != nil {
		t.Fatal(err)
	}
	if e.KeyID != realKeyID || e.CipherName != CipherAES256GCM || string(e.IV) != string(DefaultIV) || e.HeaderSize != 3584 || e.DataSize != int64(len(raw))-2*BlockSize {
		t.Fatalf("envelope: %+v", e)
	}
	var out bytes.Buffer
	res, err := e.Decrypt(key, &out, DecryptOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Context != ContextConfiguration || res.PayloadSize != realPlainSize || out.Len() != realPlainSize || sha(out.Bytes()) != realPlainSHA {
		t.Fatalf("decrypted %d bytes (context %q), sha256 %s", out.Len(), res.Context, sha(out.Bytes()))
	}
	// Independent: crypto/cipher over the whole message.
	block, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(block)
	ct := append(append([]byte(nil), raw[BlockSize:len(raw)-BlockSize]...), raw[len(raw)-BlockSize+footTagOff:len(raw)-BlockSize+footTagOff+16]...)
	pt, err := g.Open(nil, e.IV, ct, append(append([]byte(nil), raw[:BlockSize]...), ContextConfiguration...))
	if err != nil {
		t.Fatal(err)
	}
	pad := binary.LittleEndian.Uint32(pt[len(pt)-512+0x1f8:])
	if !bytes.Equal(pt[:len(pt)-BlockSize-int(pad)], out.Bytes()) {
		t.Fatal("stream plaintext differs from crypto/cipher's")
	}
	if ctx, err := e.Verify(key, DecryptOptions{}); err != nil || ctx != ContextConfiguration {
		t.Fatalf("Verify: %q, %v", ctx, err)
	}
}

// TestRealVectorNegatives: a wrong key is ErrWrongKey before any output;
// a flipped ciphertext, header or tag byte, and the wrong context, are
// ErrCorrupt at the tag, with no plaintext accepted.
func TestRealVectorNegatives(t *testing.T) {
	raw := readTestdata(t, realEnvelope)
	key := realKey(t)
	e, _ := parseBytes(t, raw)
	var out bytes.Buffer
	wrong := append([]byte(nil), key...)
	wrong[0] ^= 1
	if _, err := e.Decrypt(wrong, &out, DecryptOptions{}); !errors.Is(err, keysafe.ErrWrongKey) || out.Len() != 0 {
		t.Fatalf("wrong key: %v, %d bytes out", err, out.Len())
	}
	if _, err := e.Decrypt(key, nil, DecryptOptions{Contexts: []string{""}}); !errors.Is(err, keysafe.ErrCorrupt) || fieldOf(err) != "GCM tag" {
		t.Fatalf("wrong context: %v", err)
	}
	for _, off := range []int{BlockSize, BlockSize + 5000, len(raw) - BlockSize - 1, 0x218 /* IV byte */, 0x300 /* header zeros */, len(raw) - BlockSize + footTagOff} {
		b := append([]byte(nil), raw...)
		b[off] ^= 0x40
		e, err := parseBytes(t, b)
		if err != nil {
			t.Fatalf("flip at %d: parse: %v", off, err)
		}
		if _, err := e.Decrypt(key, nil, DecryptOptions{}); !errors.Is(err, keysafe.ErrCorrupt) || fieldOf(err) != "GCM tag" {
			t.Fatalf("flip at %d: %v", off, err)
		}
	}
	// Truncated: a missing footer block, or a partial one.
	for _, n := range []int{len(raw) - BlockSize, len(raw) - 1, 2 * BlockSize, 100} {
		if _, err := parseBytes(t, raw[:n]); !errors.Is(err, keysafe.ErrCorrupt) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

// sealRaw builds an envelope with crypto/cipher's GCM (independent of
// Writer): header blocks, AES-256-GCM of plain (which must already end
// with its crypto footer block), AEAD footer.
func sealRaw(t testing.TB, key []byte, header []byte, context string, plain []byte) []byte {
	t.Helper()
	attrs, _, err := ParseAttributes("", header[attrStart:], attrStart)
	if err != nil {
		t.Fatal(err)
	}
	iv := DefaultIV
	for _, a := range attrs {
		if a.Name == AttrIV && len(a.Value) == 12 {
			iv = a.Value
		}
	}
	block, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(block)
	sealed := g.Seal(nil, iv, plain, append(append([]byte(nil), header...), context...))
	out := append(append([]byte(nil), header...), sealed[:len(plain)]...)
	foot := make([]byte, BlockSize)
	copy(foot, aeadFooterMagic)
	copy(foot[footTagOff:], sealed[len(plain):])
	binary.LittleEndian.PutUint32(foot[footTagSizeOff:], 16)
	binary.LittleEndian.PutUint32(foot[footVersionOff:], 1)
	return append(out, foot...)
}

// plainWithFooter is payload, padding to whole blocks, and a crypto footer
// block.
func plainWithFooter(payload []byte, version uint32, padDelta int) []byte {
	pad := (BlockSize - len(payload)%BlockSize) % BlockSize
	p := append(append([]byte(nil), payload...), make([]byte, pad+BlockSize)...)
	f := p[len(p)-512:]
	copy(f, cryptoFooterMagic)
	binary.LittleEndian.PutUint32(f[0x1f8:], uint32(pad+padDelta))
	binary.LittleEndian.PutUint32(f[0x1fc:], version)
	return p
}

func testKey() []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i*13 + 1)
	}
	return k
}

func stdAttrs(key []byte) []Attribute {
	return []Attribute{
		{Type: AttrBytes, Name: AttrIV, Value: DefaultIV},
		{Type: AttrString, Name: AttrKeyInfo, Value: []byte("11111111-2222-3333-4444-555555555555")},
		{Type: AttrString, Name: AttrCipherName, Value: []byte(CipherAES256GCM)},
		{Type: AttrBytes, Name: AttrKeyHash, Value: KeyHash(CipherAES256GCM, key)},
	}
}

// TestWriterRoundTrip: envelopes made by Writer open with the same reader
// as the real one, and with crypto/cipher's GCM independently, for many
// payload sizes; the header re-parses to the attributes written.
func TestWriterRoundTrip(t *testing.T) {
	key := testKey()
	for _, n := range []int{0, 1, 511, 4095, 4096, 4097, 3*4096 + 17, streamChunk - 1, streamChunk + 4096*3 + 5} {
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i*31 + n)
		}
		var env bytes.Buffer
		w, err := NewWriter(&env, key, WriterOptions{KeyID: "core-key", Context: "ctx"})
		if err != nil {
			t.Fatal(err)
		}
		// Uneven writes.
		for p := payload; len(p) > 0; {
			k := min(len(p), 1000+len(p)%777)
			if _, err := w.Write(p[:k]); err != nil {
				t.Fatal(err)
			}
			p = p[k:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		raw := env.Bytes()
		e, err := parseBytes(t, raw)
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		var out bytes.Buffer
		res, err := e.Decrypt(key, &out, DecryptOptions{Contexts: []string{"other", "ctx"}})
		if err != nil || res.Context != "ctx" || !bytes.Equal(out.Bytes(), payload) {
			t.Fatalf("size %d: %v, context %v, equal %v", n, err, res, bytes.Equal(out.Bytes(), payload))
		}
		block, _ := aes.NewCipher(key)
		g, _ := cipher.NewGCM(block)
		ct := append(append([]byte(nil), raw[BlockSize:len(raw)-BlockSize]...), e.Tag...)
		pt, err := g.Open(nil, e.IV, ct, append(append([]byte(nil), raw[:BlockSize]...), "ctx"...))
		if err != nil || !bytes.Equal(pt[:n], payload) {
			t.Fatalf("size %d: crypto/cipher does not open the writer's envelope: %v", n, err)
		}
	}
}

// TestBadEnvelopes: every header field out of range, attributes past the
// block, a missing required attribute, an unknown cipher, bad footers:
// each refused with its sentinel and the field named.
func TestBadEnvelopes(t *testing.T) {
	key := testKey()
	plain := plainWithFooter([]byte("payload"), CryptoFooterVersion, 0)
	hdr := func(attrs []Attribute) []byte {
		h, err := MarshalHeader(attrs)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	good := sealRaw(t, key, hdr(stdAttrs(key)), "", plain)
	if e, err := parseBytes(t, good); err != nil {
		t.Fatal(err)
	} else if _, err := e.Decrypt(key, nil, DecryptOptions{}); err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	put32 := func(off int, v uint32) []byte {
		return mut(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b })
	}
	without := func(name string) []byte {
		var a []Attribute
		for _, x := range stdAttrs(key) {
			if x.Name != name {
				a = append(a, x)
			}
		}
		return sealRaw(t, key, hdr(a), "", plain)
	}
	with := func(name string, typ AttrType, v []byte) []byte {
		a := stdAttrs(key)
		for i := range a {
			if a[i].Name == name {
				a[i].Type, a[i].Value = typ, v
			}
		}
		return sealRaw(t, key, hdr(a), "", plain)
	}
	// An attribute list with no terminator: a string value filling the block.
	past := mut(func(b []byte) []byte {
		for i := attrStart; i < BlockSize; i++ {
			b[i] = 'x'
		}
		copy(b[attrStart:], []byte{byte(AttrString), 0, 0, 0, 'n', 0})
		return b
	})
	// A bytes attribute that ends exactly at the block's end: no room for
	// the terminator.
	noEnd := mut(func(b []byte) []byte {
		a := MarshalAttributes([]Attribute{{Type: AttrBytes, Name: "n", Value: make([]byte, BlockSize-attrStart-4-2-8)}})
		copy(b[attrStart:], a[:len(a)-4])
		return b
	})
	bytesPast := mut(func(b []byte) []byte {
		// vmware.iv's length (at 0x20e) says 4000 bytes.
		binary.LittleEndian.PutUint64(b[attrStart+4+len(AttrIV)+1:], 4000)
		return b
	})
	cases := []struct {
		name  string
		b     []byte
		want  error
		field string
	}{
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), keysafe.ErrCorrupt, "magic"},
		{"version 3", put32(hdrVersionOff, 3), keysafe.ErrUnsupported, "header version"},
		{"version 0", put32(hdrVersionOff, 0), keysafe.ErrUnsupported, "header version"},
		{"header size not blocks", put32(hdrSizeOff, 100), keysafe.ErrCorrupt, "header size"},
		{"header size 0", put32(hdrSizeOff, 0), keysafe.ErrCorrupt, "header size"},
		{"header size huge", put32(hdrSizeOff, 0xfffffe00), keysafe.ErrUnsupported, "header size"},
		{"header past the end", put32(hdrSizeOff, 3584+2*4096), keysafe.ErrCorrupt, "header size"},
		{"string attribute past the block", past, keysafe.ErrCorrupt, "attribute n"},
		{"no terminator", noEnd, keysafe.ErrCorrupt, "attributes"},
		{"bytes attribute past the block", bytesPast, keysafe.ErrCorrupt, "attribute vmware.iv"},
		{"unknown attribute type", mut(func(b []byte) []byte { b[attrStart] = 0x0d; return b }), keysafe.ErrUnsupported, "attribute type"},
		{"reserved field", mut(func(b []byte) []byte { b[attrStart+2] = 1; return b }), keysafe.ErrCorrupt, "attribute reserved field"},
		{"missing keyInfo", without(AttrKeyInfo), keysafe.ErrCorrupt, "attribute " + AttrKeyInfo},
		{"missing cipherName", without(AttrCipherName), keysafe.ErrCorrupt, "attribute " + AttrCipherName},
		{"missing keyHash", without(AttrKeyHash), keysafe.ErrCorrupt, "attribute " + AttrKeyHash},
		{"missing iv", without(AttrIV), keysafe.ErrCorrupt, "attribute " + AttrIV},
		{"keyInfo as bytes", with(AttrKeyInfo, AttrBytes, []byte("id")), keysafe.ErrCorrupt, "attribute " + AttrKeyInfo},
		{"empty keyInfo", with(AttrKeyInfo, AttrString, nil), keysafe.ErrCorrupt, "attribute " + AttrKeyInfo},
		{"unknown cipher", with(AttrCipherName, AttrString, []byte("AES-256-XTS")), keysafe.ErrUnsupported, "attribute " + AttrCipherName},
		{"short keyHash", with(AttrKeyHash, AttrBytes, make([]byte, 20)), keysafe.ErrCorrupt, "attribute " + AttrKeyHash},
		{"8-byte iv", with(AttrIV, AttrBytes, make([]byte, 8)), keysafe.ErrCorrupt, "attribute " + AttrIV},
		{"footer magic", mut(func(b []byte) []byte { b[len(b)-BlockSize] = 'x'; return b }), keysafe.ErrCorrupt, "AEAD footer"},
		{"footer version", put32(len(good)-BlockSize+footVersionOff, 2), keysafe.ErrUnsupported, "AEAD footer version"},
		{"tag size 12", put32(len(good)-BlockSize+footTagSizeOff, 12), keysafe.ErrUnsupported, "AEAD footer tag size"},
		{"tag size 0", put32(len(good)-BlockSize+footTagSizeOff, 0), keysafe.ErrCorrupt, "AEAD footer tag size"},
		{"tag size huge", put32(len(good)-BlockSize+footTagSizeOff, 5000), keysafe.ErrCorrupt, "AEAD footer tag size"},
		{"not whole blocks", good[:len(good)-10], keysafe.ErrCorrupt, "size"},
		{"truncated footer", good[:len(good)-BlockSize], keysafe.ErrCorrupt, "AEAD footer"},
		{"no data", append(append([]byte(nil), good[:BlockSize]...), good[len(good)-2*BlockSize:len(good)-BlockSize]...), keysafe.ErrCorrupt, "size"},
	}
	for _, c := range cases {
		_, err := parseBytes(t, c.b)
		if !errors.Is(err, c.want) || fieldOf(err) != c.field {
			t.Errorf("%s: got %v (field %q), want %v at %q", c.name, err, fieldOf(err), c.want, c.field)
		}
	}
	// Crypto footer problems show after the tag verifies.
	for _, c := range []struct {
		name  string
		plain []byte
		want  error
		field string
	}{
		{"crypto footer version", plainWithFooter([]byte("p"), 1, 0), keysafe.ErrUnsupported, "crypto footer version"},
		{"crypto footer padding", plainWithFooter([]byte("p"), CryptoFooterVersion, 4096), keysafe.ErrCorrupt, "crypto footer padding"},
		{"crypto footer magic", make([]byte, 2*BlockSize), keysafe.ErrCorrupt, "crypto footer"},
	} {
		e, err := parseBytes(t, sealRaw(t, key, hdr(stdAttrs(key)), "", c.plain))
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		_, err = e.Decrypt(key, &out, DecryptOptions{})
		if !errors.Is(err, c.want) || fieldOf(err) != c.field || out.Len() != 0 {
			t.Errorf("%s: got %v (field %q, %d bytes out), want %v at %q", c.name, err, fieldOf(err), out.Len(), c.want, c.field)
		}
	}
}

// TestAttributesRoundTrip: parsing the real header's attributes and
// writing them back gives the stored bytes; every type's size is honoured.
func TestAttributesRoundTrip(t *testing.T) {
	raw := readTestdata(t, realEnvelope)
	attrs, n, err := ParseAttributes("x", raw[attrStart:BlockSize], attrStart)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(MarshalAttributes(attrs), raw[attrStart:attrStart+n]) {
		t.Fatal("attributes do not re-serialise byte for byte")
	}
	if len(attrs) != 4 || attrs[0].Name != AttrIV || attrs[1].Text() != realKeyID {
		t.Fatalf("attributes %+v", attrs)
	}
	var all []Attribute
	for ty := AttrUint8; ty <= AttrFloat64; ty++ {
		all = append(all, Attribute{Type: ty, Name: "n" + ty.String(), Value: bytes.Repeat([]byte{0xff}, fixedSize[ty])})
	}
	b := MarshalAttributes(all)
	got, m, err := ParseAttributes("x", append(b, 1, 2, 3), 0)
	if err != nil || m != len(b) || len(got) != len(all) || got[3].Text() != "18446744073709551615" || got[7].Text() != "-1" {
		t.Fatalf("fixed types: %v %d %+v", err, m, got)
	}
}

// TestFindEnd: an envelope inside a larger file is found by its footer;
// one without a footer is corrupt.
func TestFindEnd(t *testing.T) {
	raw := readTestdata(t, realEnvelope)
	img := append(append(make([]byte, 3*BlockSize), raw...), make([]byte, 5*BlockSize)...)
	n, err := FindEnd("img", bytes.NewReader(img), 3*BlockSize, int64(len(img)))
	if err != nil || n != int64(len(raw)) {
		t.Fatalf("FindEnd: %d %v", n, err)
	}
	e, err := ParseAt("img", bytes.NewReader(img), 3*BlockSize, n)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := e.Decrypt(realKey(t), &out, DecryptOptions{}); err != nil || sha(out.Bytes()) != realPlainSHA {
		t.Fatalf("decrypt at an offset: %v", err)
	}
	cut := img[:3*BlockSize+len(raw)-BlockSize]
	if _, err := FindEnd("img", bytes.NewReader(cut), 3*BlockSize, int64(len(cut))); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("no footer: %v", err)
	}
	if _, err := FindEnd("img", bytes.NewReader(img), 100, int64(len(img))); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("wrong offset: %v", err)
	}
}

// TestDecryptBoundedMemory: decrypting allocates the same (about one
// chunk) for an 8 MiB and a 48 MiB envelope: memory does not grow with
// the input.
func TestDecryptBoundedMemory(t *testing.T) {
	alloc := func(size int) uint64 {
		p := filepath.Join(t.TempDir(), "dump.ve")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w, err := NewWriter(f, testKey(), WriterOptions{KeyID: "k"})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(make([]byte, size))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		e, err := Parse(p, f, st.Size())
		if err != nil {
			t.Fatal(err)
		}
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		res, err := e.Decrypt(testKey(), io.Discard, DecryptOptions{})
		runtime.ReadMemStats(&m1)
		f.Close()
		if err != nil || res.PayloadSize != int64(size) {
			t.Fatalf("%v %v", res, err)
		}
		return m1.TotalAlloc - m0.TotalAlloc
	}
	small, large := alloc(8<<20), alloc(48<<20)
	if large > 2*streamChunk || large > small+64<<10 {
		t.Fatalf("decrypting 8 MiB allocated %d bytes, 48 MiB %d", small, large)
	}
}
