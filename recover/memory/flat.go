package memory

import (
	"encoding/binary"
	"fmt"
	"io"
)

// Constants of the .vmem block container and its LZ77 codec (docs/formats.md §13).
const (
	// BlockHeaderSize is the size of a block header: u32 uncompressedSize,
	// u32 0, u32 compressedSize, u32 0. vmcrypt reads the two sizes as u64
	// (the zero words as their high halves), so a non-zero high half is a
	// size above the caps, not a silently ignored field.
	BlockHeaderSize = 16
	// BlockSize is the uncompressedSize of a full block in VMware's files.
	BlockSize = 4 << 20
	// MaxBlockSize caps uncompressedSize: the decoder holds one block in
	// memory, so this bounds its memory. VMware's full blocks are exactly
	// this size; only the last block of a file is shorter.
	MaxBlockSize = BlockSize
	// MaxDistance is the longest back-reference the grammar can express
	// (the distance escape: 0x2000 + 0xffff).
	MaxDistance = 0x2000 + 0xffff
	// MinMatch is the shortest match the grammar can express.
	MinMatch = 3
	// maxLiteralRun is the longest literal run one control byte carries.
	maxLiteralRun = 32
	// historySize is the part of the window kept from earlier blocks; it
	// covers MaxDistance.
	historySize = 0x12000
	// minWindow is the least room for blocks after the history: small
	// blocks are decoded one after another before the window slides, so
	// sliding (a historySize copy) costs at most about one byte copied per
	// byte of output, however small the blocks.
	minWindow = 64 << 10
)

// MaxCompressedSize is the largest compressedSize accepted for a block of
// uncompressedSize usize: a stream of only literal runs (one control byte
// per 32 bytes) plus slack. A larger compressedSize is corrupt: no encoder
// that stores incompressible blocks raw produces one.
func MaxCompressedSize(usize int) int { return usize + usize/16 + 66 }

// BlockHeader is a parsed block header.
type BlockHeader struct {
	UncompressedSize uint64
	CompressedSize   uint64
}

// Raw reports whether the block is stored raw (compressedSize ==
// uncompressedSize): its stream is the plain bytes.
func (h BlockHeader) Raw() bool { return h.CompressedSize == h.UncompressedSize }

// ParseBlockHeader parses and checks the 16-byte block header at the start
// of b; off (the header's offset in the file) and name go into errors only.
// A header of all zeros is the end marker and is reported as
// (BlockHeader{}, io.EOF). Errors wrap keysafe.ErrCorrupt.
func ParseBlockHeader(b []byte, off int64, name string) (BlockHeader, error) {
	if len(b) < BlockHeaderSize {
		return BlockHeader{}, corrupt(name, off, "block header", "%d bytes, a header is %d", len(b), BlockHeaderSize)
	}
	le := binary.LittleEndian
	h := BlockHeader{UncompressedSize: le.Uint64(b[0:]), CompressedSize: le.Uint64(b[8:])}
	switch {
	case h.UncompressedSize == 0 && h.CompressedSize == 0:
		return BlockHeader{}, io.EOF
	case h.UncompressedSize == 0:
		return h, corrupt(name, off, "uncompressedSize", "0 with compressedSize %d", h.CompressedSize)
	case h.UncompressedSize > MaxBlockSize:
		return h, corrupt(name, off, "uncompressedSize", "%#x exceeds the maximum %#x", h.UncompressedSize, MaxBlockSize)
	case h.CompressedSize == 0:
		return h, corrupt(name, off+8, "compressedSize", "0 for a block of %d bytes", h.UncompressedSize)
	case h.CompressedSize > uint64(MaxCompressedSize(int(h.UncompressedSize))):
		return h, corrupt(name, off+8, "compressedSize", "%#x exceeds the maximum %#x for a block of %#x bytes",
			h.CompressedSize, MaxCompressedSize(int(h.UncompressedSize)), h.UncompressedSize)
	}
	return h, nil
}

