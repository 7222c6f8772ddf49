package esxi

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Envelope layout (docs/formats.md §16).
const (
	// BlockSize is the envelope's block: header, data and footer are whole
	// blocks.
	BlockSize = 4096
	// EnvelopeVersion is the only header version known (0x1fc).
	EnvelopeVersion = 2
	// AeadFooterVersion is the only AEAD footer version known.
	AeadFooterVersion = 1
	// CryptoFooterVersion is the only crypto footer version known (the
	// footer at the end of the plaintext).
	CryptoFooterVersion = 2
	// CipherAES256GCM is the only cipher known.
	CipherAES256GCM = "AES-256-GCM"
	// ContextConfiguration is the context (additional data after the
	// header) of the host configuration local.tgz.ve.
	ContextConfiguration = "ESXConfiguration"

	// MaxHeaderSize caps the header blocks (real ones are one block).
	MaxHeaderSize = 256 << 10
	// MaxAttributes caps the attributes of a header.
	MaxAttributes = 256
	// MaxAttrName caps an attribute name (bytes, without the NUL).
	MaxAttrName = 255
	// MaxAttrValue caps a string or bytes attribute value.
	MaxAttrValue = 64 << 10
	// MaxContext caps a context string.
	MaxContext = 4096

	headerMagic       = "DataTransformEnvelope"
	aeadFooterMagic   = "DataTransformAeadFooter"
	cryptoFooterMagic = "DataTransformCryptoFooter"
	attrStart         = 0x200 // attributes start here; the fixed header is the first 512 bytes
	hdrSizeOff        = 0x1f8
	hdrVersionOff     = 0x1fc
	footTagOff        = 0x20
	footTagSizeOff    = 0xff8
	footVersionOff    = 0xffc
	cryptoFooterLen   = 512 // the crypto footer fills the last 512 bytes of the plaintext
)

// Attribute names of the envelope header.
const (
	AttrKeyInfo    = "vmware.keyInfo"    // string: the key id
	AttrCipherName = "vmware.cipherName" // string: "AES-256-GCM"
	AttrKeyHash    = "vmware.keyHash"    // bytes: SHA-256(cipherName || key)
	AttrIV         = "vmware.iv"         // bytes: the 12-byte GCM IV
)

// KnownContexts are the contexts tried when the caller names none: none
// (core dumps, as far as known) and the host configuration's.
var KnownContexts = []string{"", ContextConfiguration}

// AttrType is the type byte of an attribute.
type AttrType uint8

// Attribute types. 0x01-0x0a are fixed-size numbers (their meaning is
// inferred from their sizes: docs/formats.md §16); 0x0b and 0x0c are certain.
const (
	AttrEnd     AttrType = 0x00
	AttrUint8   AttrType = 0x01
	AttrUint16  AttrType = 0x02
	AttrUint32  AttrType = 0x03
	AttrUint64  AttrType = 0x04
	AttrInt8    AttrType = 0x05
	AttrInt16   AttrType = 0x06
	AttrInt32   AttrType = 0x07
	AttrInt64   AttrType = 0x08
	AttrFloat32 AttrType = 0x09
	AttrFloat64 AttrType = 0x0a
	AttrString  AttrType = 0x0b
	AttrBytes   AttrType = 0x0c
)

var fixedSize = [...]int{AttrUint8: 1, AttrUint16: 2, AttrUint32: 4, AttrUint64: 8,
	AttrInt8: 1, AttrInt16: 2, AttrInt32: 4, AttrInt64: 8, AttrFloat32: 4, AttrFloat64: 8}

var attrTypeNames = [...]string{"end", "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f32", "f64", "string", "bytes"}

func (t AttrType) String() string {
	if int(t) < len(attrTypeNames) {
		return attrTypeNames[t]
	}
	return fmt.Sprintf("type 0x%02x", uint8(t))
}

