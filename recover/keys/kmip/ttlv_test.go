package kmip

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/recover/keys/kmip/kmiptest"
)

// specVectors are the encoding examples of KMIP 1.x §9.1.2 (tag 0x420020,
// the same in KMIP 1.0 to 1.4). TestEncodingMatchesPyKMIP checks PyKMIP
// encodes the same values to the same bytes.
var specVectors = []struct {
	name string
	item Item
	hex  string
	py   string // PyKMIP primitive expression (t is the tag)
}{
	{"Integer 8", Item{Tag: 0x420020, Type: TypeInteger, Int: 8},
		"420020 02 00000004 0000000800000000", "primitives.Integer(8, tag=t)"},
	{"LongInteger 123456789000000000", Item{Tag: 0x420020, Type: TypeLongInteger, Int: 123456789000000000},
		"420020 03 00000008 01B69B4BA5749200", "primitives.LongInteger(123456789000000000, tag=t)"},
	{"BigInteger 1234567890000000000000000000", Item{Tag: 0x420020, Type: TypeBigInteger, Bytes: mustHex("0000000003FD35EB6BC2DF4618080000")},
		"420020 04 00000010 0000000003FD35EB6BC2DF4618080000", "primitives.BigInteger(1234567890000000000000000000, tag=t)"},
	{"Enumeration 255", Item{Tag: 0x420020, Type: TypeEnumeration, Int: 255},
		"420020 05 00000004 000000FF00000000", "primitives.Enumeration(enums.Tags, 255, tag=t)"},
	{"Boolean true", Item{Tag: 0x420020, Type: TypeBoolean, Int: 1},
		"420020 06 00000008 0000000000000001", "primitives.Boolean(True, tag=t)"},
	{"TextString Hello World", Item{Tag: 0x420020, Type: TypeTextString, Bytes: []byte("Hello World")},
		"420020 07 0000000B 48656C6C6F20576F726C640000000000", "primitives.TextString('Hello World', tag=t)"},
	{"ByteString 010203", Item{Tag: 0x420020, Type: TypeByteString, Bytes: []byte{1, 2, 3}},
		"420020 08 00000003 0102030000000000", "primitives.ByteString(b'\\x01\\x02\\x03', tag=t)"},
	{"DateTime 2008-03-14 11:56:40 GMT", Item{Tag: 0x420020, Type: TypeDateTime, Int: 0x47DA67F8},
		"420020 09 00000008 0000000047DA67F8", "primitives.DateTime(0x47DA67F8, tag=t)"},
	{"Interval 10 days", Item{Tag: 0x420020, Type: TypeInterval, Int: 864000},
		"420020 0A 00000004 000D2F0000000000", "primitives.Interval(864000, tag=t)"},
	{"Structure of Enumeration 254 and Integer 255", Item{Tag: 0x420020, Type: TypeStructure, Items: []Item{
		{Tag: 0x420004, Type: TypeEnumeration, Int: 254}, {Tag: 0x420005, Type: TypeInteger, Int: 255}}},
		"420020 01 00000020 420004 05 00000004 000000FE00000000 420005 02 00000004 000000FF00000000", ""},
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

func TestSpecVectors(t *testing.T) {
	for _, v := range specVectors {
		want := mustHex(v.hex)
		got, err := Encode(v.item)
		if err != nil {
			t.Fatalf("%s: encode: %v", v.name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encode = %x, want %x", v.name, got, want)
		}
		it, err := Decode(want)
		if err != nil {
			t.Fatalf("%s: decode: %v", v.name, err)
		}
		if !reflect.DeepEqual(it, v.item) {
			t.Errorf("%s: decode = %+v, want %+v", v.name, it, v.item)
		}
	}
}

// TestEncodingMatchesPyKMIP: PyKMIP's primitives encode the spec's values
// to the bytes this codec writes.
func TestEncodingMatchesPyKMIP(t *testing.T) {
	kmiptest.Check(t)
	var script strings.Builder
	script.WriteString("import binascii\nfrom kmip.core import enums, primitives, utils\nt = enums.Tags(0x420020)\n" +
		"def enc(p):\n    s = utils.BytearrayStream()\n    p.write(s)\n    print(binascii.hexlify(s.buffer).decode())\n")
	var want []string
	for _, v := range specVectors {
		if v.py == "" {
			continue
		}
		if strings.HasPrefix(v.py, "primitives.Enumeration") { // PyKMIP checks the value against an enum class
			script.WriteString("import enum\nE = enum.Enum('E', {'X': 255})\nenc(primitives.Enumeration(E, E.X, tag=t))\n")
		} else {
			script.WriteString("enc(" + v.py + ")\n")
		}
		b, err := Encode(v.item)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, hex.EncodeToString(b))
	}
	out, err := exec.Command(kmiptest.Python, "-c", script.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("PyKMIP: %v: %s", err, out)
	}
	got := strings.Fields(string(out))
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PyKMIP encodes\n%v\nthis codec\n%v", got, want)
	}
}

