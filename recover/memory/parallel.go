package memory

import (
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"
)

// Parallel decoding despite the continuous window.
//
// The token stream of a block can be parsed without its history: control
// bytes and literals do not depend on earlier output, only the bytes a
// match copies do. So workers decode blocks ahead, each against an unknown
// history, and record every match whose source touches the unknown
// history or bytes that an earlier such match wrote ("tainted" bytes,
// tracked as sorted spans). Those matches are not copied. A sequencer then
// takes the blocks in order, puts the real history (the last historySize
// bytes of all earlier output) in front of the block, and replays the
// recorded matches in order: every byte is then what the serial decoder
// writes. Errors do not depend on history either, so they are the serial
// decoder's errors, reported in stream order.

// fixup is a match left for the sequencer: copy n bytes from op-dist to op
// (indices in the job's output buffer, history included).
type fixup struct{ op, dist, n int32 }

// span is a tainted range [start, end) of a job's output buffer.
type span struct{ start, end int32 }

type parJob struct {
	off   int64 // input offset of the block header
	hdr   BlockHeader
	in    []byte
	out   []byte // historySize + usize
	fix   []fixup
	taint []span
	err   error
	eof   bool          // no block: the end of the stream
	done  chan struct{} // the worker finished (or no work needed)
}

// FlattenParallel decodes the .vmem block stream src into dst like Flatten,
// byte for byte and error for error, with workers goroutines decoding
// blocks ahead (workers <= 0 means GOMAXPROCS). Memory is bounded: about
// (workers+2) blocks in flight.
//
// Measured on 2 cores (BenchmarkFlattenParallel, BenchmarkParallelParts):
// a third of the output of memory-shaped data comes from matches that
// reach into the unknown history, speculative decoding costs as much CPU
// as serial decoding, and the pipeline's overhead eats the rest; it does
// not beat FlatReader there. More cores should help (not measured: this
// machine has two); on two, give the second core to decryption instead
// (FlattenConcurrent).
func FlattenParallel(dst io.Writer, src io.Reader, name string, workers int) (int64, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	nJobs := workers + 2
	free := make(chan *parJob, nJobs)
	for range nJobs {
		free <- &parJob{done: make(chan struct{}, 1)}
	}
	work := make(chan *parJob, nJobs)
	order := make(chan *parJob, nJobs)
	quit := make(chan struct{})
	var wg sync.WaitGroup

	// Producer: reads headers and streams in order.
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(work)
		defer close(order)
		var hdr [BlockHeaderSize]byte
		var off int64
		for {
			var j *parJob
			select {
			case j = <-free:
			case <-quit:
				return
			}
			j.err, j.eof = nil, false
			j.off = off
			next, err := readBlock(src, name, &hdr, off, j)
			switch {
			case err == io.EOF:
				j.eof = true
			case err != nil:
				j.err = err
			}
			if j.eof || j.err != nil {
				j.done <- struct{}{}
				order <- j
				return
			}
			off = next
			// Work first: a job in order is always one a worker will finish
			// (workers drain work even after quit; done is buffered).
			work <- j // never blocks: capacity nJobs
			order <- j
		}
	}()

	// Workers: speculative decoding.
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				j.decode(name)
				j.done <- struct{}{}
			}
		}()
	}

	// Sequencer (this goroutine): history, fixups, output, in order.
	seq := sequencer{hist: make([]byte, historySize)}
	var err error
	for j := range order {
		<-j.done
		if j.eof {
			break
		}
		if err = seq.finish(j, dst); err != nil {
			break
		}
		free <- j
	}
	close(quit)
	wg.Wait()
	return seq.total, err
}

// sequencer completes speculatively decoded blocks in stream order.
type sequencer struct {
	hist  []byte // the last historySize bytes of the output so far
	total int64
}

// finish puts the real history in front of j's block, replays its fixups,
// writes it to dst and keeps the new history; or returns j's error.
func (s *sequencer) finish(j *parJob, dst io.Writer) error {
	if j.err != nil {
		return j.err
	}
	usize := int(j.hdr.UncompressedSize)
	copy(j.out[:historySize], s.hist)
	replay(j.out, j.fix)
	n, err := dst.Write(j.out[historySize : historySize+usize])
	s.total += int64(n)
	if err == nil && n < usize {
		err = io.ErrShortWrite
	}
	if err != nil {
		return err
	}
	if usize >= historySize {
		copy(s.hist, j.out[usize:usize+historySize])
	} else {
		copy(s.hist, s.hist[usize:])
		copy(s.hist[historySize-usize:], j.out[historySize:historySize+usize])
	}
	return nil
}

