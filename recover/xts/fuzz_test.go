package xts

import (
	"bytes"
	"testing"
)

// fuzzMaxSectors caps the sectors of one fuzz input.
const fuzzMaxSectors = 16

// FuzzXTSAgainstXCrypto is a differential fuzz target: every implementation
// this CPU has (assembly kernels and pure Go) must agree with
// golang.org/x/crypto/xts for any key, sector number and data, in both
// directions, in place or not, and decrypt(encrypt(p)) must give p back.
func FuzzXTSAgainstXCrypto(f *testing.F) {
	ieee := fromHex(f, ieeeKey)
	for _, v := range ieeeVectors {
		f.Add(ieee, v.lba, fromHex(f, v.ct), uint8(0))
	}
	f.Add(make([]byte, KeySize), uint64(0), make([]byte, 3*SectorSize), uint8(1))
	f.Add(bytes.Repeat([]byte{0xff}, KeySize), ^uint64(0)-2, bytes.Repeat([]byte{0xa5}, 5*SectorSize+7), uint8(3))
	f.Add(benchKey(), uint64(1<<32-1), bytes.Repeat([]byte("sector"), 200), uint8(2))
	f.Fuzz(func(t *testing.T, key []byte, lba uint64, data []byte, mode uint8) {
		if len(key) < KeySize {
			key = append(bytes.Repeat([]byte{0x42}, KeySize-len(key)), key...)
		}
		key = key[:KeySize]
		n := len(data) / SectorSize
		if n == 0 {
			data = append(data, make([]byte, SectorSize-len(data))...)
			n = 1
		}
		// Sixteen sectors reach every path of the kernels (tweaks for
		// four sectors at a time, then the tail); each sector more only
		// costs time, above all in x/crypto's reference. Calls split at
		// maxKernelSectors are covered by TestAgainstXCrypto.
		if n > fuzzMaxSectors {
			n = fuzzMaxSectors
		}
		data = data[:n*SectorSize]
		c, err := New(key)
		if err != nil {
			t.Fatal(err)
		}
		encrypt := mode&1 != 0
		inPlace := mode&2 != 0
		want := refCrypt(t, key, data, lba, encrypt)
		for _, im := range availableImpls() {
			var got []byte
			if inPlace {
				got = append([]byte(nil), data...)
				c.cryptImpl(im, got, got, lba, encrypt)
			} else {
				got = make([]byte, len(data))
				c.cryptImpl(im, got, data, lba, encrypt)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: differs from x/crypto/xts (n=%d lba=%#x encrypt=%v inPlace=%v)", im, n, lba, encrypt, inPlace)
			}
			back := make([]byte, len(got))
			c.cryptImpl(im, back, got, lba, !encrypt)
			if !bytes.Equal(back, data) {
				t.Fatalf("%s: round trip failed", im)
			}
		}
	})
}