// Attribute is one attribute of an envelope header.
type Attribute struct {
	Type   AttrType `json:"type"`
	Flag   uint8    `json:"flag"`
	Name   string   `json:"name"`
	Value  []byte   `json:"value"`  // string: without its NUL; bytes: as stored; numbers: little-endian as stored
	Offset int64    `json:"offset"` // of the attribute's type byte in the file
}

// Text is the value for people: a string as is, bytes in hex, numbers in
// decimal.
func (a Attribute) Text() string {
	v := a.Value
	switch a.Type {
	case AttrString:
		return string(v)
	case AttrBytes:
		return hex.EncodeToString(v)
	case AttrUint8:
		return strconv.FormatUint(uint64(v[0]), 10)
	case AttrUint16:
		return strconv.FormatUint(uint64(binary.LittleEndian.Uint16(v)), 10)
	case AttrUint32:
		return strconv.FormatUint(uint64(binary.LittleEndian.Uint32(v)), 10)
	case AttrUint64:
		return strconv.FormatUint(binary.LittleEndian.Uint64(v), 10)
	case AttrInt8:
		return strconv.FormatInt(int64(int8(v[0])), 10)
	case AttrInt16:
		return strconv.FormatInt(int64(int16(binary.LittleEndian.Uint16(v))), 10)
	case AttrInt32:
		return strconv.FormatInt(int64(int32(binary.LittleEndian.Uint32(v))), 10)
	case AttrInt64:
		return strconv.FormatInt(int64(binary.LittleEndian.Uint64(v)), 10)
	case AttrFloat32:
		return strconv.FormatFloat(float64(math.Float32frombits(binary.LittleEndian.Uint32(v))), 'g', -1, 32)
	case AttrFloat64:
		return strconv.FormatFloat(math.Float64frombits(binary.LittleEndian.Uint64(v)), 'g', -1, 64)
	}
	return hex.EncodeToString(v)
}

// ParseAttributes reads the attribute list at the start of b (the header
// from offset 0x200 to its end); base is the file offset of b[0], file
// the name for errors. It returns the attributes and the bytes used
// (including the terminator). An attribute that runs past b, an unknown
// type, a reserved field that is not zero, an empty, overlong or
// duplicated name, more than MaxAttributes, or no terminator are errors
// (keysafe.ErrCorrupt; an unknown type keysafe.ErrUnsupported).
func ParseAttributes(file string, b []byte, base int64) ([]Attribute, int, error) {
	var attrs []Attribute
	p := 0
	for {
		at := base + int64(p)
		if p+4 > len(b) {
			return nil, 0, corruptf(file, at, "attributes", "attribute list runs past the header block (no terminator)")
		}
		t, flag := AttrType(b[p]), b[p+1]
		if t == AttrEnd {
			if flag != 0 || b[p+2] != 0 || b[p+3] != 0 {
				return nil, 0, corruptf(file, at, "attributes", "terminator is not 4 zero bytes")
			}
			return attrs, p + 4, nil
		}
		if len(attrs) == MaxAttributes {
			return nil, 0, unsupportedf(file, at, "attributes", "more than %d attributes", MaxAttributes)
		}
		if b[p+2] != 0 || b[p+3] != 0 {
			return nil, 0, corruptf(file, at+2, "attribute reserved field", "0x%02x%02x, want 0", b[p+3], b[p+2])
		}
		if t > AttrBytes {
			return nil, 0, unsupportedf(file, at, "attribute type", "unknown type 0x%02x", uint8(t))
		}
		p += 4
		nl := bytes.IndexByte(b[p:min(len(b), p+MaxAttrName+1)], 0)
		if nl < 0 {
			if p+MaxAttrName+1 <= len(b) {
				return nil, 0, corruptf(file, base+int64(p), "attribute name", "longer than %d bytes", MaxAttrName)
			}
			return nil, 0, corruptf(file, base+int64(p), "attribute name", "runs past the header block")
		}
		name := string(b[p : p+nl])
		if err := checkAttrName(name); err != nil {
			return nil, 0, corruptf(file, base+int64(p), "attribute name", "%q: %v", name, err)
		}
		for _, a := range attrs {
			if a.Name == name {
				return nil, 0, corruptf(file, base+int64(p), "attribute "+name, "appears twice")
			}
		}
		p += nl + 1
		field := "attribute " + name
		var v []byte
		switch t {
		case AttrString:
			end := bytes.IndexByte(b[p:min(len(b), p+MaxAttrValue+1)], 0)
			if end < 0 {
				if p+MaxAttrValue+1 <= len(b) {
					return nil, 0, unsupportedf(file, base+int64(p), field, "string longer than %d bytes", MaxAttrValue)
				}
				return nil, 0, corruptf(file, base+int64(p), field, "string runs past the header block")
			}
			v = b[p : p+end]
			p += end + 1
		case AttrBytes:
			if p+8 > len(b) {
				return nil, 0, corruptf(file, base+int64(p), field, "length runs past the header block")
			}
			n := binary.LittleEndian.Uint64(b[p:])
			if n > MaxAttrValue {
				return nil, 0, corruptf(file, base+int64(p), field, "length %d is more than %d", n, MaxAttrValue)
			}
			p += 8
			if uint64(len(b)-p) < n {
				return nil, 0, corruptf(file, base+int64(p), field, "%d bytes run past the header block", n)
			}
			v = b[p : p+int(n)]
			p += int(n)
		default:
			n := fixedSize[t]
			if p+n > len(b) {
				return nil, 0, corruptf(file, base+int64(p), field, "value runs past the header block")
			}
			v = b[p : p+n]
			p += n
		}
		attrs = append(attrs, Attribute{Type: t, Flag: flag, Name: name, Value: append([]byte(nil), v...), Offset: at})
	}
}

