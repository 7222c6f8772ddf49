package kmip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits of the codec. A message from a server is refused, before any
// allocation sized by it, when it breaks one of them.
const (
	// MaxMessageSize caps a whole TTLV message (header included). A Get of
	// a symmetric key answers in a few hundred bytes; certificates, key
	// pairs and long attribute lists are not asked for.
	MaxMessageSize = 256 << 10
	// MaxDepth caps structure nesting (a Get response nests 8 deep at most:
	// message, batch item, payload, object, key block, key value, key
	// material, key).
	MaxDepth = 16
	// MaxItems caps the number of items in one message.
	MaxItems = 4096
)

// ErrMalformed is wrapped by every decoding failure: the bytes are not a
// well-formed TTLV message or not the message the protocol allows here.
// A server that sends one is treated like a broken connection.
var ErrMalformed = errors.New("malformed KMIP message")

// Type is a TTLV item type.
type Type uint8

// The TTLV item types (KMIP 1.x §9.1.1.2).
const (
	TypeStructure   Type = 0x01
	TypeInteger     Type = 0x02
	TypeLongInteger Type = 0x03
	TypeBigInteger  Type = 0x04
	TypeEnumeration Type = 0x05
	TypeBoolean     Type = 0x06
	TypeTextString  Type = 0x07
	TypeByteString  Type = 0x08
	TypeDateTime    Type = 0x09
	TypeInterval    Type = 0x0A
)

var typeNames = [...]string{"", "Structure", "Integer", "LongInteger", "BigInteger", "Enumeration",
	"Boolean", "TextString", "ByteString", "DateTime", "Interval"}

func (t Type) String() string {
	if t >= 1 && int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type 0x%02X", uint8(t))
}

// fixedLen is the value length of the fixed-size types (0 for the others).
func (t Type) fixedLen() int {
	switch t {
	case TypeInteger, TypeEnumeration, TypeInterval:
		return 4
	case TypeLongInteger, TypeBoolean, TypeDateTime:
		return 8
	}
	return 0
}

// Tag is a TTLV tag (3 bytes on the wire). KMIP tags are 0x42XXXX;
// 0x54XXXX are extensions.
type Tag uint32

func validTag(t Tag) bool { return t>>16 == 0x42 || t>>16 == 0x54 }

// Item is one TTLV item. Which value field holds the value depends on Type:
//   - Int: Integer, LongInteger, Enumeration, Interval, DateTime (POSIX
//     seconds) and Boolean (0 or 1);
//   - Bytes: TextString (UTF-8), ByteString and BigInteger (big-endian two's
//     complement, a multiple of 8 bytes, as on the wire);
//   - Items: Structure.
//
// Decoded Bytes alias the decoded buffer.
type Item struct {
	Tag   Tag
	Type  Type
	Int   int64
	Bytes []byte
	Items []Item
}

// Structure, Integer... build items.
func Structure(tag Tag, items ...Item) Item { return Item{Tag: tag, Type: TypeStructure, Items: items} }

// Integer returns an Integer item.
func Integer(tag Tag, v int32) Item { return Item{Tag: tag, Type: TypeInteger, Int: int64(v)} }

// Enum returns an Enumeration item.
func Enum(tag Tag, v uint32) Item { return Item{Tag: tag, Type: TypeEnumeration, Int: int64(v)} }

// Text returns a TextString item.
func Text(tag Tag, s string) Item { return Item{Tag: tag, Type: TypeTextString, Bytes: []byte(s)} }

// Bytes returns a ByteString item.
func Bytes(tag Tag, b []byte) Item { return Item{Tag: tag, Type: TypeByteString, Bytes: b} }

// Child returns the first direct child with the tag, or nil.
func (it *Item) Child(tag Tag) *Item {
	for i := range it.Items {
		if it.Items[i].Tag == tag {
			return &it.Items[i]
		}
	}
	return nil
}

// DecodeError says where and why a message failed to decode. It wraps
// ErrMalformed.
type DecodeError struct {
	Offset int    // byte offset of the item in the message; -1 when not known
	Tag    Tag    // tag of the item (0 when the header itself is short)
	Msg    string // what is wrong
}

