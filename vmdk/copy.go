package vmdk

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"runtime"
	"sort"
	"sync"
)

// The copy engine: every command that copies a virtual disk (vmdk export
// to raw, recover's raw images, data files, and the read-back verification
// of written VMDKs) goes through Copy.

// Copy limits.
const (
	// DefaultChunkSize is the unit of work of Copy: 1 MiB, a whole number
	// of grains for every grain size vmdk reads.
	DefaultChunkSize = 1 << 20
	// MaxChunkSize caps CopyOptions.ChunkSize.
	MaxChunkSize = 16 << 20
	// MaxJobs caps CopyOptions.Jobs (and the workers of Write).
	MaxJobs = 64
)

// ErrVerify means an output does not read back as its source.
var ErrVerify = errors.New("verification failed")

// CopyOptions tune Copy and ExportRaw.
type CopyOptions struct {
	// Jobs is the number of workers (default: GOMAXPROCS, at most MaxJobs).
	Jobs int
	// ChunkSize is the unit of work in bytes, a multiple of 512
	// (default DefaultChunkSize, at most MaxChunkSize).
	ChunkSize int64
	// Progress, when set, is called after each chunk with the Data bytes
	// copied so far and the total; calls are serialised.
	Progress Progress
	// Hash computes the sha256 of the copied image (holes as zeros), in
	// order; without it Copy returns a zero sum.
	Hash bool
	// Overwrite lets ExportRaw replace an existing file.
	Overwrite bool
	// Compare, when set, is read at every chunk too and must hold the same
	// bytes as src, else Copy fails with an error wrapping ErrVerify
	// (verification of a written output; dst may then be nil).
	Compare io.ReaderAt
}

func (o *CopyOptions) norm() (jobs int, chunk int64, err error) {
	jobs, chunk = o.Jobs, o.ChunkSize
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	jobs = min(jobs, MaxJobs)
	if chunk == 0 {
		chunk = DefaultChunkSize
	}
	if chunk < SectorSize || chunk > MaxChunkSize || chunk%SectorSize != 0 {
		return 0, 0, fmt.Errorf("vmdk: copy: chunk size %d is not a multiple of 512 in 512..%d", chunk, MaxChunkSize)
	}
	return jobs, chunk, nil
}

// chunk is one unit of work: Data bytes [off, off+n).
type chunk struct{ off, n int64 }

// cursor hands out the Data runs in chunks split at chunk-size boundaries
// of the virtual disk, in order, without building the list (a 62 TiB disk
// is 62 million chunks).
type cursor struct {
	runs  []Run
	csize int64
	ri    int   // current run
	off   int64 // next offset in runs[ri]
	n     int64 // chunks handed out
}

// next returns the next chunk and its index, or ok=false at the end.
func (c *cursor) next() (ch chunk, idx int64, ok bool) {
	for c.ri < len(c.runs) {
		r := c.runs[c.ri]
		if r.State != Data || c.off >= r.Off+r.Len {
			c.ri++
			if c.ri < len(c.runs) {
				c.off = c.runs[c.ri].Off
			}
			continue
		}
		c.off = max(c.off, r.Off)
		end := min(r.Off+r.Len, (c.off/c.csize+1)*c.csize)
		ch = chunk{c.off, end - c.off}
		c.off = end
		c.n++
		return ch, c.n - 1, true
	}
	return chunk{}, 0, false
}

