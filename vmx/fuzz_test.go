package vmx

import (
	"bytes"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// FuzzVMXParse: never panics, round-trips byte for byte, and a value set
// with Set reads back the same.
func FuzzVMXParse(f *testing.F) {
	f.Add(readVector(f, "workstation-encrypted.vmx"), "x")
	f.Add(readVector(f, "xts-selfgen.vmx"), "a|b\"c")
	f.Add([]byte("# c\r\n\r\nA = \"|22\"\r\nodd"), "\r\n")
	f.Fuzz(func(t *testing.T, b []byte, v string) {
		vf, err := ParseBytes(b)
		if err != nil {
			return
		}
		if !bytes.Equal(vf.Bytes(), b) {
			t.Fatal("no byte round trip")
		}
		for _, l := range vf.Lines {
			if l.Kind == Setting {
				if got, _ := vf.Get(l.Key); got == "" && l.Value != "" && vf.Count(l.Key) == 1 {
					t.Fatal("Get lost a value")
				}
			}
		}
		vf.Set("fuzz.key", v)
		vf2, err := ParseBytes(vf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := vf2.Get("FUZZ.KEY"); got != v {
			t.Fatalf("Set %q read back %q", v, got)
		}
		_, _ = vf.KeySafe()
	})
}

// FuzzDecryptData: arbitrary encryption.data never panics and, under the
// right config key, fails only as corrupt.
func FuzzDecryptData(f *testing.F) {
	vf, _ := ParseBytes(readVector(f, "workstation-encrypted.vmx"))
	_, data, _, _ := vf.Encryption()
	f.Add(data)
	f.Add(data[:100])
	f.Add("")
	key, _ := keysafe.ParseKeyDict("type=key:cipher=AES-256:key=i7BE98D0tBWWFK9hKfi/HRfRmwKuAF4/UJtB6Z3cHM4%3d")
	f.Fuzz(func(t *testing.T, s string) {
		text, err := DecryptData(key, s)
		if err != nil {
			if text != nil {
				t.Fatal("partial text on error")
			}
			return
		}
		enc, err := EncryptData(key, text, bytes.NewReader(make([]byte, 16)))
		if err != nil {
			t.Fatal(err)
		}
		if back, err := DecryptData(key, enc); err != nil || !bytes.Equal(back, text) {
			t.Fatal("re-encryption does not round-trip")
		}
	})
}

// FuzzCheckSettings: any edit never panics; an accepted one keeps
// dataFileKey and cryptoState as they were, and its every new line is a
// comment, a blank line or a quoted setting.
func FuzzCheckSettings(f *testing.F) {
	old := []byte("# c\nnvram = \"x\"\ndataFileKey = \"type=key:cipher=AES-256:key=AAAA\"\ncryptoState = \"encrypted\"\n")
	f.Add(old, append(old, "a = \"b\"\n"...))
	f.Add(old, []byte("nvram = \"x\r\n"))
	f.Add([]byte("a = \"1\"\r\n"), []byte("a = \"1\"\r\na = \"2\"\r\n\xff = \"|22\"\n"))
	f.Fuzz(func(t *testing.T, old, edited []byte) {
		if len(old) > 4096 || len(edited) > 4096 {
			return
		}
		if err := CheckSettings(old, edited); err != nil {
			return
		}
		of, _ := ParseBytes(old)
		nf, _ := ParseBytes(edited)
		for _, k := range protectedKeys {
			a, aok := of.Get(k)
			b, bok := nf.Get(k)
			if a != b || aok != bok || of.Count(k) != nf.Count(k) {
				t.Fatalf("%s changed and was accepted", k)
			}
		}
		seen := map[string]bool{}
		for _, l := range of.Lines {
			seen[l.Raw] = true
		}
		for _, l := range nf.Lines {
			if !seen[l.Raw] && l.Kind == Other {
				t.Fatalf("odd line %q accepted", l.Raw)
			}
		}
	})
}

// FuzzRewrapDescriptor: any descriptor text never panics; a rewrap that
// succeeds changes only the encryptionKeys line and reads back the keys.
func FuzzRewrapDescriptor(f *testing.F) {
	f.Add([]byte("# Disk DescriptorFile\nversion=1\nencryptionKeys=\"old\"\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\nRW 2048 SPARSE \"d.vmdk\"\nddb.iofilters = \"vmwarevmcrypt\"\n"))
	f.Add([]byte("encryptionKeys = old\r\ncreateType=\"x\"\r\n"))
	f.Add([]byte("encryptionKeys=\"a\"\nencryptionKeys=\"b\"\ncreateType=\"x\"\n"))
	f.Fuzz(func(t *testing.T, text []byte) {
		if len(text) > 8192 {
			return
		}
		out, err := RewrapDescriptor(text, "fuzz", "vmware:key/list/()")
		if err != nil {
			return
		}
		d, err := vmdk.ParseDescriptor(out, "fuzz")
		if err != nil || d.EncryptionKeys != "vmware:key/list/()" {
			t.Fatalf("rewrapped text does not read back: %v", err)
		}
		if bytes.Count(out, []byte("\n")) != bytes.Count(text, []byte("\n")) {
			t.Fatal("line count changed")
		}
	})
}
