package vmx

import (
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// BenchmarkDecryptData: the real Workstation encryption.data (3872 bytes).
func BenchmarkDecryptData(b *testing.B) {
	f, _ := ParseBytes(readVector(b, "workstation-encrypted.vmx"))
	_, data, _, _ := f.Encryption()
	key, _ := keysafe.ParseKeyDict("type=key:cipher=AES-256:key=i7BE98D0tBWWFK9hKfi/HRfRmwKuAF4/UJtB6Z3cHM4%3d")
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := DecryptData(key, data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParse: parsing the real Workstation VMX.
func BenchmarkParse(b *testing.B) {
	v := readVector(b, "workstation-encrypted.vmx")
	b.SetBytes(int64(len(v)))
	for b.Loop() {
		if _, err := ParseBytes(v); err != nil {
			b.Fatal(err)
		}
	}
}