// LooksCompressed reports whether b (the first bytes of a decrypted .vmem)
// starts with a valid block header followed, for an LZ block, by a valid
// first control byte: the "plaintext's own magic" check of docs/formats.md §9.
func LooksCompressed(b []byte) bool {
	h, err := ParseBlockHeader(b, 0, "")
	if err != nil {
		return false
	}
	if h.Raw() {
		return true
	}
	return len(b) > BlockHeaderSize && b[BlockHeaderSize]>>5 <= 1
}

// IsCompressed reports whether the .vmem of size bytes in r (decrypted, or
// a plain VM's) is the compressed block container rather than flat memory:
// its first block header is valid (LooksCompressed), and so is the second
// (or the first block ends exactly at the end of the file, or at an end
// marker). A flat memory file starts with physical page 0 (zeros, or the
// real-mode interrupt table), which fails the first test.
func IsCompressed(r io.ReaderAt, size int64) bool {
	var b [BlockHeaderSize + 1]byte
	n, _ := r.ReadAt(b[:], 0)
	if !LooksCompressed(b[:n]) {
		return false
	}
	h, _ := ParseBlockHeader(b[:], 0, "")
	next := BlockHeaderSize + int64(h.CompressedSize)
	switch {
	case next == size:
		return true
	case next > size:
		return false
	}
	n, _ = r.ReadAt(b[:], next)
	if n < BlockHeaderSize {
		return allZero(b[:n])
	}
	_, err := ParseBlockHeader(b[:], next, "")
	return err == nil || err == io.EOF
}

// FlatReader decodes a .vmem block stream (docs/formats.md §13) into the flat
// memory file, as a plain VM holds it. It reads its input once, in order,
// and holds one block plus MaxDistance bytes of history: memory is bounded
// (about 2×MaxBlockSize) whatever the input size, and it allocates nothing
// per block once its buffers have grown to the largest block.
//
// Every malformed input is an *Error wrapping keysafe.ErrCorrupt that names
// the input offset: a block header with an impossible size, a block whose
// compressedSize runs past the input, a stream that ends inside a literal
// run, a length or distance escape, a stream that decodes to fewer bytes
// than uncompressedSize or holds bytes after it, a match that would write
// past uncompressedSize, a first control byte with F>>5 > 1, and bytes
// after the end marker (a header of zeros) that are not zeros.
//
// A back-reference that reaches before the start of the file reads zeros
// (docs/formats.md §13, and vmem_flatten.py does the same): it is not an error.
type FlatReader struct {
	r    io.Reader
	name string

	hdr [BlockHeaderSize]byte
	in  []byte // the current block's stream
	win []byte // earlier output (at least historySize bytes) then the current block

	inOff   int64 // input offset of the next block header
	outOff  int64 // flat offset of the current block's first byte
	pos     int   // index in win of the current block's first byte
	blkLen  int   // current block's length (output bytes in win[pos:])
	cur     int   // next unread byte of win
	blocks  int64
	rawBlks int64
	err     error // sticky: io.EOF at the end
}

// NewFlatReader returns a FlatReader over the decrypted .vmem stream r;
// name is used in errors only.
func NewFlatReader(r io.Reader, name string) *FlatReader {
	d := &FlatReader{}
	d.Reset(r, name)
	return d
}

// Reset makes d decode a new stream, keeping its buffers.
func (d *FlatReader) Reset(r io.Reader, name string) {
	*d = FlatReader{r: r, name: name, in: d.in, win: d.win}
	if d.win == nil {
		d.win = make([]byte, historySize+minWindow)
	}
	clear(d.win[:historySize]) // the window reads zeros before the start
	d.pos, d.cur = historySize, historySize
}

// Blocks returns the number of blocks decoded so far, and how many of them
// were stored raw.
func (d *FlatReader) Blocks() (total, raw int64) { return d.blocks, d.rawBlks }

// InputOffset returns the input offset up to which the stream has been
// consumed (the end of the last block decoded).
func (d *FlatReader) InputOffset() int64 { return d.inOff }