func checkAttrName(name string) error {
	if name == "" {
		return fmt.Errorf("empty")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c > 0x7e {
			return fmt.Errorf("byte 0x%02x is not printable ASCII", c)
		}
	}
	return nil
}

// MarshalAttributes writes attrs as the header stores them, terminator
// included: ParseAttributes of the result gives attrs back.
func MarshalAttributes(attrs []Attribute) []byte {
	var b []byte
	for _, a := range attrs {
		b = append(b, byte(a.Type), a.Flag, 0, 0)
		b = append(b, a.Name...)
		b = append(b, 0)
		switch a.Type {
		case AttrString:
			b = append(b, a.Value...)
			b = append(b, 0)
		case AttrBytes:
			b = binary.LittleEndian.AppendUint64(b, uint64(len(a.Value)))
			b = append(b, a.Value...)
		default:
			b = append(b, a.Value...)
		}
	}
	return append(b, 0, 0, 0, 0)
}

// Envelope is a parsed DataTransformEnvelope: header, attributes and
// AEAD footer. Parsing needs no key; Decrypt and Verify do.
type Envelope struct {
	File       string      // name for errors
	Offset     int64       // where the envelope starts in the input
	Size       int64       // envelope bytes
	Version    uint32      // header version (2)
	HeaderSize uint32      // the field at 0x1f8: header bytes after the first 512
	Attributes []Attribute // in stored order

	KeyID      string // vmware.keyInfo
	CipherName string // vmware.cipherName
	KeyHash    []byte // vmware.keyHash
	IV         []byte // vmware.iv

	Tag           []byte // the GCM tag from the AEAD footer
	FooterVersion uint32 // AEAD footer version (1)
	DataOffset    int64  // ciphertext offset, from the envelope start
	DataSize      int64  // ciphertext bytes (whole blocks, ending with the crypto footer block)

	header []byte // the stored header blocks: the start of the additional data
	r      io.ReaderAt
}

// Attr returns the attribute named name.
func (e *Envelope) Attr(name string) (Attribute, bool) {
	for _, a := range e.Attributes {
		if a.Name == name {
			return a, true
		}
	}
	return Attribute{}, false
}

// Parse reads the envelope that fills r[0:size].
func Parse(file string, r io.ReaderAt, size int64) (*Envelope, error) {
	return ParseAt(file, r, 0, size)
}

