package esxi

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// Streaming AES-256-GCM (NIST SP 800-38D) for messages larger than memory.
//
// crypto/cipher's GCM opens whole messages only, and an envelope has one
// tag over up to 64 GiB. The stream here splits GCM into its two halves:
//
//   - the keystream: AES-CTR from crypto/cipher, starting at the counter
//     block IV || 00000002 (GCM's inc32(J0) for a 96-bit IV). crypto/cipher
//     increments the whole 128-bit block, GCM only the low 32 bits; the two
//     agree while the low word does not wrap, which holds for every message
//     GCM allows (at most 2^32 - 2 blocks: maxGCMData).
//   - GHASH over the ciphertext, chunk by chunk, with the assembly GHASH of
//     crypto/cipher: Seal of an empty message with the chunk as additional
//     data returns T = GHASH_H(chunk || L) xor E_K(J0), with L the length
//     block. Knowing K, E_K(J0) and L, Z = Y_chunk * H = T xor E_K(J0) xor
//     L*H, and GHASH is linear: the GHASH of consecutive chunks is the
//     Horner sum acc = acc * H^(blocks of the chunk) xor Z (gfMul below,
//     once per chunk). Every chunk but the last is a whole number of
//     blocks, so the zero padding Seal adds to a chunk is GCM's own padding
//     of the ciphertext's end.
//
// The additional data (the envelope header and a context string) comes
// last: its contribution is Z_A * H^(ciphertext blocks), so one pass over
// the ciphertext checks the tag for several candidate contexts at once.
//
// gcm_test.go proves the stream equal to crypto/cipher's GCM (Seal and
// Open) on random messages of many sizes, chunkings and additional data.

const (
	gcmBlock   = 16
	gcmIVSize  = 12
	gcmTagSize = 16
	keySize    = 32
	// maxGCMData is the largest plaintext GCM allows: 2^32 - 2 blocks
	// (2^39 - 256 bits).
	maxGCMData = (1<<32 - 2) * gcmBlock
	// streamChunk is the ciphertext read, hashed and decrypted at a time
	// (a whole number of blocks): the stream's memory.
	streamChunk = 1 << 20
)

// gfElem is an element of GF(2^128) in GCM's representation: the 16 bytes
// as a big-endian 128-bit number, hi first.
type gfElem struct{ hi, lo uint64 }

func gfLoad(b []byte) gfElem {
	return gfElem{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}
}

