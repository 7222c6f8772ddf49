package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// WriterOptions tunes a Writer. The zero value gives VMware's shape: 4 MiB
// blocks, hash-chain matching.
type WriterOptions struct {
	// BlockSize is the uncompressedSize of every block but the last
	// (1..MaxBlockSize; 0 means BlockSize). Small blocks make small
	// multi-block fixtures.
	BlockSize int
	// ChainDepth is how many earlier positions with the same hash are tried
	// per position (0 means 16; 1 is greedy single-candidate).
	ChainDepth int
	// Store writes every block raw (compressedSize == uncompressedSize).
	Store bool
}

// EncoderStats counts what a Writer emitted: tests use it to prove that a
// fixture exercises each feature of the grammar.
type EncoderStats struct {
	Blocks          int64 // blocks written
	RawBlocks       int64 // blocks stored raw (incompressible or Store)
	Literals        int64 // literal bytes in LZ blocks
	Matches         int64 // match tokens
	LengthEscapes   int64 // matches of length >= 9 (lf == 7)
	LongLengths     int64 // matches whose length escape needs 0xff continuation bytes
	DistanceEscapes int64 // matches with distance >= 0x2000
	CrossBlock      int64 // matches whose source starts in an earlier block
	BeforeStart     int64 // matches whose source starts before the file (reads zeros)
	In, Out         int64 // flat bytes in, container bytes out
}

// Encoder constants.
const (
	hashBits  = 16
	chainBits = 17 // ring of chain links: 1<<chainBits > MaxDistance
	chainMask = 1<<chainBits - 1
	noPos     = -1 << 62
	niceLen   = 4096 // stop searching once a match is this long
	// minFarMatch is the shortest match worth a distance escape (4 bytes of
	// tokens).
	minFarMatch = 5
)

// Writer compresses flat memory into the .vmem block container and LZ77
// grammar of docs/formats.md §13: the exact inverse of FlatReader. It keeps the
// window continuous across blocks (matches reach into earlier blocks, and
// into the zeros before the start of the file), uses the length escape
// (with 0xff continuation bytes) and the distance escape, and stores a
// block raw when its stream would not be shorter. It is for fixtures and
// tests; vmcrypt never writes a compressed .vmem for a user.
type Writer struct {
	w     io.Writer
	bs    int
	depth int
	store bool

	win   []byte // earlier input (at least historySize bytes) then the pending block
	p     int    // index in win of the pending block
	n     int    // pending bytes in win[p:]
	abs   int64  // absolute position of win[p]
	start int64  // absolute position of the stream's first byte
	head  []int64
	prev  []int64
	out   []byte
	hdr   [BlockHeaderSize]byte

	stats  EncoderStats
	err    error
	closed bool
}

// NewWriter returns a Writer that writes the container to w. Close must be
// called to write the last (short) block.
func NewWriter(w io.Writer, opts *WriterOptions) (*Writer, error) {
	e := &Writer{}
	if err := e.Reset(w, opts); err != nil {
		return nil, err
	}
	return e, nil
}

// Reset makes e write a new container to w with opts, keeping its buffers.
func (e *Writer) Reset(w io.Writer, opts *WriterOptions) error {
	var o WriterOptions
	if opts != nil {
		o = *opts
	}
	if o.BlockSize == 0 {
		o.BlockSize = BlockSize
	}
	if o.BlockSize < 1 || o.BlockSize > MaxBlockSize {
		return fmt.Errorf("memory: block size %d outside 1..%d", o.BlockSize, MaxBlockSize)
	}
	if o.ChainDepth <= 0 {
		o.ChainDepth = 16
	}
	// A reused Writer starts its positions past its last stream's, by more
	// than MaxDistance: its old hash entries are then out of reach and need
	// no clearing.
	start := e.abs + int64(e.n) + 2*MaxDistance
	*e = Writer{
		w: w, bs: o.BlockSize, depth: o.ChainDepth, store: o.Store,
		win: e.win, head: e.head, prev: e.prev, out: e.out[:0],
		start: start, abs: start,
	}
	if len(e.win) < historySize+max(o.BlockSize, minWindow) {
		e.win = make([]byte, historySize+max(o.BlockSize, minWindow))
	}
	clear(e.win[:historySize])
	e.p = historySize
	if e.head == nil {
		e.head = make([]int64, 1<<hashBits)
		e.prev = make([]int64, 1<<chainBits)
		for i := range e.head {
			e.head[i] = noPos
		}
	}
	if cap(e.out) < MaxCompressedSize(o.BlockSize) {
		e.out = make([]byte, 0, MaxCompressedSize(o.BlockSize))
	}
	// The window reads zeros before the start: make those zeros findable.
	for p := e.start - 64; p < e.start-3; p++ {
		e.insert(p)
	}
	return nil
}