// ParseAt reads the envelope that fills r[off:off+size]: header,
// attributes, AEAD footer. Every field is checked (docs/formats.md §16);
// errors are *FormatError naming the file, offset and field, wrapping
// keysafe.ErrCorrupt, or keysafe.ErrUnsupported for a version, cipher or
// size vmcrypt does not handle.
func ParseAt(file string, r io.ReaderAt, off, size int64) (*Envelope, error) {
	if off < 0 || size < 0 {
		return nil, corruptf(file, off, "envelope", "negative offset or size")
	}
	first := make([]byte, BlockSize)
	if err := readFullAt(r, first[:min(int64(BlockSize), size)], off); err != nil {
		return nil, fmt.Errorf("%s: reading the envelope header: %w", file, err)
	}
	if size < int64(len(headerMagic)) || string(first[:len(headerMagic)]) != headerMagic {
		return nil, corruptf(file, off, "magic", "not a DataTransformEnvelope")
	}
	if size < 3*BlockSize {
		return nil, corruptf(file, off, "size", "%d bytes, fewer than the 3 blocks of header, data and footer (truncated?)", size)
	}
	e := &Envelope{File: file, Offset: off, Size: size, r: r}
	e.Version = binary.LittleEndian.Uint32(first[hdrVersionOff:])
	if e.Version != EnvelopeVersion {
		return nil, unsupportedf(file, off+hdrVersionOff, "header version", "%d, want %d", e.Version, EnvelopeVersion)
	}
	e.HeaderSize = binary.LittleEndian.Uint32(first[hdrSizeOff:])
	hlen := int64(e.HeaderSize) + attrStart
	switch {
	case hlen%BlockSize != 0:
		return nil, corruptf(file, off+hdrSizeOff, "header size", "%d: 512 + it is not whole %d-byte blocks", e.HeaderSize, BlockSize)
	case hlen > MaxHeaderSize:
		return nil, unsupportedf(file, off+hdrSizeOff, "header size", "%d: more than the %d bytes allowed", e.HeaderSize, MaxHeaderSize)
	case hlen+2*BlockSize > size:
		return nil, corruptf(file, off+hdrSizeOff, "header size", "%d: header, a data block and the footer do not fit in %d bytes", e.HeaderSize, size)
	}
	e.header = make([]byte, hlen)
	copy(e.header, first)
	if hlen > BlockSize {
		if err := readFullAt(r, e.header[BlockSize:], off+BlockSize); err != nil {
			return nil, fmt.Errorf("%s: reading the envelope header: %w", file, err)
		}
	}
	attrs, _, err := ParseAttributes(file, e.header[attrStart:], off+attrStart)
	if err != nil {
		return nil, err
	}
	e.Attributes = attrs
	if err := e.required(); err != nil {
		return nil, err
	}
	if size%BlockSize != 0 {
		return nil, corruptf(file, off+size, "size", "%d bytes is not whole %d-byte blocks (truncated footer?)", size, BlockSize)
	}
	foot := make([]byte, BlockSize)
	fo := off + size - BlockSize
	if err := readFullAt(r, foot, fo); err != nil {
		return nil, fmt.Errorf("%s: reading the AEAD footer: %w", file, err)
	}
	if string(foot[:len(aeadFooterMagic)]) != aeadFooterMagic {
		return nil, corruptf(file, fo, "AEAD footer", "the last block does not start %q (truncated footer?)", aeadFooterMagic)
	}
	e.FooterVersion = binary.LittleEndian.Uint32(foot[footVersionOff:])
	if e.FooterVersion != AeadFooterVersion {
		return nil, unsupportedf(file, fo+footVersionOff, "AEAD footer version", "%d, want %d", e.FooterVersion, AeadFooterVersion)
	}
	ts := binary.LittleEndian.Uint32(foot[footTagSizeOff:])
	if ts != gcmTagSize {
		if ts == 0 || ts > footTagSizeOff-footTagOff {
			return nil, corruptf(file, fo+footTagSizeOff, "AEAD footer tag size", "%d", ts)
		}
		return nil, unsupportedf(file, fo+footTagSizeOff, "AEAD footer tag size", "%d, want %d", ts, gcmTagSize)
	}
	e.Tag = append([]byte(nil), foot[footTagOff:footTagOff+gcmTagSize]...)
	e.DataOffset = hlen
	e.DataSize = size - hlen - BlockSize
	if e.DataSize < BlockSize {
		return nil, corruptf(file, off+hlen, "data", "%d bytes: no room for the crypto footer block", e.DataSize)
	}
	if e.DataSize > maxGCMData {
		return nil, unsupportedf(file, off+hlen, "data", "%d bytes: more than AES-GCM allows under one IV", e.DataSize)
	}
	return e, nil
}

