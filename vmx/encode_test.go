package vmx

import (
	"testing"
)

// A value that is not valid UTF-8 (the FuzzVMXParse crasher 083a8894aa887255:
// Set("fuzz.key", "\x8f") on an empty file) was written literally, so Set
// made a file in no charset it declared. Such bytes are escaped as |XX
// now (a reader of a legacy .encoding still accepts raw high bytes); valid
// UTF-8 stays literal, and every value reads back.
func TestEncodeValueInvalidUTF8(t *testing.T) {
	for _, c := range []struct{ v, enc string }{
		{"\x8f", "|8F"},
		{"a\xffb", "a|FFb"},
		{"\xe2\x82", "|E2|82"},        // a cut 3-byte sequence
		{"\xed\xa0\x80", "|ED|A0|80"}, // a UTF-16 surrogate, invalid in UTF-8
		{"é €", "é €"},                // valid UTF-8 stays literal
		{"\x7f|\"#", "|7F|7C|22#"},
		{"\uFFFD", "\uFFFD"}, // a real U+FFFD is valid text
	} {
		if got := EncodeValue(c.v); got != c.enc {
			t.Errorf("EncodeValue(%q) = %q, want %q", c.v, got, c.enc)
		}
		vf, err := ParseBytes(nil)
		if err != nil {
			t.Fatal(err)
		}
		vf.Set("fuzz.key", c.v)
		vf2, err := ParseBytes(vf.Bytes())
		if err != nil {
			t.Fatalf("Set(%q) wrote a file ParseBytes refuses: %v", c.v, err)
		}
		if got, _ := vf2.Get("fuzz.key"); got != c.v {
			t.Errorf("Set(%q) read back %q", c.v, got)
		}
	}
}