// hdr returns an item header.
func hdr(tag Tag, typ Type, n uint32) []byte {
	b := []byte{byte(tag >> 16), byte(tag >> 8), byte(tag), byte(typ), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], n)
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// nested returns depth structures, one in the other, around an Integer.
func nested(depth int) []byte {
	b := cat(hdr(0x420020, TypeInteger, 4), make([]byte, 8))
	for i := 0; i < depth; i++ {
		b = cat(hdr(0x420020, TypeStructure, uint32(len(b))), b)
	}
	return b
}

func TestDecodeRefuses(t *testing.T) {
	intItem := cat(hdr(0x420020, TypeInteger, 4), make([]byte, 8))
	many := hdr(0x420020, TypeStructure, uint32(MaxItems*16))
	for i := 0; i < MaxItems; i++ {
		many = append(many, intItem...)
	}
	cases := []struct {
		name   string
		b      []byte
		offset int
	}{
		{"empty", nil, 0},
		{"short header", hdr(0x420020, TypeInteger, 4)[:7], 0},
		{"not a KMIP tag", cat(hdr(0x430020, TypeInteger, 4), make([]byte, 8)), 0},
		{"type 0", cat(hdr(0x420020, 0, 4), make([]byte, 8)), 0},
		{"type 0x0B", cat(hdr(0x420020, 0x0B, 4), make([]byte, 8)), 0},
		{"length past the end", cat(hdr(0x420020, TypeByteString, 9), make([]byte, 8)), 0},
		{"huge length", cat(hdr(0x420020, TypeByteString, 0xFFFFFFFF), make([]byte, 8)), 0},
		{"huge structure length", cat(hdr(0x420020, TypeStructure, 0xFFFFFFF8), intItem), 0},
		{"padding missing", cat(hdr(0x420020, TypeByteString, 3), []byte{1, 2, 3}), 0},
		{"non-zero padding", cat(hdr(0x420020, TypeByteString, 3), []byte{1, 2, 3, 0, 0, 0, 0, 1}), 0},
		{"Integer of 8 bytes", cat(hdr(0x420020, TypeInteger, 8), make([]byte, 8)), 0},
		{"Enumeration of 0 bytes", hdr(0x420020, TypeEnumeration, 0), 0},
		{"LongInteger of 4 bytes", cat(hdr(0x420020, TypeLongInteger, 4), make([]byte, 8)), 0},
		{"Boolean 2", cat(hdr(0x420020, TypeBoolean, 8), []byte{0, 0, 0, 0, 0, 0, 0, 2}), 0},
		{"BigInteger of 0 bytes", hdr(0x420020, TypeBigInteger, 0), 0},
		{"BigInteger of 12 bytes", cat(hdr(0x420020, TypeBigInteger, 12), make([]byte, 16)), 0},
		{"TextString not UTF-8", cat(hdr(0x420020, TypeTextString, 2), []byte{0xC3, 0x28, 0, 0, 0, 0, 0, 0}), 0},
		{"structure length not a multiple of 8", cat(hdr(0x420020, TypeStructure, 12), intItem[:12], make([]byte, 4)), 0},
		{"child runs past its structure", cat(hdr(0x420021, TypeStructure, 8), intItem), 8},
		{"bytes after the message", cat(intItem, make([]byte, 8)), 16},
		{"nesting above MaxDepth", nested(MaxDepth + 1), MaxDepth * 8},
		{"more than MaxItems items", many, 8 + (MaxItems-1)*16},
		{"message above MaxMessageSize", cat(hdr(0x420020, TypeByteString, MaxMessageSize), make([]byte, MaxMessageSize)), 0},
	}
	for _, c := range cases {
		_, err := Decode(c.b)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", c.name, err)
			continue
		}
		var de *DecodeError
		if !errors.As(err, &de) || de.Offset != c.offset {
			t.Errorf("%s: error %v at offset %d, want offset %d", c.name, err, de.Offset, c.offset)
		}
	}
	// The limits themselves are accepted.
	if _, err := Decode(nested(MaxDepth)); err != nil {
		t.Errorf("MaxDepth nested structures: %v", err)
	}
	if _, err := Decode(many[:len(many)-16]); err == nil {
		t.Error("a structure shorter than its length decoded")
	}
	exact := cat(hdr(0x420020, TypeStructure, uint32((MaxItems-1)*16)), bytes.Repeat(intItem, MaxItems-1))
	if _, err := Decode(exact); err != nil {
		t.Errorf("MaxItems items: %v", err)
	}
}