// required checks the required attributes and their types.
func (e *Envelope) required() error {
	get := func(name string, t AttrType) (Attribute, error) {
		a, ok := e.Attr(name)
		if !ok {
			return a, corruptf(e.File, e.Offset+attrStart, "attribute "+name, "required attribute missing")
		}
		if a.Type != t {
			return a, corruptf(e.File, e.Offset+a.Offset, "attribute "+name, "type %s, want %s", a.Type, t)
		}
		return a, nil
	}
	ki, err := get(AttrKeyInfo, AttrString)
	if err != nil {
		return err
	}
	if len(ki.Value) == 0 {
		return corruptf(e.File, e.Offset+ki.Offset, "attribute "+AttrKeyInfo, "empty key id")
	}
	cn, err := get(AttrCipherName, AttrString)
	if err != nil {
		return err
	}
	kh, err := get(AttrKeyHash, AttrBytes)
	if err != nil {
		return err
	}
	iv, err := get(AttrIV, AttrBytes)
	if err != nil {
		return err
	}
	e.KeyID, e.CipherName = string(ki.Value), string(cn.Value)
	if e.CipherName != CipherAES256GCM {
		return unsupportedf(e.File, e.Offset+cn.Offset, "attribute "+AttrCipherName, "unknown cipher %q (only %s is known)", e.CipherName, CipherAES256GCM)
	}
	if len(kh.Value) != sha256.Size {
		return corruptf(e.File, e.Offset+kh.Offset, "attribute "+AttrKeyHash, "%d bytes, want %d", len(kh.Value), sha256.Size)
	}
	if len(iv.Value) != gcmIVSize {
		return corruptf(e.File, e.Offset+iv.Offset, "attribute "+AttrIV, "%d bytes, want %d", len(iv.Value), gcmIVSize)
	}
	e.KeyHash, e.IV = kh.Value, iv.Value
	return nil
}

// KeyHash returns SHA-256(cipherName || key): what vmware.keyHash holds
// for the right key.
func KeyHash(cipherName string, key []byte) []byte {
	h := sha256.New()
	h.Write([]byte(cipherName))
	h.Write(key)
	return h.Sum(nil)
}

// CheckKey compares key with the envelope's key hash: a *WrongKeyError
// (keysafe.ErrWrongKey) when it differs. Nothing is decrypted.
func (e *Envelope) CheckKey(key []byte) error {
	if len(key) != keySize {
		return fmt.Errorf("%s: key of %d bytes, want %d: %w", e.File, len(key), keySize, keysafe.ErrWrongKey)
	}
	if subtle.ConstantTimeCompare(KeyHash(e.CipherName, key), e.KeyHash) != 1 {
		return fmt.Errorf("%s: the key does not match the envelope's key hash (key id %s): %w", e.File, e.KeyID, keysafe.ErrWrongKey)
	}
	return nil
}

// DecryptOptions tune Decrypt and Verify.
type DecryptOptions struct {
	// Contexts are the candidate contexts (additional data after the
	// header); the tag must verify under one of them. None: KnownContexts.
	Contexts []string
	// Progress, when set, is called after each chunk with the ciphertext
	// bytes done and the total.
	Progress func(done, total int64)
}