// Stats returns what the Writer has emitted so far.
func (e *Writer) Stats() EncoderStats { return e.stats }

// Write buffers p, compressing and writing each full block.
func (e *Writer) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if e.closed {
		return 0, errors.New("memory: write after Close")
	}
	total := 0
	for len(p) > 0 {
		k := copy(e.win[e.p+e.n:e.p+e.bs], p)
		e.n += k
		p = p[k:]
		total += k
		if e.n == e.bs {
			if err := e.flush(); err != nil {
				e.err = err
				return total, err
			}
		}
	}
	return total, nil
}

// ReadFrom compresses everything r holds (io.Copy uses it).
func (e *Writer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if e.err != nil {
			return total, e.err
		}
		if e.closed {
			return total, errors.New("memory: write after Close")
		}
		k, err := r.Read(e.win[e.p+e.n : e.p+e.bs])
		e.n += k
		total += int64(k)
		if e.n == e.bs {
			if ferr := e.flush(); ferr != nil {
				e.err = ferr
				return total, ferr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close writes the last block. It does not close the underlying writer.
func (e *Writer) Close() error {
	if e.closed || e.err != nil {
		return e.err
	}
	e.closed = true
	if e.n > 0 {
		e.err = e.flush()
	}
	return e.err
}

func hash4(u uint32) uint32 { return (u * 2654435761) >> (32 - hashBits) }

// insert adds absolute position p (with 4 readable bytes in the window) to
// the hash chains.
func (e *Writer) insert(p int64) {
	i := int(p-e.abs) + e.p
	h := hash4(binary.LittleEndian.Uint32(e.win[i:]))
	e.prev[p&chainMask] = e.head[h]
	e.head[h] = p
}

// flush compresses and writes the pending block, then slides the window.
func (e *Writer) flush() error {
	usize := e.n
	blk := e.win[:e.p+usize]
	e.out = e.out[:0]
	if !e.store {
		e.compress(blk)
	}
	raw := e.store || len(e.out) >= usize
	payload := e.out
	if raw {
		payload = blk[e.p:]
		e.stats.RawBlocks++
	}
	le := binary.LittleEndian
	le.PutUint64(e.hdr[0:], uint64(usize))
	le.PutUint64(e.hdr[8:], uint64(len(payload)))
	if _, err := e.w.Write(e.hdr[:]); err != nil {
		return err
	}
	if _, err := e.w.Write(payload); err != nil {
		return err
	}
	e.stats.Blocks++
	e.stats.In += int64(usize)
	e.stats.Out += int64(BlockHeaderSize + len(payload))
	e.abs += int64(usize)
	e.p += usize
	e.n = 0
	if e.p+e.bs > len(e.win) {
		// Slide: the last historySize bytes start the window again.
		copy(e.win[:historySize], e.win[e.p-historySize:e.p])
		e.p = historySize
	}
	return nil
}

// compress appends the LZ stream of blk[e.p:] to e.out; blk[:e.p] is the
// window. It stops early once the stream is no shorter than the block
// (flush then stores it raw), and counts its tokens in the stats only when
// the stream is kept.
func (e *Writer) compress(blk []byte) {
	end := len(blk)
	start := e.p
	// Positions in the last 3 bytes of the previous block could not be
	// hashed then; they can now.
	for p := e.abs - 3; p < e.abs; p++ {
		if p >= e.start && int(p-e.abs)+start+4 <= end {
			e.insert(p)
		}
	}
	var st EncoderStats
	anchor := start
	i := start + 1 // every block starts with a literal run of at least one byte
	for i+4 <= end {
		if len(e.out) >= end-start {
			return // incompressible: flush stores the block raw
		}
		length, dist := e.find(blk, i, end)
		if length == 0 {
			e.insert(e.abs + int64(i-start))
			i++
			continue
		}
		e.literals(blk[anchor:i], anchor == start)
		st.Literals += int64(i - anchor)
		e.match(length, dist)
		st.Matches++
		if length >= 9 {
			st.LengthEscapes++
			if length-9 >= 0xff {
				st.LongLengths++
			}
		}
		if dist >= 0x2000 {
			st.DistanceEscapes++
		}
		if src := e.abs + int64(i-start) - int64(dist); src < e.start {
			st.BeforeStart++
		} else if src < e.abs {
			st.CrossBlock++
		}
		// Index the positions the match covers (all of a short one, the
		// tail of a long one: runs of zeros need no more).
		from := i + 1
		if length > 64 {
			from = i + length - 16
		}
		for p := from; p < i+length && p+4 <= end; p++ {
			e.insert(e.abs + int64(p-start))
		}
		i += length
		anchor = i
	}
	e.literals(blk[anchor:end], anchor == start)
	st.Literals += int64(end - anchor)
	if len(e.out) < end-start {
		e.stats.Literals += st.Literals
		e.stats.Matches += st.Matches
		e.stats.LengthEscapes += st.LengthEscapes
		e.stats.LongLengths += st.LongLengths
		e.stats.DistanceEscapes += st.DistanceEscapes
		e.stats.CrossBlock += st.CrossBlock
		e.stats.BeforeStart += st.BeforeStart
	}
}

// find returns the longest match for blk[i:] among the hash chain of i
// (length 0 if none is worth a token).
func (e *Writer) find(blk []byte, i, end int) (length, dist int) {
	pos := e.abs + int64(i-e.p)
	h := hash4(binary.LittleEndian.Uint32(blk[i:]))
	c := e.head[h]
	limit := end - i
	best, bestDist := 0, 0
	for d := 0; d < e.depth && c != noPos; d++ {
		dd := pos - c
		if dd <= 0 || dd > MaxDistance {
			break
		}
		ci := i - int(dd)
		if best < limit && blk[ci+best] == blk[i+best] {
			n := matchLen(blk[ci:], blk[i:end])
			if n > best && (dd < 0x2000 || n >= minFarMatch) {
				best, bestDist = n, int(dd)
				if n >= niceLen || n == limit {
					break
				}
			}
		}
		c = e.prev[c&chainMask]
	}
	if best < MinMatch {
		return 0, 0
	}
	return best, bestDist
}

// matchLen returns how many leading bytes of b equal those of a (len(a) >=
// len(b) or the shorter length).
func matchLen(a, b []byte) int {
	n := 0
	for len(b)-n >= 8 && len(a)-n >= 8 {
		x := binary.LittleEndian.Uint64(a[n:]) ^ binary.LittleEndian.Uint64(b[n:])
		if x != 0 {
			return n + bits.TrailingZeros64(x)/8
		}
		n += 8
	}
	for n < len(b) && n < len(a) && a[n] == b[n] {
		n++
	}
	return n
}

// literals emits lit as literal runs; first marks the block's first token,
// whose control byte carries 1<<5 (as FastLZ level 2 writes it).
func (e *Writer) literals(lit []byte, first bool) {
	for len(lit) > 0 {
		n := min(len(lit), maxLiteralRun)
		c := byte(n - 1)
		if first {
			c |= 1 << 5
			first = false
		}
		e.out = append(e.out, c)
		e.out = append(e.out, lit[:n]...)
		lit = lit[n:]
	}
}

// match emits one match token.
func (e *Writer) match(length, dist int) {
	var hi, lo byte
	far := dist >= 0x2000
	if far {
		hi, lo = 0x1f, 0xff
	} else {
		hi, lo = byte((dist-1)>>8), byte(dist-1)
	}
	if length < 9 {
		e.out = append(e.out, byte(length-2)<<5|hi)
	} else {
		e.out = append(e.out, 7<<5|hi)
		r := length - 9
		for r >= 0xff {
			e.out = append(e.out, 0xff)
			r -= 0xff
		}
		e.out = append(e.out, byte(r))
	}
	e.out = append(e.out, lo)
	if far {
		x := dist - 0x2000
		e.out = append(e.out, byte(x>>8), byte(x))
	}
}
