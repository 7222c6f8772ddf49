package vmdk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"golang.org/x/sync/errgroup"
)

// Export of a virtual disk to a sparse raw file.
//
// ExportRaw and CopyRuns take any io.ReaderAt with an allocation map, so a
// caller can put a layer in between (the recover pipeline passes a
// decrypting ReaderAt over Disk or Link).

// Export tuning.
const (
	// copyChunk is the unit of parallel work: 1 MiB, a whole number of
	// grains for every grain size vmdk reads.
	copyChunk = 1 << 20
	// maxCopyJobs caps the worker count.
	maxCopyJobs = 256
)

// CopyOptions configures CopyRuns and ExportRaw.
type CopyOptions struct {
	// Jobs is the number of workers reading (and inflating) at once;
	// 0 means runtime.GOMAXPROCS(0).
	Jobs int
	// Progress, when set, is called from one goroutine at a time with the
	// number of virtual bytes just finished (Data runs only).
	Progress func(n int64)
	// Overwrite lets ExportRaw replace an existing file.
	Overwrite bool
}

// CopyRuns copies the Data runs of src to dst at the same offsets with a
// bounded pool of workers, in chunks of 1 MiB aligned to the virtual
// offset. Zero runs and chunks that read as all zeros are not written, so
// dst must already read zeros everywhere (a fresh file truncated to size)
// and stays sparse. Memory is Jobs chunks whatever the disk size.
func CopyRuns(dst io.WriterAt, src io.ReaderAt, runs []Run, opts *CopyOptions) error {
	var o CopyOptions
	if opts != nil {
		o = *opts
	}
	jobs := o.Jobs
	if jobs <= 0 {
		jobs = runtime.GOMAXPROCS(0)
	}
	jobs = min(jobs, maxCopyJobs)
	type chunk struct{ off, n int64 }
	g, ctx := errgroup.WithContext(context.Background())
	work := make(chan chunk, jobs*2)
	var progMu sync.Mutex
	g.Go(func() error {
		defer close(work)
		for _, r := range runs {
			if r.State != Data {
				continue
			}
			for off := r.Off; off < r.Off+r.Len; {
				n := min(r.Off+r.Len, (off/copyChunk+1)*copyChunk) - off
				select {
				case work <- chunk{off, n}:
				case <-ctx.Done():
					return ctx.Err()
				}
				off += n
			}
		}
		return nil
	})
	zero := make([]byte, copyChunk)
	for range jobs {
		g.Go(func() error {
			buf := make([]byte, copyChunk)
			for c := range work {
				b := buf[:c.n]
				if _, err := src.ReadAt(b, c.off); err != nil {
					return fmt.Errorf("read at %d: %w", c.off, err)
				}
				if err := writeNonZero(dst, b, c.off, zero); err != nil {
					return err
				}
				if o.Progress != nil {
					progMu.Lock()
					o.Progress(c.n)
					progMu.Unlock()
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// ExportRaw writes the first size bytes of src as a sparse raw image at
// path: a temporary file in the same folder, truncated to size, the Data
// runs copied by CopyRuns, synced and renamed to path only when complete.
// An existing path is refused unless opts.Overwrite is set. On failure no
// file is left behind.
func ExportRaw(path string, src io.ReaderAt, size int64, runs []Run, opts *CopyOptions) (err error) {
	if size < 0 {
		return fmt.Errorf("vmdk: export: negative size %d", size)
	}
	overwrite := opts != nil && opts.Overwrite
	if _, err := os.Lstat(path); err == nil && !overwrite {
		return fmt.Errorf("vmdk: export: %s: %w", path, os.ErrExist)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("vmdk: export: %w", err)
	}
	for _, r := range runs {
		if r.Off < 0 || r.Len < 0 || r.Off+r.Len > size {
			return fmt.Errorf("vmdk: export: run %d+%d outside the %d-byte disk", r.Off, r.Len, size)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("vmdk: export: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Truncate(size); err != nil {
		return fmt.Errorf("vmdk: export: %w", err)
	}
	if err = CopyRuns(tmp, src, runs, opts); err != nil {
		return fmt.Errorf("vmdk: export to %s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("vmdk: export: %w", err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("vmdk: export: %w", err)
	}
	if !overwrite {
		// refuse a file that appeared meanwhile
		if err = os.Link(tmp.Name(), path); err == nil {
			os.Remove(tmp.Name())
			return nil
		}
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("vmdk: export: %w", err)
		}
		// no hard links on this file system: rename
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("vmdk: export: %w", err)
	}
	return nil
}

// zeroBlock is the granularity of hole detection in CopyRuns (the usual
// file-system block).
const zeroBlock = 4096

// writeNonZero writes b at off except its all-zero 4 KiB blocks (aligned
// to the virtual offset), so the output keeps holes.
func writeNonZero(dst io.WriterAt, b []byte, off int64, zero []byte) error {
	if bytes.Equal(b, zero[:len(b)]) {
		return nil
	}
	start := -1 // start of the pending non-zero span in b
	for i := 0; i < len(b); {
		n := min(len(b)-i, zeroBlock-int((off+int64(i))%zeroBlock))
		isZero := bytes.Equal(b[i:i+n], zero[:n])
		if !isZero && start < 0 {
			start = i
		}
		if isZero && start >= 0 {
			if _, err := dst.WriteAt(b[start:i], off+int64(start)); err != nil {
				return err
			}
			start = -1
		}
		i += n
	}
	if start >= 0 {
		if _, err := dst.WriteAt(b[start:], off+int64(start)); err != nil {
			return err
		}
	}
	return nil
}
