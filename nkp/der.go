package nkp

import (
	"encoding/asn1"
	"fmt"
	"unicode/utf16"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// A small DER walker over encoding/asn1: every element is read as an
// asn1.RawValue (encoding/asn1 checks each length against the bytes left),
// its class, tag and form are checked, and lists are bounded by the caller.

func corruptf(field, format string, a ...any) error {
	return fmt.Errorf("NKP backup: %s: %s: %w", field, fmt.Sprintf(format, a...), keysafe.ErrCorrupt)
}

func unsupportedf(field, format string, a ...any) error {
	return fmt.Errorf("NKP backup: %s: %s: %w", field, fmt.Sprintf(format, a...), keysafe.ErrUnsupported)
}

// next reads one element from b and returns it with the bytes after it.
func next(b []byte, field string) (asn1.RawValue, []byte, error) {
	var rv asn1.RawValue
	if len(b) == 0 {
		return rv, nil, corruptf(field, "missing")
	}
	rest, err := asn1.Unmarshal(b, &rv)
	if err != nil {
		if len(b) >= 2 && b[1] == 0x80 && b[0]&0x20 != 0 {
			// BER indefinite length (some non-Java tools): well-formed, not read.
			return rv, nil, unsupportedf(field, "BER indefinite-length encoding is not supported (DER only)")
		}
		return rv, nil, corruptf(field, "%v", err)
	}
	return rv, rest, nil
}

// expect reads one element of the given universal tag (or context tag when
// ctx is true) and form.
func expect(b []byte, field string, ctx bool, tag int, compound bool) (asn1.RawValue, []byte, error) {
	rv, rest, err := next(b, field)
	if err != nil {
		return rv, nil, err
	}
	class := asn1.ClassUniversal
	if ctx {
		class = asn1.ClassContextSpecific
	}
	// An OCTET STRING may be constructed in BER; octets() joins it.
	okForm := rv.IsCompound == compound || (!ctx && tag == asn1.TagOctetString)
	if rv.Class != class || rv.Tag != tag || !okForm {
		return rv, nil, corruptf(field, "found class %d tag %d, want %s", rv.Class, rv.Tag, tagName(ctx, tag))
	}
	return rv, rest, nil
}

func tagName(ctx bool, tag int) string {
	if ctx {
		return fmt.Sprintf("[%d]", tag)
	}
	switch tag {
	case asn1.TagSequence:
		return "SEQUENCE"
	case asn1.TagSet:
		return "SET"
	case asn1.TagOctetString:
		return "OCTET STRING"
	case asn1.TagOID:
		return "OBJECT IDENTIFIER"
	case asn1.TagInteger:
		return "INTEGER"
	}
	return fmt.Sprintf("tag %d", tag)
}

// sequence reads a SEQUENCE and returns its body and what follows it.
func sequence(b []byte, field string) (body, rest []byte, err error) {
	rv, rest, err := expect(b, field, false, asn1.TagSequence, true)
	return rv.Bytes, rest, err
}

// whole reads a SEQUENCE that must fill b.
func whole(b []byte, field string) ([]byte, error) {
	body, rest, err := sequence(b, field)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, corruptf(field, "%d bytes after the end", len(rest))
	}
	return body, nil
}

// end checks that nothing is left in a body.
func end(b []byte, field string) error {
	if len(b) != 0 {
		return corruptf(field, "%d unexpected bytes", len(b))
	}
	return nil
}

func oid(b []byte, field string) (asn1.ObjectIdentifier, []byte, error) {
	rv, rest, err := expect(b, field, false, asn1.TagOID, false)
	if err != nil {
		return nil, nil, err
	}
	var o asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(rv.FullBytes, &o); err != nil {
		return nil, nil, corruptf(field, "%v", err)
	}
	return o, rest, nil
}

// octets reads an OCTET STRING, joining the pieces of a BER constructed
// one (at most maxNesting levels deep).
func octets(b []byte, field string) ([]byte, []byte, error) {
	rv, rest, err := expect(b, field, false, asn1.TagOctetString, false)
	if err != nil {
		return nil, nil, err
	}
	v, err := octetValue(rv, field, 0)
	return v, rest, err
}

func octetValue(rv asn1.RawValue, field string, depth int) ([]byte, error) {
	if !rv.IsCompound {
		return rv.Bytes, nil
	}
	if depth >= maxNesting {
		return nil, unsupportedf(field, "constructed OCTET STRING nested deeper than %d", maxNesting)
	}
	var out []byte
	b := rv.Bytes
	for n := 0; len(b) > 0; n++ {
		if n >= maxPieces {
			return nil, unsupportedf(field, "more than %d OCTET STRING pieces", maxPieces)
		}
		p, rest, err := expect(b, field, false, asn1.TagOctetString, false)
		if err != nil {
			return nil, err
		}
		v, err := octetValue(p, field, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, v...)
		b = rest
	}
	return out, nil
}

// smallInt reads a non-negative INTEGER. big is true when it does not fit
// in 31 bits (callers refuse it against a cap).
func smallInt(b []byte, field string) (v int, big bool, rest []byte, err error) {
	rv, rest, err := expect(b, field, false, asn1.TagInteger, false)
	if err != nil {
		return 0, false, nil, err
	}
	body := rv.Bytes
	if len(body) == 0 {
		return 0, false, nil, corruptf(field, "empty INTEGER")
	}
	if body[0]&0x80 != 0 {
		return 0, false, nil, corruptf(field, "negative INTEGER")
	}
	if len(body) > 1 && body[0] == 0 && body[1]&0x80 == 0 {
		return 0, false, nil, corruptf(field, "INTEGER not minimally encoded")
	}
	for len(body) > 1 && body[0] == 0 {
		body = body[1:]
	}
	if len(body) > 4 || (len(body) == 4 && body[0]&0x80 != 0) {
		return 0, true, rest, nil
	}
	for _, c := range body {
		v = v<<8 | int(c)
	}
	return v, false, rest, nil
}

// algorithm reads an AlgorithmIdentifier: the OID and the raw parameters
// (nil when absent).
func algorithm(b []byte, field string) (asn1.ObjectIdentifier, []byte, []byte, error) {
	body, rest, err := sequence(b, field)
	if err != nil {
		return nil, nil, nil, err
	}
	o, params, err := oid(body, field+" algorithm")
	if err != nil {
		return nil, nil, nil, err
	}
	if len(params) == 0 {
		return o, nil, rest, nil
	}
	p, after, err := next(params, field+" parameters")
	if err != nil {
		return nil, nil, nil, err
	}
	if len(after) != 0 {
		return nil, nil, nil, corruptf(field, "bytes after the parameters")
	}
	return o, p.FullBytes, rest, nil
}

// stringValue decodes a BMPString, UTF8String, PrintableString or
// IA5String attribute value.
func stringValue(rv asn1.RawValue, field string) (string, error) {
	if rv.Class != asn1.ClassUniversal || rv.IsCompound {
		return "", corruptf(field, "not a string")
	}
	switch rv.Tag {
	case asn1.TagBMPString:
		if len(rv.Bytes)%2 != 0 {
			return "", corruptf(field, "BMPString of odd length %d", len(rv.Bytes))
		}
		u := make([]uint16, len(rv.Bytes)/2)
		for i := range u {
			u[i] = uint16(rv.Bytes[2*i])<<8 | uint16(rv.Bytes[2*i+1])
		}
		return string(utf16.Decode(u)), nil
	case asn1.TagUTF8String, asn1.TagPrintableString, asn1.TagIA5String:
		return string(rv.Bytes), nil
	}
	return "", corruptf(field, "string of tag %d", rv.Tag)
}