// Read reads flat memory bytes.
func (d *FlatReader) Read(p []byte) (int, error) {
	for d.cur == d.pos+d.blkLen {
		if d.err != nil {
			return 0, d.err
		}
		d.err = d.next()
	}
	n := copy(p, d.win[d.cur:d.pos+d.blkLen])
	d.cur += n
	return n, nil
}

// WriteTo writes the rest of the flat memory to w (io.Copy uses it). It
// returns a nil error at the end of a well-formed stream.
func (d *FlatReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if end := d.pos + d.blkLen; d.cur < end {
			n, err := w.Write(d.win[d.cur:end])
			d.cur += n
			total += int64(n)
			if err != nil {
				return total, err
			}
			if d.cur < end {
				return total, io.ErrShortWrite
			}
		}
		if d.err != nil {
			if d.err == io.EOF {
				return total, nil
			}
			return total, d.err
		}
		d.err = d.next()
	}
}

// Flatten decodes the .vmem block stream src into dst and returns the
// number of flat bytes written.
func Flatten(dst io.Writer, src io.Reader, name string) (int64, error) {
	return NewFlatReader(src, name).WriteTo(dst)
}

// next decodes the next block into the window, or returns io.EOF.
func (d *FlatReader) next() error {
	d.outOff += int64(d.blkLen)
	d.pos += d.blkLen
	d.blkLen = 0
	d.cur = d.pos
	off := d.inOff
	n, err := io.ReadFull(d.r, d.hdr[:])
	switch {
	case err == io.EOF:
		return io.EOF
	case err == io.ErrUnexpectedEOF:
		if allZero(d.hdr[:n]) {
			return io.EOF // zero padding shorter than a header
		}
		return corrupt(d.name, off, "block header", "input ends after %d of its %d bytes", n, BlockHeaderSize)
	case err != nil:
		return fmt.Errorf("%s: reading block header at offset %d: %w", d.name, off, err)
	}
	h, err := ParseBlockHeader(d.hdr[:], off, d.name)
	if err == io.EOF {
		return d.trailer(off)
	}
	if err != nil {
		return err
	}
	usize, csize := int(h.UncompressedSize), int(h.CompressedSize)
	if cap(d.in) < csize {
		d.in = make([]byte, csize)
	}
	in := d.in[:csize]
	if n, err := io.ReadFull(d.r, in); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return corrupt(d.name, off+8, "compressedSize", "%d bytes, but the input ends %d bytes into the block's stream", csize, n)
		}
		return fmt.Errorf("%s: reading block at offset %d: %w", d.name, off, err)
	}
	if d.pos+usize > len(d.win) {
		// Slide: the last historySize bytes become the start of the window
		// (grown if this block is larger than any before).
		w := d.win
		if historySize+usize > len(w) {
			w = make([]byte, historySize+max(usize, minWindow))
		}
		copy(w[:historySize], d.win[d.pos-historySize:d.pos])
		d.win, d.pos, d.cur = w, historySize, historySize
	}
	base := off + BlockHeaderSize
	if h.Raw() {
		copy(d.win[d.pos:], in)
		d.rawBlks++
	} else if code, ip, op := decodeLZ(d.win[:d.pos+usize], d.pos, in); code != lzOK {
		return lzError(d.name, base, ip, op-d.pos, usize, code)
	}
	d.blkLen = usize
	d.blocks++
	d.inOff = base + int64(csize)
	return nil
}

// trailer checks that everything after an end marker at off is zeros.
func (d *FlatReader) trailer(off int64) error {
	pos := off + BlockHeaderSize
	if cap(d.in) < 64<<10 {
		d.in = make([]byte, 64<<10)
	}
	buf := d.in[:cap(d.in)]
	for {
		n, err := d.r.Read(buf)
		if i := firstNonZero(buf[:n]); i >= 0 {
			return corrupt(d.name, pos+int64(i), "end marker", "non-zero byte after the end marker at offset %d", off)
		}
		pos += int64(n)
		if err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("%s: reading after the end marker at offset %d: %w", d.name, pos, err)
		}
	}
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	return firstNonZero(b) < 0
}

func firstNonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

// LZ decoding outcomes; the hot loop returns a code, the caller builds the
// error.
const (
	lzOK = iota
	lzBadFirst
	lzEmpty
	lzTruncLiteral
	lzTruncLength
	lzTruncDistance
	lzTruncDistEscape
	lzShort
	lzOverrun
	lzTrailing
)

func lzError(name string, base int64, ip, op, usize, code int) error {
	off := base + int64(ip)
	switch code {
	case lzBadFirst:
		return corrupt(name, base, "first control byte", "F>>5 > 1 (only 0 and 1 are defined)")
	case lzEmpty:
		return corrupt(name, base, "stream", "empty")
	case lzTruncLiteral:
		return corrupt(name, off, "literal run", "the block's stream ends inside a literal run")
	case lzTruncLength:
		return corrupt(name, off, "length escape", "the block's stream ends inside a length escape")
	case lzTruncDistance:
		return corrupt(name, off, "match distance", "the block's stream ends inside a match")
	case lzTruncDistEscape:
		return corrupt(name, off, "distance escape", "the block's stream ends inside a distance escape")
	case lzShort:
		return corrupt(name, off, "stream", "the block's stream ends after %d of its %d uncompressed bytes", op, usize)
	case lzOverrun:
		return corrupt(name, off, "match", "decodes past the block's %d uncompressed bytes (at %d)", usize, op)
	case lzTrailing:
		return corrupt(name, off, "stream", "%d bytes decode to the block's %d bytes, the rest of compressedSize is left over", ip, usize)
	}
	return corrupt(name, off, "stream", "decoder state %d", code)
}

// decodeLZ decodes the LZ stream in into w[op:], filling w up to len(w)
// exactly. w[:op] is the window (at least MaxDistance bytes). It returns
// lzOK, or an error code with the input index of the offending token and
// the output index reached.
func decodeLZ(w []byte, op int, in []byte) (code, ipAt, opAt int) {
	oend := len(w)
	if len(in) == 0 {
		return lzEmpty, 0, op
	}
	c := in[0]
	if c>>5 > 1 {
		return lzBadFirst, 0, op
	}
	c &= 0x1f
	ip := 1
	tok := 0 // input index of the current control byte
	for {
		if c < 0x20 {
			n := int(c) + 1
			if n > len(in)-ip {
				return lzTruncLiteral, tok, op
			}
			if n > oend-op {
				return lzOverrun, tok, op
			}
			copy(w[op:op+n], in[ip:ip+n])
			ip += n
			op += n
		} else {
			length := int(c>>5) + 2
			if length == 9 {
				for {
					if ip >= len(in) {
						return lzTruncLength, tok, op
					}
					b := in[ip]
					ip++
					length += int(b)
					if b != 0xff {
						break
					}
				}
			}
			if ip >= len(in) {
				return lzTruncDistance, tok, op
			}
			dist := int(c&0x1f)<<8 | int(in[ip])
			ip++
			if dist == 0x1fff {
				if len(in)-ip < 2 {
					return lzTruncDistEscape, tok, op
				}
				dist = 0x2000 + (int(in[ip])<<8 | int(in[ip+1]))
				ip += 2
			} else {
				dist++
			}
			if length > oend-op {
				return lzOverrun, tok, op
			}
			src := op - dist // >= 0: the window holds MaxDistance bytes
			if dist >= length {
				copy(w[op:op+length], w[src:src+length])
				op += length
			} else {
				// Overlapping: the bytes repeat with period dist; each
				// copy doubles the span already written.
				end := op + length
				for op < end {
					op += copy(w[op:end], w[src:op])
				}
			}
		}
		if op == oend {
			if ip != len(in) {
				return lzTrailing, ip, op
			}
			return lzOK, ip, op
		}
		if ip >= len(in) {
			return lzShort, ip, op
		}
		tok = ip
		c = in[ip]
		ip++
	}
}
