package vmx

import (
	"bytes"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// FuzzVMXParse: never panics; refuses only what is not VMX text (a control
// byte, invalid UTF-8, or no setting line at all) and accepts all else;
// an accepted file round-trips byte for byte; a value set with Set reads
// back the same, leaves every other setting as it was, and the changed
// file parses again. With wrap, the fuzzed bytes sit between two valid
// setting lines, so the odd lines they make are kept, not refused.
func FuzzVMXParse(f *testing.F) {
	for _, s := range fuzzVMXSeeds {
		f.Add([]byte(s), "x", false)
	}
	f.Add([]byte("A = \"|22\"\r\nodd"), "a|b\"c", true)
	f.Add([]byte("# c\r\n\r\nA = \"|22\"\r\nodd"), "\r\n", false)
	f.Add([]byte("\xef\xbb\xbfk = \"v\"\n"), "\x8f\xff", false)
	f.Add([]byte("only an odd line\n"), "", true)
	f.Fuzz(func(t *testing.T, b []byte, v string, wrap bool) {
		if len(b) > 16<<10 || len(v) > 1<<10 {
			return
		}
		if wrap {
			b = append(append([]byte(".encoding = \"UTF-8\"\n"), b...), "\ndisplayName = \"fuzz\"\n"...)
		}
		vf, err := ParseBytes(b)
		if err != nil {
			checkVMXRefusal(t, b, vf, err, wrap)
			return
		}
		checkVMXFile(t, vf, b)
		_ = vf.Problems()
		_, _ = vf.KeySafe()
		_, _, _, _ = vf.Encryption()
		before := map[string]string{}
		for _, k := range vf.Keys() {
			before[k], _ = vf.Get(k)
		}
		vf.Set("fuzz.key", v)
		out := vf.Bytes()
		vf2, err := ParseBytes(out)
		if err != nil {
			t.Fatalf("the file Set wrote does not parse: %v", err)
		}
		checkVMXFile(t, vf2, out)
		if got, _ := vf2.Get("FUZZ.KEY"); got != v {
			t.Fatalf("Set %q read back %q", v, got)
		}
		for k, was := range before {
			if got, _ := vf2.Get(k); !isFuzzKey(k) && got != was {
				t.Fatalf("Set changed %s from %q to %q", k, was, got)
			}
		}
	})
}

// FuzzDecryptData: encryption.data built from fuzzed settings text under a
// config key (derived once, outside the loop), then changed: fuzzed bytes
// XORed into IV, ciphertext or MAC, cut or extended, the base64 text
// mangled. An unchanged blob gives back the text exactly; any change of
// the decoded bytes, or a line break in the text, fails as ErrCorrupt (the
// MAC covers everything): never partial text, never a wrong key. raw mode
// feeds arbitrary text as before.
func FuzzDecryptData(f *testing.F) {
	key, err := keysafe.ParseKeyDict("type=key:cipher=AES-256:key=i7BE98D0tBWWFK9hKfi/HRfRmwKuAF4/UJtB6Z3cHM4%3d")
	if err != nil {
		f.Fatal(err)
	}
	settings := []byte(".encoding = \"UTF-8\"\ndataFileKey = \"type=key:cipher=AES-256:key=AAAA\"\ncryptoState = \"encrypted\"\n")
	f.Add(settings, []byte{}, "", uint8(0))
	f.Add(settings, []byte{0, 0, 1}, "", uint8(0))       // IV
	f.Add(settings, []byte{0, 40, 0x80}, "", uint8(0))   // ciphertext
	f.Add(settings, []byte{0xff, 0xff, 1}, "", uint8(0)) // last byte: MAC
	f.Add([]byte{}, []byte{}, "", uint8(2))              // cut a block
	f.Add([]byte("a"), []byte{}, "AAAA", uint8(4))       // base64 inserted
	f.Add([]byte("a"), []byte{}, "\n", uint8(4))
	f.Add([]byte{}, []byte{}, "", uint8(1))
	f.Add([]byte{}, []byte{}, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", uint8(1))
	f.Fuzz(func(t *testing.T, text, patch []byte, s string, mode uint8) {
		if len(text) > 4<<10 || len(patch) > 3*64 || len(s) > 4<<10 {
			return
		}
		if mode&1 == 1 {
			fuzzDecryptRaw(t, key, s)
			return
		}
		enc, err := EncryptData(key, text, bytes.NewReader(make([]byte, 16)))
		if err != nil {
			t.Fatal(err)
		}
		orig, _ := decodeStd(enc)
		s2 := mangleData(orig, patch, s, mode)
		got, err := DecryptData(key, s2)
		switch dec, ok := decodeStd(s2); {
		case ok && bytes.Equal(dec, orig) && !hasLineBreak(s2):
			if err != nil || !bytes.Equal(got, text) {
				t.Fatalf("unchanged data: %v", err)
			}
		case err == nil:
			t.Fatalf("changed data accepted: %q", s2)
		default:
			checkDataError(t, got, err)
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
