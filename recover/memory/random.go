package memory

import (
	"fmt"
	"io"
	"sync"
)

// RandomFlat is the flat memory of a .vmem block stream as an io.ReaderAt
// (for mount and serve: random reads, without writing the flat image
// anywhere). The back-reference window is continuous over the file, so a
// block decodes only with the history before it: RandomFlat keeps a table
// of block offsets (read from the headers when it is made), a few decoded
// blocks (LRU), and a copy of the history every checkpointEvery blocks,
// made as blocks are first decoded. A sequential reader decodes each block
// once; a random read decodes from the nearest known history, at most
// checkpointEvery blocks. Memory: cacheBlocks blocks plus about 72 KiB per
// checkpoint (about 1.2 MiB per GiB of 4 MiB blocks). Safe for concurrent
// use (decoding is serialised).
type RandomFlat struct {
	r    io.ReaderAt
	name string
	size int64 // flat bytes

	blocks []blockRef

	mu    sync.Mutex
	cache map[int][]byte // block -> decoded bytes
	lru   []int          // most recent last
	ckpt  map[int][]byte // block -> the historySize bytes before it
	in    []byte
	win   []byte
}

type blockRef struct {
	in, out     int64 // input offset of the header; flat offset
	csize, size int32
	raw         bool
}

// Tuning of RandomFlat.
const (
	cacheBlocks     = 8
	checkpointEvery = 16
	// maxRandomBlocks caps the block table (16 TiB of 4 MiB blocks).
	maxRandomBlocks = 1 << 22
)

// NewRandomFlat reads the block headers of the decrypted stream r (size
// bytes) and returns the flat view. Headers are checked as Flatten checks
// them; a damaged stream body shows when its block is read (an *Error
// wrapping keysafe.ErrCorrupt naming the input offset).
func NewRandomFlat(r io.ReaderAt, size int64, name string) (*RandomFlat, error) {
	f := &RandomFlat{r: r, name: name, cache: map[int][]byte{}, ckpt: map[int][]byte{}}
	var hb [BlockHeaderSize]byte
	var off, out int64
	for off < size {
		n, err := r.ReadAt(hb[:min(int64(len(hb)), size-off)], off)
		if n < len(hb) {
			if allZero(hb[:n]) && (err == nil || err == io.EOF) {
				break // zero padding shorter than a header
			}
			if err == nil || err == io.EOF {
				return nil, corrupt(name, off, "block header", "input ends after %d of its %d bytes", n, BlockHeaderSize)
			}
			return nil, fmt.Errorf("%s: reading block header at offset %d: %w", name, off, err)
		}
		h, err := ParseBlockHeader(hb[:], off, name)
		if err == io.EOF {
			break // end marker
		}
		if err != nil {
			return nil, err
		}
		if off+BlockHeaderSize+int64(h.CompressedSize) > size {
			return nil, corrupt(name, off+8, "compressedSize", "%d bytes, but the input ends %d bytes into the block's stream", h.CompressedSize, size-off-BlockHeaderSize)
		}
		if len(f.blocks) >= maxRandomBlocks {
			return nil, corrupt(name, off, "block header", "more than %d blocks", maxRandomBlocks)
		}
		f.blocks = append(f.blocks, blockRef{in: off, out: out, csize: int32(h.CompressedSize), size: int32(h.UncompressedSize), raw: h.Raw()})
		out += int64(h.UncompressedSize)
		off += BlockHeaderSize + int64(h.CompressedSize)
	}
	f.size = out
	f.ckpt[0] = make([]byte, historySize) // zeros before the start
	return f, nil
}

// Size is the flat size.
func (f *RandomFlat) Size() int64 { return f.size }

// ReadAt reads flat bytes.
func (f *RandomFlat) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%s: negative offset %d", f.name, off)
	}
	n := 0
	for n < len(p) {
		if off >= f.size {
			return n, io.EOF
		}
		k := f.blockAt(off)
		b, err := f.block(k)
		if err != nil {
			return n, err
		}
		c := copy(p[n:], b[off-f.blocks[k].out:])
		n += c
		off += int64(c)
	}
	return n, nil
}

