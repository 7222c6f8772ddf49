package kit

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// fastKDF stands in for scrypt in the fuzz target (SHA-256 of the inputs,
// 64 bytes): the target fuzzes every step that reads the file's bytes,
// not x/crypto's scrypt, and stays at thousands of executions a second.
func fastKDF(pass, salt []byte, logN int) ([]byte, error) {
	h := sha256.New()
	h.Write(pass)
	h.Write(salt)
	h.Write([]byte{byte(logN)})
	a := h.Sum(nil)
	h.Write(a)
	return append(a, h.Sum(nil)...), nil
}

// FuzzOpen feeds hostile kits to the reader: header parsing (lengths,
// numbers, base64, work factors), the MAC check and the AEAD. It never
// panics; every failure is a wrong passphrase, corrupt or unsupported; a
// kit that opens re-seals to the same bytes; work factors above the cap
// never reach the KDF.
func FuzzOpen(f *testing.F) {
	pass := []byte("fuzz")
	for _, plain := range []string{testJSON, "x"} {
		b, err := seal([]byte(plain), pass, MinLogN, bytes.Repeat([]byte{7}, SaltLen), fastKDF)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(Magic + "\nscrypt 20 8 1 AAAAAAAAAAAAAAAAAAAAAA==\nchacha20poly1305 1\n--- AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"))
	f.Add([]byte(Magic + "\nscrypt 10 8 1 AAAAAAAAAAAAAAAAAAAAAA==\nchacha20poly1305 1048576\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 8<<10 {
			return
		}
		kdf := func(p, s []byte, logN int) ([]byte, error) {
			if logN > MinLogN+2 || logN < MinLogN || len(s) != SaltLen {
				t.Fatalf("KDF called with work factor %d, salt of %d bytes", logN, len(s))
			}
			return fastKDF(p, s, logN)
		}
		pt, err := open(b, pass, MinLogN+2, kdf)
		if err != nil {
			if !errors.Is(err, keysafe.ErrWrongKey) && !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		h, _, err := ParseHeader(b)
		if err != nil {
			t.Fatalf("opened but the header does not parse: %v", err)
		}
		again, err := seal(pt, pass, h.LogN, h.Salt, fastKDF)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("an opened kit does not re-seal to its bytes: %v", err)
		}
	})
}