// Copy copies src (size bytes, allocation map runs) into dst with N
// workers: each Data chunk is read and written with WriteAt except its
// all-zero 4 KiB blocks, so that holes, Zero runs and zero blocks stay
// unwritten (dst must read them as zeros: a fresh, truncated file stays
// sparse). With Hash it computes at the same time, in order, the sha256 of
// all size bytes as dst then holds them (holes counted as zeros) and
// returns it. dst may be nil (verification with Compare, or hashing).
//
// Memory is bounded whatever the disk size: 2*Jobs+2 chunk buffers, reused,
// and as many slots for finished chunks. Ordering: a worker that finishes
// the lowest unhashed chunk hashes it and every finished chunk after it, so
// the hash costs no extra goroutine and Jobs=1 does all the work on one.
//
// Cancelling ctx stops the workers after their current chunk and returns
// ctx.Err().
func Copy(ctx context.Context, dst io.WriterAt, src io.ReaderAt, size int64, runs []Run, opts *CopyOptions) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	if opts == nil {
		opts = &CopyOptions{}
	}
	jobs, csize, err := opts.norm()
	if err != nil {
		return sum, err
	}
	var total int64
	for _, r := range runs {
		if r.State == Data {
			if r.Off < 0 || r.Len < 0 || r.Off+r.Len > size {
				return sum, fmt.Errorf("vmdk: copy: run %d+%d outside the %d-byte disk", r.Off, r.Len, size)
			}
			total += r.Len
		}
	}
	nbuf := 2*jobs + 2
	bufs := make(chan []byte, nbuf)
	for range nbuf {
		bufs <- make([]byte, csize)
	}
	var cmpBufs chan []byte
	if opts.Compare != nil {
		cmpBufs = make(chan []byte, jobs)
		for range jobs {
			cmpBufs <- make([]byte, csize)
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	o := &orderer{
		ring: make([]slot, nbuf), bufs: bufs,
		size: size, total: total, progress: opts.Progress,
	}
	if opts.Hash {
		o.h = sha256.New()
	}
	zero := make([]byte, csize)
	cur := &cursor{runs: runs, csize: csize}
	if len(runs) > 0 {
		cur.off = runs[0].Off
	}
	var curMu sync.Mutex
	var wg sync.WaitGroup
	for range jobs {
		wg.Go(func() {
			for {
				var b []byte
				select {
				case b = <-bufs:
				case <-ctx.Done():
					return
				}
				// Claim the next chunk while holding a buffer: at most
				// nbuf chunks are claimed and unhashed, so ring slots
				// (index mod nbuf) never collide.
				curMu.Lock()
				c, i, ok := cur.next()
				curMu.Unlock()
				if !ok || ctx.Err() != nil {
					bufs <- b
					return
				}
				p := b[:c.n]
				if err := ReadFull(src, p, c.off); err != nil {
					cancel(err)
					bufs <- b
					return
				}
				if opts.Compare != nil {
					cb := <-cmpBufs
					q := cb[:c.n]
					err := ReadFull(opts.Compare, q, c.off)
					same := err == nil && bytes.Equal(p, q)
					cmpBufs <- cb
					if !same {
						if err == nil {
							err = fmt.Errorf("bytes differ in %d+%d: %w", c.off, c.n, ErrVerify)
						} else {
							err = fmt.Errorf("reading back at %d: %w: %w", c.off, ErrVerify, err)
						}
						cancel(err)
						bufs <- b
						return
					}
				}
				if dst != nil {
					if err := writeNonZero(dst, p, c.off, zero); err != nil {
						cancel(fmt.Errorf("writing at offset %d: %w", c.off, err))
						bufs <- b
						return
					}
					startWriteback(dst, c.off, c.n)
				}
				o.done(i, c, p)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return sum, err
	}
	if o.next != cur.n {
		return sum, errors.New("vmdk: copy: internal error: copy ended early")
	}
	if o.h != nil {
		hashZeros(o.h, size-o.hashed)
		o.h.Sum(sum[:0])
	}
	return sum, nil
}

// slot holds one finished, unhashed chunk.
type slot struct {
	c     chunk
	b     []byte
	ready bool
}

// orderer hashes finished chunks in order.
type orderer struct {
	mu       sync.Mutex
	h        hash.Hash // nil: no hash
	ring     []slot    // chunk i lives in ring[i % len(ring)]
	next     int64     // lowest unhashed chunk
	hashing  bool      // a worker is hashing
	hashed   int64     // bytes hashed so far (virtual offset)
	bufs     chan []byte
	size     int64
	total    int64
	copied   int64
	progress Progress
}

// done records chunk i (c, data p) as finished and, unless another worker
// is hashing, hashes every finished chunk from o.next on.
func (o *orderer) done(i int64, c chunk, p []byte) {
	n := int64(len(o.ring))
	o.mu.Lock()
	o.ring[i%n] = slot{c: c, b: p, ready: true}
	o.copied += c.n
	if o.progress != nil {
		o.progress(o.copied, o.total)
	}
	if o.hashing {
		o.mu.Unlock()
		return
	}
	o.hashing = true
	for o.ring[o.next%n].ready {
		s := o.ring[o.next%n]
		o.ring[o.next%n] = slot{}
		o.next++
		o.mu.Unlock()
		if o.h != nil {
			hashZeros(o.h, s.c.off-o.hashed)
			o.h.Write(s.b)
		}
		o.hashed = s.c.off + s.c.n
		o.bufs <- s.b[:cap(s.b)]
		o.mu.Lock()
	}
	o.hashing = false
	o.mu.Unlock()
}

var zeros = make([]byte, 1<<20)

// hashZeros feeds n zero bytes to h.
func hashZeros(h hash.Hash, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
}

// AllZero reports whether b holds only zero bytes.
func AllZero(b []byte) bool {
	for len(b) >= 64 {
		le := binary.LittleEndian
		if le.Uint64(b)|le.Uint64(b[8:])|le.Uint64(b[16:])|le.Uint64(b[24:])|
			le.Uint64(b[32:])|le.Uint64(b[40:])|le.Uint64(b[48:])|le.Uint64(b[56:]) != 0 {
			return false
		}
		b = b[64:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ReadFull reads exactly len(p) bytes at off; a short read is an error
// (io.ErrUnexpectedEOF when the reader gave none).
func ReadFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Progress receives the bytes done so far and the total of one operation;
// calls are serialised.
type Progress func(done, total int64)

// UnionRuns returns Data runs covering every byte either map allocates
// (Data or Zero): what a comparison of two images must read.
func UnionRuns(a, b []Run) []Run {
	all := append(append([]Run(nil), a...), b...)
	sort.Slice(all, func(i, j int) bool { return all[i].Off < all[j].Off })
	var out []Run
	for _, r := range all {
		if n := len(out); n > 0 && out[n-1].Off+out[n-1].Len >= r.Off {
			out[n-1].Len = max(out[n-1].Off+out[n-1].Len, r.Off+r.Len) - out[n-1].Off
			continue
		}
		out = append(out, Run{Off: r.Off, Len: r.Len, State: Data})
	}
	return out
}