// blockAt is the block holding flat offset off.
func (f *RandomFlat) blockAt(off int64) int {
	lo, hi := 0, len(f.blocks)-1
	for lo < hi {
		m := (lo + hi + 1) / 2
		if f.blocks[m].out <= off {
			lo = m
		} else {
			hi = m - 1
		}
	}
	return lo
}

// block returns block k decoded. Decoded blocks are never written again
// (each has its own buffer), so the slice stays valid after eviction.
func (f *RandomFlat) block(k int) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.cache[k]; ok {
		f.touch(k)
		return b, nil
	}
	hist, err := f.history(k)
	if err != nil {
		return nil, err
	}
	return f.decode(k, hist)
}

// history returns the historySize flat bytes before block k, decoding
// earlier blocks as needed.
func (f *RandomFlat) history(k int) ([]byte, error) {
	if h, ok := f.ckpt[k]; ok {
		return h, nil
	}
	if h := f.fromCache(k); h != nil {
		return h, nil
	}
	j := k - 1
	for ; j > 0; j-- {
		if _, ok := f.ckpt[j]; ok {
			break
		}
		if f.fromCache(j) != nil {
			break
		}
	}
	hist, err := f.history(j) // a checkpoint or the cache: no recursion past it
	if err != nil {
		return nil, err
	}
	for i := j; i < k; i++ {
		b, err := f.decode(i, hist)
		if err != nil {
			return nil, err
		}
		hist = tail(hist, b)
		if (i+1)%checkpointEvery == 0 {
			f.ckpt[i+1] = hist
		}
	}
	return hist, nil
}

// fromCache assembles the history before block k from cached blocks, or
// returns nil.
func (f *RandomFlat) fromCache(k int) []byte {
	var parts [][]byte
	need := historySize
	for i := k - 1; i >= 0 && need > 0; i-- {
		b, ok := f.cache[i]
		if !ok {
			return nil
		}
		parts = append(parts, b)
		need -= len(b)
	}
	if need > 0 { // reached the start: zeros before it
		parts = append(parts, make([]byte, need))
	}
	h := make([]byte, 0, historySize+len(parts[0]))
	for i := len(parts) - 1; i >= 0; i-- {
		h = append(h, parts[i]...)
	}
	return h[len(h)-historySize:]
}

// tail returns the last historySize bytes of hist followed by b.
func tail(hist, b []byte) []byte {
	h := make([]byte, historySize)
	if len(b) >= historySize {
		copy(h, b[len(b)-historySize:])
		return h
	}
	n := copy(h, hist[len(b):])
	copy(h[n:], b)
	return h
}

// decode decodes block k after hist and caches it.
func (f *RandomFlat) decode(k int, hist []byte) ([]byte, error) {
	br := f.blocks[k]
	if cap(f.in) < int(br.csize) {
		f.in = make([]byte, br.csize)
	}
	in := f.in[:br.csize]
	base := br.in + BlockHeaderSize
	if n, err := f.r.ReadAt(in, base); n != len(in) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%s: reading block at offset %d: %w", f.name, br.in, err)
	}
	out := make([]byte, br.size)
	if br.raw {
		copy(out, in)
	} else {
		need := historySize + int(br.size)
		if cap(f.win) < need {
			f.win = make([]byte, need)
		}
		w := f.win[:need]
		copy(w, hist)
		if code, ip, op := decodeLZ(w, historySize, in); code != lzOK {
			return nil, lzError(f.name, base, ip, op-historySize, int(br.size), code)
		}
		copy(out, w[historySize:])
	}
	f.cache[k] = out
	f.touch(k)
	if len(f.lru) > cacheBlocks {
		delete(f.cache, f.lru[0])
		f.lru = f.lru[1:]
	}
	return out, nil
}

func (f *RandomFlat) touch(k int) {
	for i, x := range f.lru {
		if x == k {
			f.lru = append(f.lru[:i], f.lru[i+1:]...)
			break
		}
	}
	f.lru = append(f.lru, k)
}