// flattenSpec runs the parallel algorithm in one goroutine (read, decode
// speculatively, finish), for tests and fuzzing of the algorithm itself.
// j and hist (historySize bytes) are reused if not nil.
func flattenSpec(dst io.Writer, src io.Reader, name string, j *parJob, hist []byte) (int64, error) {
	if j == nil {
		j = &parJob{}
	}
	if hist == nil {
		hist = make([]byte, historySize)
	}
	clear(hist)
	seq := sequencer{hist: hist}
	var hdr [BlockHeaderSize]byte
	var off int64
	for {
		next, err := readBlock(src, name, &hdr, off, j)
		if err == io.EOF {
			return seq.total, nil
		}
		if err != nil {
			return seq.total, err
		}
		j.off, off = off, next
		j.err = nil
		j.decode(name)
		if err := seq.finish(j, dst); err != nil {
			return seq.total, err
		}
	}
}

// readBlock reads the next block into j (header, stream, output buffer
// sized); it returns the input offset after the block, io.EOF at a clean
// end, or the error the serial reader gives.
func readBlock(src io.Reader, name string, hdr *[BlockHeaderSize]byte, off int64, j *parJob) (int64, error) {
	n, err := io.ReadFull(src, hdr[:])
	switch {
	case err == io.EOF:
		return off, io.EOF
	case err == io.ErrUnexpectedEOF:
		if allZero(hdr[:n]) {
			return off, io.EOF
		}
		return off, corrupt(name, off, "block header", "input ends after %d of its %d bytes", n, BlockHeaderSize)
	case err != nil:
		return off, fmt.Errorf("%s: reading block header at offset %d: %w", name, off, err)
	}
	h, err := ParseBlockHeader(hdr[:], off, name)
	if err == io.EOF {
		d := FlatReader{r: src, name: name}
		return off, d.trailer(off)
	}
	if err != nil {
		return off, err
	}
	j.hdr = h
	usize, csize := int(h.UncompressedSize), int(h.CompressedSize)
	if cap(j.in) < csize {
		j.in = make([]byte, csize)
	}
	j.in = j.in[:csize]
	if n, err := io.ReadFull(src, j.in); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return off, corrupt(name, off+8, "compressedSize", "%d bytes, but the input ends %d bytes into the block's stream", csize, n)
		}
		return off, fmt.Errorf("%s: reading block at offset %d: %w", name, off, err)
	}
	if cap(j.out) < historySize+usize {
		j.out = make([]byte, historySize+usize)
	}
	j.out = j.out[:historySize+usize]
	return off + BlockHeaderSize + int64(csize), nil
}

// decode decodes the job's block against an unknown history.
func (j *parJob) decode(name string) {
	j.fix = j.fix[:0]
	j.taint = append(j.taint[:0], span{0, historySize})
	if j.hdr.Raw() {
		copy(j.out[historySize:], j.in)
		return
	}
	if code, ip, op := decodeSpec(j.out, historySize, j.in, &j.fix, &j.taint); code != lzOK {
		j.err = lzError(name, j.off+BlockHeaderSize, ip, op-historySize, int(j.hdr.UncompressedSize), code)
	}
}

// replay performs the recorded matches in order.
func replay(w []byte, fix []fixup) {
	for _, f := range fix {
		op, src, end := int(f.op), int(f.op-f.dist), int(f.op+f.n)
		if int(f.dist) >= int(f.n) {
			copy(w[op:end], w[src:src+int(f.n)])
			continue
		}
		for op < end {
			op += copy(w[op:end], w[src:op])
		}
	}
}

// decodeSpec is decodeLZ with an unknown window: matches reading tainted
// bytes are recorded in fix instead of copied, and taint their output.
// taint starts as the window's span. Its control flow, and so its error
// codes and positions, are decodeLZ's.
func decodeSpec(w []byte, op int, in []byte, fix *[]fixup, taint *[]span) (code, ipAt, opAt int) {
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
	tok := 0
	tEnd := int((*taint)[len(*taint)-1].end) // end of the last tainted span
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
			src := op - dist
			if src < tEnd && tainted(*taint, src, min(src+length, op)) {
				*fix = append(*fix, fixup{int32(op), int32(dist), int32(length)})
				if t := *taint; int(t[len(t)-1].end) == op {
					t[len(t)-1].end = int32(op + length)
				} else {
					*taint = append(t, span{int32(op), int32(op + length)})
				}
				tEnd = op + length
				op += length
			} else if dist >= length {
				copy(w[op:op+length], w[src:src+length])
				op += length
			} else {
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

// tainted reports whether [a, b) meets a span of the sorted list t.
// Sources are mostly near the end: a few spans are tried from the end
// before a binary search.
func tainted(t []span, a, b int) bool {
	for i, k := len(t)-1, 0; i >= 0 && k < 8; i, k = i-1, k+1 {
		if int(t[i].end) <= a {
			return false // every earlier span ends before a too
		}
		if int(t[i].start) < b {
			return true
		}
	}
	i := sort.Search(len(t), func(i int) bool { return int(t[i].end) > a })
	return i < len(t) && int(t[i].start) < b
}