func (e *DecodeError) Error() string {
	if e.Offset < 0 {
		return fmt.Sprintf("%v: %v %s", ErrMalformed, e.Tag, e.Msg)
	}
	if e.Tag == 0 {
		return fmt.Sprintf("%v: offset %d: %s", ErrMalformed, e.Offset, e.Msg)
	}
	return fmt.Sprintf("%v: offset %d, tag %v: %s", ErrMalformed, e.Offset, e.Tag, e.Msg)
}

// Unwrap returns ErrMalformed.
func (e *DecodeError) Unwrap() error { return ErrMalformed }

func pad8(n int) int { return (n + 7) &^ 7 }

// Decode decodes one TTLV item that fills b exactly. It checks every
// length against the bytes present and the limits above, padding bytes
// (zero), fixed lengths, Boolean values and UTF-8 text; it never allocates
// more than a small multiple of len(b). Errors are *DecodeError.
func Decode(b []byte) (Item, error) {
	if len(b) > MaxMessageSize {
		return Item{}, &DecodeError{Msg: fmt.Sprintf("message of %d bytes is above the limit of %d", len(b), MaxMessageSize)}
	}
	d := decoder{b: b}
	it, n, err := d.item(0, len(b), 0)
	if err != nil {
		return Item{}, err
	}
	if n != len(b) {
		return Item{}, &DecodeError{Offset: n, Msg: fmt.Sprintf("%d bytes after the message", len(b)-n)}
	}
	return it, nil
}

type decoder struct {
	b     []byte
	items int
}

// item decodes the item at off, which must end by limit (the end of the
// enclosing structure); it returns the item and the offset after it
// (padding included).
func (d *decoder) item(off, limit, depth int) (Item, int, error) {
	if limit-off < 8 {
		return Item{}, 0, &DecodeError{Offset: off, Msg: fmt.Sprintf("item header needs 8 bytes, %d left", limit-off)}
	}
	d.items++
	if d.items > MaxItems {
		return Item{}, 0, &DecodeError{Offset: off, Msg: fmt.Sprintf("more than %d items", MaxItems)}
	}
	h := d.b[off : off+8]
	tag := Tag(h[0])<<16 | Tag(h[1])<<8 | Tag(h[2])
	typ := Type(h[3])
	n := binary.BigEndian.Uint32(h[4:8])
	fail := func(format string, a ...any) (Item, int, error) {
		return Item{}, 0, &DecodeError{Offset: off, Tag: tag, Msg: fmt.Sprintf(format, a...)}
	}
	if !validTag(tag) {
		return fail("not a KMIP tag")
	}
	if typ < TypeStructure || typ > TypeInterval {
		return fail("unknown item type 0x%02X", uint8(typ))
	}
	left := limit - off - 8
	if uint64(n) > uint64(left) {
		return fail("%v length %d runs past the end (%d bytes left)", typ, n, left)
	}
	vlen := int(n)
	if typ != TypeStructure && pad8(vlen) > left {
		return fail("%v padding runs past the end", typ)
	}
	v := d.b[off+8 : off+8+vlen]
	end := off + 8 + pad8(vlen)
	if typ == TypeStructure {
		end = off + 8 + vlen
	}
	for _, c := range d.b[off+8+vlen : end] {
		if c != 0 {
			return fail("non-zero padding byte")
		}
	}
	it := Item{Tag: tag, Type: typ}
	if fl := typ.fixedLen(); fl != 0 && vlen != fl {
		return fail("%v of length %d (must be %d)", typ, vlen, fl)
	}
	switch typ {
	case TypeStructure:
		if vlen%8 != 0 {
			return fail("structure length %d is not a multiple of 8", vlen)
		}
		if depth >= MaxDepth {
			return fail("structures nested more than %d deep", MaxDepth)
		}
		p := off + 8
		for p < end {
			child, next, err := d.item(p, end, depth+1)
			if err != nil {
				return Item{}, 0, err
			}
			it.Items = append(it.Items, child)
			p = next
		}
	case TypeInteger:
		it.Int = int64(int32(binary.BigEndian.Uint32(v)))
	case TypeEnumeration, TypeInterval:
		it.Int = int64(binary.BigEndian.Uint32(v))
	case TypeLongInteger, TypeDateTime:
		it.Int = int64(binary.BigEndian.Uint64(v))
	case TypeBoolean:
		x := binary.BigEndian.Uint64(v)
		if x > 1 {
			return fail("Boolean value %d (must be 0 or 1)", x)
		}
		it.Int = int64(x)
	case TypeBigInteger:
		if vlen == 0 || vlen%8 != 0 {
			return fail("BigInteger of length %d (must be a non-zero multiple of 8)", vlen)
		}
		it.Bytes = v
	case TypeTextString:
		if !utf8.Valid(v) {
			return fail("TextString is not UTF-8")
		}
		it.Bytes = v
	case TypeByteString:
		it.Bytes = v
	}
	return it, end, nil
}