func (o *DecryptOptions) aads(header []byte) ([][]byte, error) {
	ctx := o.Contexts
	if len(ctx) == 0 {
		ctx = KnownContexts
	}
	aads := make([][]byte, len(ctx))
	for i, c := range ctx {
		if len(c) > MaxContext {
			return nil, fmt.Errorf("context of %d bytes, more than %d: %w", len(c), MaxContext, keysafe.ErrUnsupported)
		}
		aads[i] = append(append(make([]byte, 0, len(header)+len(c)), header...), c...)
	}
	return aads, nil
}

// Result says what Decrypt found.
type Result struct {
	Context     string // the context the tag verified under
	PayloadSize int64  // plaintext bytes written
	Padding     uint32 // the crypto footer's padding
}

// Verify checks the key hash and the GCM tag without decrypting (GHASH of
// the ciphertext only) and returns the context the tag verified under.
func (e *Envelope) Verify(key []byte, opt DecryptOptions) (string, error) {
	res, err := e.run(key, nil, opt)
	if err != nil {
		return "", err
	}
	return res.Context, nil
}

// Decrypt checks the key hash (keysafe.ErrWrongKey before anything is
// read past the header), then streams the plaintext payload (without
// the padding and crypto footer) to w in chunks of 1 MiB, hashing the
// ciphertext as it goes, and checks the tag at the end.
//
// The bytes written to w are NOT authenticated until Decrypt returns nil:
// a tag mismatch (keysafe.ErrCorrupt: the key is proven right by the key
// hash, so the data is damaged) is only known after the last block. Write
// to a temporary file and publish it only on success. Memory is bounded
// (one chunk) whatever the envelope's size.
func (e *Envelope) Decrypt(key []byte, w io.Writer, opt DecryptOptions) (*Result, error) {
	if w == nil {
		w = io.Discard
	}
	return e.run(key, w, opt)
}

func (e *Envelope) run(key []byte, w io.Writer, opt DecryptOptions) (*Result, error) {
	if err := e.CheckKey(key); err != nil {
		return nil, err
	}
	aads, err := opt.aads(e.header)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.File, err)
	}
	s, err := newGCMStream(key, e.IV, streamChunk)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.File, err)
	}
	buf := make([]byte, min(streamChunk, e.DataSize))
	// The crypto footer (last plaintext block) says how much is payload:
	// decrypt it first (CTR is random access). It is trusted only once the
	// tag verifies; a bad footer is reported after the tag check.
	var payload int64
	var padding uint32
	var footErr error
	if w != nil {
		last := buf[:BlockSize]
		lastOff := e.DataSize - BlockSize
		if err := readFullAt(e.r, last, e.Offset+e.DataOffset+lastOff); err != nil {
			return nil, fmt.Errorf("%s: reading data: %w", e.File, err)
		}
		s.ctrAt(uint64(lastOff/gcmBlock)).XORKeyStream(last, last)
		payload, padding, footErr = e.cryptoFooter(last)
		clear(last)
	}
	for done := int64(0); done < e.DataSize; {
		n := min(int64(len(buf)), e.DataSize-done)
		c := buf[:n]
		if err := readFullAt(e.r, c, e.Offset+e.DataOffset+done); err != nil {
			return nil, fmt.Errorf("%s: reading data at offset %d: %w", e.File, e.Offset+e.DataOffset+done, err)
		}
		if err := s.hash(c); err != nil {
			return nil, fmt.Errorf("%s: %w", e.File, err)
		}
		if w != nil {
			s.xor(c)
			if footErr == nil && done < payload {
				if _, err := w.Write(c[:min(n, payload-done)]); err != nil {
					clear(c)
					return nil, err
				}
			}
			clear(c)
		}
		done += n
		if opt.Progress != nil {
			opt.Progress(done, e.DataSize)
		}
	}
	i := s.matchTag(e.Tag, aads...)
	if i < 0 {
		tried := opt.Contexts
		if len(tried) == 0 {
			tried = KnownContexts
		}
		return nil, corruptf(e.File, e.Offset+e.Size-BlockSize+footTagOff, "GCM tag",
			"does not verify (the key is right by its hash: the data, header or footer is damaged, or the context is not one of %s)", quoteList(tried))
	}
	if footErr != nil {
		return nil, footErr
	}
	ctx := opt.Contexts
	if len(ctx) == 0 {
		ctx = KnownContexts
	}
	return &Result{Context: ctx[i], PayloadSize: payload, Padding: padding}, nil
}

