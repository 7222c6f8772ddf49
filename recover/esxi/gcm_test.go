package esxi

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"math/rand/v2"
	"testing"
)

// sealStream encrypts pt with the stream in chunks of chunk bytes and
// returns ciphertext || tag, as crypto/cipher's Seal does.
func sealStream(t *testing.T, key, iv, pt, aad []byte, chunk int) []byte {
	t.Helper()
	s, err := newGCMStream(key, iv, chunk)
	if err != nil {
		t.Fatal(err)
	}
	ct := append([]byte(nil), pt...)
	for off := 0; off < len(ct); off += chunk {
		c := ct[off:min(off+chunk, len(ct))]
		s.xor(c)
		if err := s.hash(c); err != nil {
			t.Fatal(err)
		}
	}
	tag := s.tag(aad)
	return append(ct, tag[:]...)
}

// openStream decrypts ciphertext || tag with the stream; ok reports the tag.
func openStream(t *testing.T, key, iv, sealed, aad []byte, chunk int) ([]byte, bool) {
	t.Helper()
	s, err := newGCMStream(key, iv, chunk)
	if err != nil {
		t.Fatal(err)
	}
	ct, tag := sealed[:len(sealed)-gcmTagSize], sealed[len(sealed)-gcmTagSize:]
	pt := append([]byte(nil), ct...)
	for off := 0; off < len(pt); off += chunk {
		c := pt[off:min(off+chunk, len(pt))]
		if err := s.hash(c); err != nil {
			t.Fatal(err)
		}
		s.xor(c)
	}
	return pt, s.matchTag(tag, []byte("wrong context"), aad) == 1
}

// TestStreamEqualsCryptoCipherGCM: on random keys, IVs, messages of many
// sizes (0 to 5000 bytes, and around chunk boundaries), chunkings and
// additional data, the stream's ciphertext and tag equal crypto/cipher's
// Seal, and it opens what Seal made (and refuses a flipped byte).
func TestStreamEqualsCryptoCipherGCM(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rnd := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	sizes := []int{0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255, 256, 257, 4095, 4096, 4097, 5000}
	for range 200 {
		sizes = append(sizes, rng.IntN(5000))
	}
	chunks := []int{16, 32, 48, 64, 256, 4096, streamChunk}
	for i, n := range sizes {
		key, iv := rnd(32), rnd(12)
		pt := rnd(n)
		aad := rnd([]int{0, 1, 16, 17, 4096, 4112, 4113}[i%7])
		block, _ := aes.NewCipher(key)
		g, _ := cipher.NewGCM(block)
		want := g.Seal(nil, iv, pt, aad)
		chunk := chunks[i%len(chunks)]
		got := sealStream(t, key, iv, pt, aad, chunk)
		if !bytes.Equal(got, want) {
			t.Fatalf("size %d, aad %d, chunk %d: stream seal differs from crypto/cipher GCM", n, len(aad), chunk)
		}
		back, ok := openStream(t, key, iv, want, aad, chunk)
		if !ok || !bytes.Equal(back, pt) {
			t.Fatalf("size %d, chunk %d: stream does not open crypto/cipher's ciphertext", n, chunk)
		}
		bad := append([]byte(nil), want...)
		bad[rng.IntN(len(bad))] ^= 1 << rng.IntN(8)
		if _, ok := openStream(t, key, iv, bad, aad, chunk); ok {
			t.Fatalf("size %d: a flipped bit still verifies", n)
		}
	}
}

// TestStreamLargeMessage: a message of a few chunks of the real chunk size
// (plus a tail), compared with crypto/cipher.
func TestStreamLargeMessage(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	key, iv := make([]byte, 32), make([]byte, 12)
	for i := range key {
		key[i] = byte(rng.Uint32())
	}
	pt := make([]byte, 3*streamChunk+4096+7)
	for i := range pt {
		pt[i] = byte(i * 7)
	}
	aad := []byte("header and context")
	block, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(block)
	want := g.Seal(nil, iv, pt, aad)
	if got := sealStream(t, key, iv, pt, aad, streamChunk); !bytes.Equal(got, want) {
		t.Fatal("stream seal differs from crypto/cipher GCM on a multi-chunk message")
	}
}

// TestGFMul checks the field arithmetic by its algebra: 1 is the identity,
// multiplication commutes and distributes, and x^(a+b) = x^a * x^b.
func TestGFMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	r := func() gfElem { return gfElem{rng.Uint64(), rng.Uint64()} }
	one := gfElem{hi: 1 << 63}
	for range 100 {
		a, b, c := r(), r(), r()
		if gfMul(a, one) != a {
			t.Fatal("1 is not the identity")
		}
		if gfMul(a, b) != gfMul(b, a) {
			t.Fatal("not commutative")
		}
		if gfMul(a, b.xor(c)) != gfMul(a, b).xor(gfMul(a, c)) {
			t.Fatal("not distributive")
		}
		m, n := uint64(rng.IntN(1000)), uint64(rng.IntN(1000))
		if gfPow(a, m+n) != gfMul(gfPow(a, m), gfPow(a, n)) {
			t.Fatal("x^(m+n) != x^m * x^n")
		}
	}
}

// TestStreamRefusesMisuse: a partial chunk ends the stream; oversized
// chunks and bad sizes are refused.
func TestStreamRefusesMisuse(t *testing.T) {
	key, iv := make([]byte, 32), make([]byte, 12)
	s, err := newGCMStream(key, iv, 32)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.hash(make([]byte, 33)); err == nil {
		t.Fatal("a chunk larger than the stream's was accepted")
	}
	if err := s.hash(make([]byte, 20)); err != nil {
		t.Fatal(err)
	}
	if err := s.hash(make([]byte, 32)); err == nil {
		t.Fatal("data after a partial chunk was accepted")
	}
	if _, err := newGCMStream(key[:16], iv, 32); err == nil {
		t.Fatal("a 16-byte key was accepted")
	}
	if _, err := newGCMStream(key, iv[:8], 32); err == nil {
		t.Fatal("an 8-byte IV was accepted")
	}
	if _, err := newGCMStream(key, iv, 24); err == nil {
		t.Fatal("a chunk that is not whole blocks was accepted")
	}
}