func (x gfElem) put(b []byte) {
	binary.BigEndian.PutUint64(b, x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
}

func (x gfElem) xor(y gfElem) gfElem { return gfElem{x.hi ^ y.hi, x.lo ^ y.lo} }

// gfMul multiplies in GCM's field (SP 800-38D algorithm 1: bit 0 is the
// most significant bit of the first byte; R = 11100001 || 0^120), in
// constant time. It runs once per chunk, so the simple form is enough.
func gfMul(x, y gfElem) gfElem {
	var z gfElem
	v := y
	for i := range 128 {
		var bit uint64
		if i < 64 {
			bit = x.hi >> (63 - i) & 1
		} else {
			bit = x.lo >> (127 - i) & 1
		}
		m := -bit
		z.hi ^= v.hi & m
		z.lo ^= v.lo & m
		lsb := v.lo & 1
		v.lo = v.lo>>1 | v.hi<<63
		v.hi = v.hi>>1 ^ 0xe100000000000000&-lsb
	}
	return z
}

// gfPow returns x^n (x^0 = 1, which is 0x80 00..00 in GCM's bit order).
func gfPow(x gfElem, n uint64) gfElem {
	r := gfElem{hi: 1 << 63}
	for ; n > 0; n >>= 1 {
		if n&1 == 1 {
			r = gfMul(r, x)
		}
		x = gfMul(x, x)
	}
	return r
}

// lengthBlock is GCM's final block: bit lengths of the additional data
// and of the ciphertext, big-endian.
func lengthBlock(aadBytes, ctBytes uint64) gfElem {
	return gfElem{aadBytes * 8, ctBytes * 8}
}

// gcmStream is one GCM message in progress: the keystream and the GHASH
// of the ciphertext so far. Not safe for concurrent use.
type gcmStream struct {
	block  cipher.Block
	aead   cipher.AEAD
	iv     [gcmIVSize]byte
	h      gfElem // E_K(0^128)
	ej0    gfElem // E_K(IV || 00000001)
	hChunk gfElem // H^(chunkBlocks)
	chunk  int    // bytes per full chunk (a multiple of 16)
	ctr    cipher.Stream
	acc    gfElem // Horner sum of the ciphertext chunks
	ctLen  uint64 // ciphertext bytes hashed
	ended  bool   // a partial chunk was hashed: no more data may follow
	tagBuf []byte
}

// newGCMStream sets up key and IV; chunk is the size of every hashed
// chunk but the last (a positive multiple of 16).
func newGCMStream(key, iv []byte, chunk int) (*gcmStream, error) {
	if len(key) != keySize {
		return nil, errors.New("esxi: AES-256-GCM key must be 32 bytes")
	}
	if len(iv) != gcmIVSize {
		return nil, errors.New("esxi: GCM IV must be 12 bytes")
	}
	if chunk <= 0 || chunk%gcmBlock != 0 {
		return nil, errors.New("esxi: GCM chunk must be a positive multiple of 16")
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	s := &gcmStream{block: block, aead: aead, chunk: chunk, tagBuf: make([]byte, 0, gcmTagSize)}
	copy(s.iv[:], iv)
	var b [gcmBlock]byte
	block.Encrypt(b[:], b[:])
	s.h = gfLoad(b[:])
	copy(b[:], iv)
	binary.BigEndian.PutUint32(b[12:], 1)
	block.Encrypt(b[:], b[:])
	s.ej0 = gfLoad(b[:])
	s.hChunk = gfPow(s.h, uint64(chunk/gcmBlock))
	s.ctr = s.ctrAt(0)
	return s, nil
}

// ctrAt returns the keystream from ciphertext block index idx (a new
// stream; the caller keeps idx + blocks within maxGCMData).
func (s *gcmStream) ctrAt(idx uint64) cipher.Stream {
	var cb [gcmBlock]byte
	copy(cb[:], s.iv[:])
	binary.BigEndian.PutUint32(cb[12:], uint32(2+idx))
	return cipher.NewCTR(s.block, cb[:])
}

// z returns Y*H for data: the GHASH state after data (zero-padded to
// whole blocks) times H, through crypto/cipher's GHASH.
func (s *gcmStream) z(data []byte) gfElem {
	s.tagBuf = s.aead.Seal(s.tagBuf[:0], s.iv[:], nil, data)
	t := gfLoad(s.tagBuf)
	return t.xor(s.ej0).xor(gfMul(lengthBlock(uint64(len(data)), 0), s.h))
}

// hash adds ciphertext to the GHASH. Every call but the last must pass
// exactly s.chunk bytes; the last may pass fewer (or none).
func (s *gcmStream) hash(ct []byte) error {
	if s.ended {
		return errors.New("esxi: GCM data after a partial chunk")
	}
	if len(ct) == 0 {
		return nil
	}
	if len(ct) > s.chunk {
		return errors.New("esxi: GCM chunk larger than the stream's")
	}
	if s.ctLen+uint64(len(ct)) > maxGCMData {
		return errors.New("esxi: GCM message longer than GCM allows")
	}
	n := uint64((len(ct) + gcmBlock - 1) / gcmBlock)
	hn := s.hChunk
	if len(ct) != s.chunk {
		hn = gfPow(s.h, n)
		s.ended = true
	}
	s.acc = gfMul(s.acc, hn).xor(s.z(ct))
	s.ctLen += uint64(len(ct))
	return nil
}

// xor applies the keystream (encrypts or decrypts) in place, in order.
func (s *gcmStream) xor(b []byte) { s.ctr.XORKeyStream(b, b) }

// tag returns the GCM tag of the ciphertext hashed so far under
// additional data aad.
func (s *gcmStream) tag(aad []byte) [gcmTagSize]byte {
	ctBlocks := (s.ctLen + gcmBlock - 1) / gcmBlock
	y := s.acc
	if len(aad) > 0 {
		y = y.xor(gfMul(s.z(aad), gfPow(s.h, ctBlocks)))
	}
	t := y.xor(gfMul(lengthBlock(uint64(len(aad)), s.ctLen), s.h)).xor(s.ej0)
	var out [gcmTagSize]byte
	t.put(out[:])
	return out
}

// matchTag returns the index of the first aad whose tag equals want (in
// constant time per candidate), or -1.
func (s *gcmStream) matchTag(want []byte, aads ...[]byte) int {
	for i, a := range aads {
		t := s.tag(a)
		if subtle.ConstantTimeCompare(t[:], want) == 1 {
			return i
		}
	}
	return -1
}