// Encode returns the TTLV encoding of it. It refuses items that Decode
// would refuse (a bad tag or type, a Boolean other than 0 or 1, a
// BigInteger whose length is not a multiple of 8, text that is not UTF-8,
// values out of range for their type, nesting deeper than MaxDepth).
func Encode(it Item) ([]byte, error) {
	return AppendEncode(nil, it)
}

// AppendEncode appends the encoding of it to dst.
func AppendEncode(dst []byte, it Item) ([]byte, error) {
	return appendItem(dst, &it, 0)
}

func appendItem(dst []byte, it *Item, depth int) ([]byte, error) {
	fail := func(format string, a ...any) ([]byte, error) {
		return nil, fmt.Errorf("kmip: encode tag %v: %s", it.Tag, fmt.Sprintf(format, a...))
	}
	if !validTag(it.Tag) {
		return fail("not a KMIP tag")
	}
	start := len(dst)
	dst = append(dst, byte(it.Tag>>16), byte(it.Tag>>8), byte(it.Tag), byte(it.Type), 0, 0, 0, 0)
	var err error
	switch it.Type {
	case TypeStructure:
		if depth >= MaxDepth {
			return fail("structures nested more than %d deep", MaxDepth)
		}
		for i := range it.Items {
			if dst, err = appendItem(dst, &it.Items[i], depth+1); err != nil {
				return nil, err
			}
		}
	case TypeInteger:
		if it.Int < -1<<31 || it.Int > 1<<31-1 {
			return fail("Integer %d out of range", it.Int)
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(int32(it.Int)))
	case TypeEnumeration, TypeInterval:
		if it.Int < 0 || it.Int > 1<<32-1 {
			return fail("%v %d out of range", it.Type, it.Int)
		}
		dst = binary.BigEndian.AppendUint32(dst, uint32(it.Int))
	case TypeLongInteger, TypeDateTime:
		dst = binary.BigEndian.AppendUint64(dst, uint64(it.Int))
	case TypeBoolean:
		if it.Int != 0 && it.Int != 1 {
			return fail("Boolean %d", it.Int)
		}
		dst = binary.BigEndian.AppendUint64(dst, uint64(it.Int))
	case TypeBigInteger:
		if len(it.Bytes) == 0 || len(it.Bytes)%8 != 0 {
			return fail("BigInteger of %d bytes", len(it.Bytes))
		}
		dst = append(dst, it.Bytes...)
	case TypeTextString:
		if !utf8.Valid(it.Bytes) {
			return fail("TextString is not UTF-8")
		}
		dst = append(dst, it.Bytes...)
	case TypeByteString:
		dst = append(dst, it.Bytes...)
	default:
		return fail("unknown type 0x%02X", uint8(it.Type))
	}
	n := len(dst) - start - 8
	if n > MaxMessageSize {
		return fail("value of %d bytes above the message limit", n)
	}
	binary.BigEndian.PutUint32(dst[start+4:], uint32(n))
	for (len(dst)-start)%8 != 0 {
		dst = append(dst, 0)
	}
	return dst, nil
}
