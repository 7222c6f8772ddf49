package xts

import "encoding/binary"

// cryptGeneric is the pure-Go path: crypto/aes one block at a time, the
// tweak kept in two uint64 halves. It is allocation-free: the only buffers
// handed to the cipher.Block interface are dst's own blocks (the tweak of a
// sector is computed in dst's first block after src's first block has been
// read, which keeps in-place operation correct).
func (c *Cipher) cryptGeneric(dst, src []byte, lba uint64, encrypt bool) {
	le := binary.LittleEndian
	for s := 0; s < len(src); s += SectorSize {
		in, out := src[s:s+SectorSize], dst[s:s+SectorSize]
		first0, first1 := le.Uint64(in[0:]), le.Uint64(in[8:])
		t := out[0:16]
		le.PutUint64(t[0:], lba)
		le.PutUint64(t[8:], 0)
		c.b2.Encrypt(t, t)
		t0, t1 := le.Uint64(t[0:]), le.Uint64(t[8:])
		for i := 0; i < SectorSize; i += 16 {
			x0, x1 := first0, first1
			if i != 0 {
				x0, x1 = le.Uint64(in[i:]), le.Uint64(in[i+8:])
			}
			b := out[i : i+16]
			le.PutUint64(b[0:], x0^t0)
			le.PutUint64(b[8:], x1^t1)
			if encrypt {
				c.b1.Encrypt(b, b)
			} else {
				c.b1.Decrypt(b, b)
			}
			le.PutUint64(b[0:], le.Uint64(b[0:])^t0)
			le.PutUint64(b[8:], le.Uint64(b[8:])^t1)
			// t *= x in GF(2^128), IEEE 1619 little-endian convention.
			carry := t1 >> 63
			t1 = t1<<1 | t0>>63
			t0 = t0<<1 ^ carry*0x87
		}
		lba++
	}
}
