package esxi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// DefaultIV is the IV the real host configuration holds: "WMV_" and 8
// zero bytes.
var DefaultIV = []byte("WMV_\x00\x00\x00\x00\x00\x00\x00\x00")

// WriterOptions describe an envelope to write.
type WriterOptions struct {
	KeyID   string      // vmware.keyInfo (required)
	IV      []byte      // 12 bytes; nil: DefaultIV
	Context string      // additional data after the header (ContextConfiguration for a host configuration)
	Extra   []Attribute // more attributes, written after the four required ones
	// Fill supplies the padding and the unused part of the crypto footer
	// block (ESXi leaves what looks like random bytes there); nil: zeros.
	Fill io.Reader
}

// Writer writes an envelope: the inverse of Decrypt, for fixtures and
// tests. Write streams the payload; Close pads it to whole blocks, adds
// the crypto footer, and writes the AEAD footer with the tag. Memory is
// one chunk.
type Writer struct {
	w      io.Writer
	s      *gcmStream
	aad    []byte
	fill   io.Reader
	buf    []byte // pending plaintext (< one chunk)
	n      int64  // payload bytes written
	closed bool
	err    error
}

// NewWriter writes the envelope header to w and returns the Writer for the
// payload.
func NewWriter(w io.Writer, key []byte, opt WriterOptions) (*Writer, error) {
	if len(key) != keySize {
		return nil, fmt.Errorf("esxi: key of %d bytes, want %d", len(key), keySize)
	}
	if opt.KeyID == "" {
		return nil, errors.New("esxi: an envelope needs a key id")
	}
	iv := opt.IV
	if iv == nil {
		iv = DefaultIV
	}
	if len(iv) != gcmIVSize {
		return nil, fmt.Errorf("esxi: IV of %d bytes, want %d", len(iv), gcmIVSize)
	}
	if len(opt.Context) > MaxContext {
		return nil, fmt.Errorf("esxi: context longer than %d bytes", MaxContext)
	}
	attrs := append([]Attribute{
		{Type: AttrBytes, Name: AttrIV, Value: iv},
		{Type: AttrString, Name: AttrKeyInfo, Value: []byte(opt.KeyID)},
		{Type: AttrString, Name: AttrCipherName, Value: []byte(CipherAES256GCM)},
		{Type: AttrBytes, Name: AttrKeyHash, Value: KeyHash(CipherAES256GCM, key)},
	}, opt.Extra...)
	hdr, err := MarshalHeader(attrs)
	if err != nil {
		return nil, err
	}
	s, err := newGCMStream(key, iv, streamChunk)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(hdr); err != nil {
		return nil, err
	}
	fill := opt.Fill
	if fill == nil {
		fill = zeroReader{}
	}
	return &Writer{w: w, s: s, aad: append(hdr, opt.Context...), fill: fill, buf: make([]byte, 0, streamChunk)}, nil
}

// MarshalHeader returns the header blocks for attrs: the magic, the
// header size and version, the attributes, zeros to a whole block.
func MarshalHeader(attrs []Attribute) ([]byte, error) {
	a := MarshalAttributes(attrs)
	n := (attrStart + len(a) + BlockSize - 1) / BlockSize * BlockSize
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("esxi: attributes need %d header bytes, more than %d", n, MaxHeaderSize)
	}
	h := make([]byte, n)
	copy(h, headerMagic)
	binary.LittleEndian.PutUint32(h[hdrSizeOff:], uint32(n-attrStart))
	binary.LittleEndian.PutUint32(h[hdrVersionOff:], EnvelopeVersion)
	copy(h[attrStart:], a)
	return h, nil
}

// Write encrypts payload bytes.
func (wr *Writer) Write(p []byte) (int, error) {
	if wr.closed {
		return 0, errors.New("esxi: write after Close")
	}
	if wr.err != nil {
		return 0, wr.err
	}
	total := len(p)
	for len(p) > 0 {
		k := min(len(p), streamChunk-len(wr.buf))
		wr.buf = append(wr.buf, p[:k]...)
		p = p[k:]
		wr.n += int64(k)
		if len(wr.buf) == streamChunk {
			if err := wr.flush(); err != nil {
				return total - len(p), err
			}
		}
	}
	return total, nil
}

func (wr *Writer) flush() error {
	if len(wr.buf) == 0 {
		return nil
	}
	wr.s.xor(wr.buf)
	if err := wr.s.hash(wr.buf); err != nil {
		wr.err = err
		return err
	}
	_, err := wr.w.Write(wr.buf)
	wr.buf = wr.buf[:0]
	if err != nil {
		wr.err = err
	}
	return err
}

// Close pads the payload to whole blocks, adds the crypto footer block and
// writes the AEAD footer. It does not close the underlying writer.
func (wr *Writer) Close() error {
	if wr.closed {
		return nil
	}
	wr.closed = true
	if wr.err != nil {
		return wr.err
	}
	pad := (BlockSize - wr.n%BlockSize) % BlockSize
	tail := make([]byte, pad+BlockSize)
	if _, err := io.ReadFull(wr.fill, tail[:pad+BlockSize-cryptoFooterLen]); err != nil {
		return fmt.Errorf("esxi: fill: %w", err)
	}
	f := tail[pad+BlockSize-cryptoFooterLen:]
	copy(f, cryptoFooterMagic)
	binary.LittleEndian.PutUint32(f[0x1f8:], uint32(pad))
	binary.LittleEndian.PutUint32(f[0x1fc:], CryptoFooterVersion)
	for len(tail) > 0 {
		k := min(len(tail), streamChunk-len(wr.buf))
		wr.buf = append(wr.buf, tail[:k]...)
		tail = tail[k:]
		if len(wr.buf) == streamChunk || len(tail) == 0 {
			if err := wr.flush(); err != nil {
				return err
			}
		}
	}
	tag := wr.s.tag(wr.aad)
	foot := make([]byte, BlockSize)
	copy(foot, aeadFooterMagic)
	copy(foot[footTagOff:], tag[:])
	binary.LittleEndian.PutUint32(foot[footTagSizeOff:], gcmTagSize)
	binary.LittleEndian.PutUint32(foot[footVersionOff:], AeadFooterVersion)
	_, err := wr.w.Write(foot)
	return err
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
