package nkp

import (
	"hash"
	"unicode/utf16"
)

// pkcs12KDF is the key derivation of RFC 7292 appendix B.2. id is 1 for
// cipher keys, 2 for IVs and 3 for MAC keys; pass is the BMPString password
// with its terminator (see bmpPassword). v is the hash's block size, u its
// output size.
func pkcs12KDF(newHash func() hash.Hash, id byte, pass, salt []byte, iterations, n int) []byte {
	h := newHash()
	u, v := h.Size(), h.BlockSize()
	d := make([]byte, v)
	for i := range d {
		d[i] = id
	}
	fill := func(src []byte) []byte {
		if len(src) == 0 {
			return nil
		}
		out := make([]byte, v*((len(src)+v-1)/v))
		for i := range out {
			out[i] = src[i%len(src)]
		}
		return out
	}
	I := append(fill(salt), fill(pass)...)
	out := make([]byte, 0, ((n+u-1)/u)*u)
	a := make([]byte, 0, u)
	b := make([]byte, v)
	for len(out) < n {
		h.Reset()
		h.Write(d)
		h.Write(I)
		a = h.Sum(a[:0])
		for r := 1; r < iterations; r++ {
			h.Reset()
			h.Write(a)
			a = h.Sum(a[:0])
		}
		out = append(out, a...)
		if len(out) >= n {
			break
		}
		for i := range b {
			b[i] = a[i%u]
		}
		// I_j = (I_j + B + 1) mod 2^(8v), big-endian, for every v-byte block.
		for j := 0; j < len(I); j += v {
			blk := I[j : j+v]
			carry := uint(1)
			for k := v - 1; k >= 0; k-- {
				s := uint(blk[k]) + uint(b[k]) + carry
				blk[k] = byte(s)
				carry = s >> 8
			}
		}
	}
	return out[:n]
}

// bmpPassword encodes a UTF-8 password as a BMPString (UTF-16 big-endian,
// as Java's char[]) with the two-byte 00 00 terminator of RFC 7292 B.1. An
// empty password becomes 00 00, as Java and OpenSSL write it.
func bmpPassword(p []byte) []byte {
	u := utf16.Encode([]rune(string(p)))
	out := make([]byte, 0, 2*len(u)+2)
	for _, c := range u {
		out = append(out, byte(c>>8), byte(c))
	}
	return append(out, 0, 0)
}

// bmpCandidates lists the BMP encodings to try for a password: the
// standard one, and for the empty password also no bytes at all (what
// OpenSSL uses for a NULL password).
func bmpCandidates(p []byte) [][]byte {
	c := [][]byte{bmpPassword(p)}
	if len(p) == 0 {
		c = append(c, []byte{})
	}
	return c
}