func TestEncodeRefuses(t *testing.T) {
	deep := Item{Tag: 0x420020, Type: TypeInteger}
	for i := 0; i < MaxDepth+1; i++ {
		deep = Structure(0x420020, deep)
	}
	for _, it := range []Item{
		{Tag: 0x430001, Type: TypeInteger},
		{Tag: 0x420001, Type: 0x0B},
		{Tag: 0x420001, Type: TypeBoolean, Int: 2},
		{Tag: 0x420001, Type: TypeInteger, Int: 1 << 31},
		{Tag: 0x420001, Type: TypeEnumeration, Int: -1},
		{Tag: 0x420001, Type: TypeInterval, Int: 1 << 32},
		{Tag: 0x420001, Type: TypeBigInteger, Bytes: []byte{1}},
		{Tag: 0x420001, Type: TypeTextString, Bytes: []byte{0xFF}},
		deep,
	} {
		if b, err := Encode(it); err == nil {
			t.Errorf("Encode(%+v) = %x, want an error", it, b)
		}
	}
}

// randItem builds a random valid item tree.
func randItem(r *rand.Rand, depth int) Item {
	tag := Tag(0x420000 | r.IntN(0x10000))
	if r.IntN(8) == 0 {
		tag = Tag(0x540000 | r.IntN(0x10000))
	}
	typ := Type(1 + r.IntN(10))
	if depth >= 4 && typ == TypeStructure {
		typ = TypeByteString
	}
	it := Item{Tag: tag, Type: typ}
	randBytes := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return b
	}
	switch typ {
	case TypeStructure:
		for i := r.IntN(5); i > 0; i-- {
			it.Items = append(it.Items, randItem(r, depth+1))
		}
	case TypeInteger:
		it.Int = int64(int32(r.Uint32()))
	case TypeEnumeration, TypeInterval:
		it.Int = int64(r.Uint32())
	case TypeLongInteger, TypeDateTime:
		it.Int = int64(r.Uint64())
	case TypeBoolean:
		it.Int = int64(r.IntN(2))
	case TypeBigInteger:
		it.Bytes = randBytes(8 * (1 + r.IntN(3)))
	case TypeTextString:
		it.Bytes = []byte(strings.Repeat("é", r.IntN(10)))
	case TypeByteString:
		it.Bytes = randBytes(r.IntN(20))
	}
	return it
}

// normalize makes empty slices nil so DeepEqual compares values.
func normalize(it *Item) {
	if len(it.Bytes) == 0 {
		it.Bytes = nil
	}
	if len(it.Items) == 0 {
		it.Items = nil
	}
	for i := range it.Items {
		normalize(&it.Items[i])
	}
}

func TestRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		it := randItem(r, 0)
		b, err := Encode(it)
		if err != nil {
			t.Fatalf("encode %+v: %v", it, err)
		}
		if len(b)%8 != 0 {
			t.Fatalf("encoding of %d bytes is not padded", len(b))
		}
		back, err := Decode(b)
		if err != nil {
			t.Fatalf("decode %x: %v", b, err)
		}
		normalize(&it)
		normalize(&back)
		if !reflect.DeepEqual(it, back) {
			t.Fatalf("round trip:\n%+v\n%+v", it, back)
		}
		again, err := Encode(back)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %v", err)
		}
	}
}
