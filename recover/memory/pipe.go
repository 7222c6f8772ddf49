package memory

import (
	"errors"
	"io"
	"sync"
)

// FlattenConcurrent decodes the .vmem block stream that src produces (a
// datafile.Reader decrypting the §9 container, typically) into dst, with
// src.WriteTo running in its own goroutine: decryption and decompression
// use a core each. The two are joined by a bounded buffer (pipeDepth ×
// pipeChunk bytes), so memory stays bounded. It returns the flat bytes
// written; an error of either side stops both.
func FlattenConcurrent(dst io.Writer, src io.WriterTo, name string) (int64, error) {
	p := newChunkPipe()
	var srcErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, srcErr = src.WriteTo(p)
		p.closeWrite(srcErr)
	}()
	n, err := NewFlatReader(p, name).WriteTo(dst)
	p.closeRead()
	wg.Wait()
	if err != nil {
		// A decode error caused by a source failure reports the source's.
		if srcErr != nil && !errors.Is(srcErr, errPipeClosed) {
			return n, srcErr
		}
		return n, err
	}
	return n, nil
}

const (
	pipeChunk = 1 << 20
	pipeDepth = 4
)

var errPipeClosed = errors.New("memory: reader stopped")

// chunkPipe is an io.Pipe with pipeDepth buffered chunks: the writer runs
// ahead of the reader by up to pipeDepth×pipeChunk bytes.
type chunkPipe struct {
	full  chan []byte
	free  chan []byte
	done  chan struct{}
	once  sync.Once
	err   error // the writer's error, read after full is closed
	cur   []byte
	spare []byte
	w     []byte // chunk being filled
}

func newChunkPipe() *chunkPipe {
	p := &chunkPipe{full: make(chan []byte, pipeDepth), free: make(chan []byte, pipeDepth+1), done: make(chan struct{})}
	for range pipeDepth + 1 {
		p.free <- make([]byte, 0, pipeChunk)
	}
	return p
}

// Write copies b into chunks, sending each full one.
func (p *chunkPipe) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		if p.w == nil {
			select {
			case p.w = <-p.free:
			case <-p.done:
				return n, errPipeClosed
			}
		}
		k := copy(p.w[len(p.w):cap(p.w)], b)
		p.w = p.w[:len(p.w)+k]
		b = b[k:]
		n += k
		if len(p.w) == cap(p.w) {
			if !p.send() {
				return n, errPipeClosed
			}
		}
	}
	return n, nil
}

func (p *chunkPipe) send() bool {
	select {
	case p.full <- p.w:
		p.w = nil
		return true
	case <-p.done:
		return false
	}
}

// closeWrite flushes the last chunk and ends the stream with err (nil: EOF).
func (p *chunkPipe) closeWrite(err error) {
	if len(p.w) > 0 && err == nil {
		p.send()
	}
	p.err = err
	close(p.full)
}

// closeRead stops the writer.
func (p *chunkPipe) closeRead() { p.once.Do(func() { close(p.done) }) }

// Read serves the chunks in order.
func (p *chunkPipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		if p.spare != nil {
			p.free <- p.spare[:0]
			p.spare = nil
		}
		c, ok := <-p.full
		if !ok {
			if p.err != nil {
				return 0, p.err
			}
			return 0, io.EOF
		}
		p.cur, p.spare = c, c
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}
