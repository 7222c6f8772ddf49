package vmx

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// fuzzVMXSeeds are small VMX texts in the shapes real files take: a plain
// VM, the plain header of an encrypted one, CRLF endings, a BOM, a file
// cut in the middle of a quoted value, odd lines among settings.
var fuzzVMXSeeds = []string{
	".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"21\"\ndisplayName = \"Win|2011\"\nscsi0:0.fileName = \"disk.vmdk\"\nnvram = \"vm.nvram\"\n",
	".encoding = \"UTF-8\"\r\ndisplayName = \"enc\"\r\nencryption.keySafe = \"vmware:key/list/(pair/(phrase/abc/pass2key%3dPBKDF2-HMAC-SHA-1:cipher%3dXTS-AES-256:rounds%3d10000:salt%3dAAAA,HMAC-SHA-1,AAAA))\"\r\nencryption.data = \"AAAA\"\r\nvtpm.present = \"TRUE\"\r\n",
	"# comment\n\n  key.with.spaces   =   \"v\"  \nKEY.WITH.SPACES = \"second\"\nodd line\n=\"no key\"\n",
	"\xef\xbb\xbfdisplayName = \"bom\"\nencryption.data = \"cut sh",
	"a = unquoted\nb = \"\"\nc=\"tab\tin\"\n\fd = \"form feed\"",
}

// checkVMXRefusal: a refusal returns no File and a sentinel, and happens
// only for input that is not VMX text.
func checkVMXRefusal(t *testing.T, b []byte, vf *File, err error, wrapped bool) {
	t.Helper()
	if vf != nil {
		t.Fatal("a File returned with an error")
	}
	if !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("refusal is not a sentinel: %v", err)
	}
	if wrapped && isVMXText(b) {
		t.Fatalf("text with setting lines refused: %v", err)
	}
}

// isVMXText is the text rule ParseBytes states, written independently:
// valid UTF-8 and no control byte other than tab, CR, LF and form feed.
func isVMXText(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\r' && c != '\n' && c != '\f' || c == 0x7f {
			return false
		}
	}
	return utf8.Valid(b)
}

// checkVMXFile checks a parsed file against its input: the exact bytes
// back, line endings only where they are, and settings Get can see.
func checkVMXFile(t *testing.T, vf *File, b []byte) {
	t.Helper()
	if !bytes.Equal(vf.Bytes(), b) {
		t.Fatal("no byte round trip")
	}
	for i, l := range vf.Lines {
		if bytes.ContainsAny([]byte(l.Raw), "\n") || (l.EOL != "\n" && l.EOL != "\r\n" && (l.EOL != "" || i != len(vf.Lines)-1)) {
			t.Fatalf("line %d: raw %q, EOL %q", i, l.Raw, l.EOL)
		}
		if l.Kind == Setting {
			if got, _ := vf.Get(l.Key); got == "" && l.Value != "" && vf.Count(l.Key) == 1 {
				t.Fatal("Get lost a value")
			}
		}
	}
}

// mangleData copies the decoded blob orig, XORs the patch triplets
// (big-endian u16 offset modulo the length, byte) into it, cuts or extends
// it by a block (mode bit 1) and inserts s into its base64 text at the
// offset the first two patch bytes give (mode bit 2).
func mangleData(orig, patch []byte, s string, mode uint8) string {
	raw := bytes.Clone(orig)
	for i := 0; i+3 <= len(patch); i += 3 {
		raw[int(binary.BigEndian.Uint16(patch[i:]))%len(raw)] ^= patch[i+2]
	}
	if mode&2 != 0 {
		if len(patch) > 0 && patch[0]&1 == 1 {
			raw = append(raw, make([]byte, 16)...)
		} else {
			raw = raw[:len(raw)-16]
		}
	}
	out := base64.StdEncoding.EncodeToString(raw)
	if mode&4 != 0 {
		at := 0
		if len(patch) >= 2 {
			at = int(binary.BigEndian.Uint16(patch)) % (len(out) + 1)
		}
		out = out[:at] + s + out[at:]
	}
	return out
}

// decodeStd is the test's own view of the base64 text (Go's standard
// decoder skips CR and LF; DecryptData refuses them).
func decodeStd(s string) ([]byte, bool) {
	b, err := base64.StdEncoding.DecodeString(s)
	return b, err == nil
}

// checkDataError: a failure under the right config key is ErrCorrupt
// (never ErrWrongKey) and carries no text.
func checkDataError(t *testing.T, text []byte, err error) {
	t.Helper()
	if text != nil {
		t.Fatal("partial text on error")
	}
	if !errors.Is(err, keysafe.ErrCorrupt) || errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("failure under the right key is not ErrCorrupt: %v", err)
	}
}

// fuzzDecryptRaw feeds arbitrary text: it fails as ErrCorrupt, or (never
// seen) decrypts to text that re-encrypts and decrypts the same.
func fuzzDecryptRaw(t *testing.T, key *keysafe.Key, s string) {
	text, err := DecryptData(key, s)
	if err != nil {
		checkDataError(t, text, err)
		return
	}
	enc, err := EncryptData(key, text, bytes.NewReader(make([]byte, 16)))
	if err != nil {
		t.Fatal(err)
	}
	if back, err := DecryptData(key, enc); err != nil || !bytes.Equal(back, text) {
		t.Fatal("re-encryption does not round-trip")
	}
}

// isFuzzKey: the key Set("fuzz.key") changes, as Get matches keys
// (strings.EqualFold: "FUZZ.KEY", or with a Kelvin sign for k).
func isFuzzKey(k string) bool { return strings.EqualFold(k, "fuzz.key") }

func hasLineBreak(s string) bool { return strings.ContainsAny(s, "\r\n") }
