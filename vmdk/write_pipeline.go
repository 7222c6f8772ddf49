package vmdk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zlib"
)

// The write pipeline: one producer walks the allocation map grain by grain,
// a fixed pool of workers reads, transforms and (for streams) compresses,
// and the calling goroutine hands finished grains to the sink in virtual
// order. A fixed set of job objects (4 per worker) circulates, so memory is
// bounded and the hot path does not allocate.

// jobKind says what a pipeline job covers.
type jobKind uint8

const (
	jobGap   jobKind = iota // bytes outside every run: a hole
	jobGrain                // one grain (or flat chunk) touched by runs
)

type grainJob struct {
	kind      jobKind
	off, n    int64 // virtual range; n <= unit, cut at the capacity
	run       int   // first run that may overlap the grain
	forceData bool  // store even if no Data run covers it (flat + Transform)

	state State  // result for jobGrain: Data or Zero
	buf   []byte // unit bytes: the grain
	out   bytes.Buffer
	err   error
	done  chan struct{}
}

// grainSink stores finished jobs; put is called in virtual order from one
// goroutine.
type grainSink interface {
	put(j *grainJob) error
}

// workerState is what one worker reuses between grains.
type workerState struct {
	zw *zlib.Writer
}

// pipe runs the pipeline over the whole capacity, in units of unit bytes,
// and feeds sink. compress makes workers fill j.out with a stream grain
// (marker + zlib data, padded to a sector); zeroAsData makes Zero grains
// stored data (streams of delta disks).
func (w *diskWriter) pipe(unit int64, sink grainSink, compress, zeroAsData bool) error {
	inflight := min(4*w.jobs, max(2, int(maxInflightBytes/unit)))
	free := make(chan *grainJob, inflight)
	work := make(chan *grainJob, inflight)
	order := make(chan *grainJob, inflight)
	stop := make(chan struct{})
	for range inflight {
		free <- &grainJob{buf: make([]byte, unit), done: make(chan struct{}, 1)}
	}
	fillAll := w.o.Transform != nil && w.o.Subformat == SubformatMonolithicFlat

	go func() { // producer
		defer close(order)
		defer close(work)
		emit := func(kind jobKind, off, n int64, run int, force bool) bool {
			var j *grainJob
			select {
			case j = <-free:
			case <-stop:
				return false
			}
			j.kind, j.off, j.n, j.run, j.forceData = kind, off, n, run, force
			j.err = nil
			work <- j
			order <- j
			return true
		}
		gap := func(from, to int64, run int) bool {
			if !fillAll {
				return from >= to || emit(jobGap, from, to-from, run, false)
			}
			for p := from; p < to; p += unit {
				if !emit(jobGrain, p, min(unit, to-p), run, true) {
					return false
				}
			}
			return true
		}
		var pos int64
		runs := w.runs
		for ri := 0; ri < len(runs); ri++ {
			r := runs[ri]
			end := r.Off + r.Len
			if end <= pos {
				continue // inside a grain already emitted
			}
			gs := max(r.Off/unit*unit, pos)
			if !gap(pos, gs, ri) {
				return
			}
			for pos = gs; pos < end; pos += unit {
				if !emit(jobGrain, pos, min(unit, w.capBytes-pos), ri, fillAll) {
					return
				}
			}
			pos = min(pos, w.capBytes)
		}
		gap(pos, w.capBytes, len(runs))
	}()

	var wg sync.WaitGroup
	for range w.jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ws workerState
			for j := range work {
				select {
				case <-stop:
				case <-w.ctx.Done():
				default:
					if j.kind == jobGrain {
						j.err = w.doGrain(j, unit, &ws, compress, zeroAsData)
					}
				}
				j.done <- struct{}{}
			}
		}()
	}

	var err error
	var done int64
	for j := range order {
		<-j.done
		if err == nil {
			err = j.err
			if err == nil {
				err = w.ctx.Err()
			}
			if err == nil {
				err = sink.put(j)
			}
			if err == nil && w.o.Progress != nil {
				done += j.n
				w.o.Progress(done, w.capBytes)
			}
			if err != nil {
				close(stop)
			}
		}
		free <- j
	}
	wg.Wait()
	return err
}

// doGrain fills j.buf from the Data runs overlapping the grain and decides
// its state; compress also builds the stream grain in j.out.
func (w *diskWriter) doGrain(j *grainJob, unit int64, ws *workerState, compress, zeroAsData bool) error {
	end := j.off + j.n
	st := Zero
	if j.forceData {
		st = Data
	}
	runs := w.runs
	for k := j.run; k < len(runs) && runs[k].Off < end; k++ {
		if runs[k].State == Data && runs[k].Off+runs[k].Len > j.off {
			st = Data
			break
		}
	}
	buf := j.buf[:unit]
	if st == Data {
		clear(buf)
		for k := j.run; k < len(runs) && runs[k].Off < end; k++ {
			r := runs[k]
			a, b := max(r.Off, j.off), min(r.Off+r.Len, end)
			if r.State != Data || a >= b {
				continue
			}
			if err := deltaReadFull(w.src, buf[a-j.off:b-j.off], a); err != nil {
				return fmt.Errorf("reading the source at %d (%d bytes): %w", a, b-a, err)
			}
		}
		if w.o.Transform == nil && !j.forceData && AllZero(buf[:j.n]) {
			st = Zero
		}
	}
	if st == Zero && zeroAsData {
		clear(buf)
		st = Data
	}
	if st == Data && w.o.Transform != nil {
		w.o.Transform(buf[:j.n], buf[:j.n], j.off)
	}
	j.state = st
	if st == Data && compress {
		return w.compressGrain(j, buf, ws)
	}
	return nil
}

// compressGrain writes `u64 lba, u32 size, zlib(grain)` padded to a sector
// into j.out. The whole grain is compressed, zero-padded past the
// capacity, as VMware does.
func (w *diskWriter) compressGrain(j *grainJob, buf []byte, ws *workerState) error {
	j.out.Reset()
	var m [grainMarkerSize]byte
	binary.LittleEndian.PutUint64(m[0:], uint64(j.off/SectorSize))
	j.out.Write(m[:])
	if ws.zw == nil {
		zw, err := zlib.NewWriterLevel(&j.out, zlib.DefaultCompression)
		if err != nil {
			return err
		}
		ws.zw = zw
	} else {
		ws.zw.Reset(&j.out)
	}
	if _, err := ws.zw.Write(buf); err != nil {
		return err
	}
	if err := ws.zw.Close(); err != nil {
		return err
	}
	b := j.out.Bytes()
	binary.LittleEndian.PutUint32(b[8:], uint32(len(b)-grainMarkerSize))
	if pad := (SectorSize - len(b)%SectorSize) % SectorSize; pad > 0 {
		var z [SectorSize]byte
		j.out.Write(z[:pad])
	}
	return nil
}

// maxInflightBytes bounds the grain buffers in flight (about twice that
// for streams, whose jobs also hold the compressed grain).
const maxInflightBytes = 128 << 20

// grainMarkerSize is the `u64 lba, u32 size` prefix of a stream grain.
const grainMarkerSize = 12
