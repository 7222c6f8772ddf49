package keysafe

import "testing"

// BenchmarkUnlockPhrase: one passphrase try on the real Workstation key
// safe (PBKDF2-HMAC-SHA1, 10000 rounds, dominates).
func BenchmarkUnlockPhrase(b *testing.B) {
	p := vmxKeySafe(b, "workstation-encrypted.vmx").Pairs()[0]
	for b.Loop() {
		if _, err := UnlockPhrase(p, []byte("password")); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseLongPair: the vCenter NKP key safe.
func BenchmarkParseLongPair(b *testing.B) {
	var long string
	for _, v := range locatorVectors(b) {
		if len(v.in) > len(long) {
			long = v.in
		}
	}
	b.SetBytes(int64(len(long)))
	for b.Loop() {
		if _, err := Parse(long); err != nil {
			b.Fatal(err)
		}
	}
}
