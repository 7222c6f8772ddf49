package vmdk

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
)

// Export of a virtual disk to a sparse raw file.
//
// ExportRaw and Copy take any io.ReaderAt with an allocation map, so a
// caller can put a layer in between (a decrypting ReaderAt over a chain).

// ExportRaw writes the first size bytes of src as a sparse raw image at
// path: a temporary file in the same folder (package outfile: locked, so
// that a later run removes it if this one is killed), truncated to size,
// the Data runs copied by Copy, synced and moved to path only when
// complete. An existing path is refused unless opts.Overwrite is set. On
// failure or cancellation no file is left behind.
func ExportRaw(ctx context.Context, path string, src io.ReaderAt, size int64, runs []Run, opts *CopyOptions) (err error) {
	if size < 0 {
		return fmt.Errorf("vmdk: export: negative size %d", size)
	}
	var o CopyOptions
	if opts != nil {
		o = *opts
	}
	for _, r := range runs {
		if r.Off < 0 || r.Len < 0 || r.Off+r.Len > size {
			return fmt.Errorf("vmdk: export: run %d+%d outside the %d-byte disk", r.Off, r.Len, size)
		}
	}
	tmp, err := outfile.Create(path, 0o644, o.Overwrite)
	if err != nil {
		return fmt.Errorf("vmdk: export: %w", err)
	}
	defer tmp.Abort()
	if err = tmp.Truncate(size); err != nil {
		return fmt.Errorf("vmdk: export: %w", err)
	}
	if _, err = Copy(ctx, tmp, src, size, runs, &o); err != nil {
		return fmt.Errorf("vmdk: export to %s: %w", path, err)
	}
	if err = tmp.Commit(o.Overwrite); err != nil {
		return fmt.Errorf("vmdk: export: %w", err)
	}
	return nil
}

// zeroBlock is the granularity of hole detection in Copy (the usual
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