// cryptoFooter reads the last plaintext block: the payload size and the
// padding.
func (e *Envelope) cryptoFooter(last []byte) (int64, uint32, error) {
	f := last[BlockSize-cryptoFooterLen:]
	at := e.Offset + e.DataOffset + e.DataSize - cryptoFooterLen
	if string(f[:len(cryptoFooterMagic)]) != cryptoFooterMagic {
		return 0, 0, corruptf(e.File, at, "crypto footer", "the plaintext does not end with %q", cryptoFooterMagic)
	}
	if v := binary.LittleEndian.Uint32(f[0x1fc:]); v != CryptoFooterVersion {
		return 0, 0, unsupportedf(e.File, at+0x1fc, "crypto footer version", "%d, want %d", v, CryptoFooterVersion)
	}
	pad := binary.LittleEndian.Uint32(f[0x1f8:])
	if int64(pad) > e.DataSize-BlockSize {
		return 0, 0, corruptf(e.File, at+0x1f8, "crypto footer padding", "%d: more than the %d bytes before the footer", pad, e.DataSize-BlockSize)
	}
	return e.DataSize - BlockSize - int64(pad), pad, nil
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

// readFullAt reads len(b) bytes at off; a short read is
// io.ErrUnexpectedEOF.
func readFullAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// FindEnd returns the size of the envelope that starts at off in r (whose
// size is limit), for an envelope inside a larger file (a dump partition,
// an image): the first block after the header that is an AEAD footer (its
// magic, tag size 16 and version 1) ends it. It reads the data once,
// sequentially, in 1 MiB chunks.
func FindEnd(file string, r io.ReaderAt, off, limit int64) (int64, error) {
	if off < 0 || off >= limit {
		return 0, corruptf(file, off, "offset", "outside the file of %d bytes", limit)
	}
	first := make([]byte, BlockSize)
	if err := readFullAt(r, first[:min(BlockSize, limit-off)], off); err != nil {
		return 0, fmt.Errorf("%s: %w", file, err)
	}
	if string(first[:len(headerMagic)]) != headerMagic {
		return 0, corruptf(file, off, "magic", "not a DataTransformEnvelope")
	}
	hlen := int64(binary.LittleEndian.Uint32(first[hdrSizeOff:])) + attrStart
	if hlen%BlockSize != 0 || hlen > MaxHeaderSize {
		return 0, corruptf(file, off+hdrSizeOff, "header size", "%d", hlen-attrStart)
	}
	buf := make([]byte, streamChunk)
	end := min(limit, off+hlen+maxGCMData+BlockSize)
	for pos := off + hlen + BlockSize; pos < end; pos += int64(len(buf)) {
		n := min(int64(len(buf)), end-pos)
		n -= n % BlockSize
		if n == 0 {
			break
		}
		if err := readFullAt(r, buf[:n], pos); err != nil {
			return 0, fmt.Errorf("%s: %w", file, err)
		}
		for b := int64(0); b < n; b += BlockSize {
			blk := buf[b : b+BlockSize]
			if string(blk[:len(aeadFooterMagic)]) == aeadFooterMagic &&
				binary.LittleEndian.Uint32(blk[footTagSizeOff:]) == gcmTagSize &&
				binary.LittleEndian.Uint32(blk[footVersionOff:]) == AeadFooterVersion {
				return pos + b + BlockSize - off, nil
			}
		}
	}
	return 0, corruptf(file, off, "AEAD footer", "no footer block after the envelope at %d (truncated footer?)", off)
}
