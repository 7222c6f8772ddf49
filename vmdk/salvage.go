package vmdk

import (
	"cmp"
	"errors"
	"io"
	"slices"
	"sync"
)

// Range is a byte range [Off, Off+Len) of a virtual disk.
type Range struct {
	Off int64 `json:"offset"`
	Len int64 `json:"length"`
}

// SalvageReader reads a damaged disk as far as it can: a read that fails
// with ErrCorrupt (a truncated extent, a grain past the end of its file, a
// grain that does not inflate) is retried sector by sector, and the
// sectors that still fail read as zeros and are recorded. Other errors
// (I/O, cancellation) are returned. It is safe for concurrent use.
type SalvageReader struct {
	r       io.ReaderAt
	mu      sync.Mutex
	missing []Range
}

// NewSalvageReader wraps r (a *Disk, or a decrypting view over one).
func NewSalvageReader(r io.ReaderAt) *SalvageReader { return &SalvageReader{r: r} }

// ReadAt fills p; unreadable sectors read as zeros.
func (s *SalvageReader) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.r.ReadAt(p, off)
	if err == nil || !errors.Is(err, ErrCorrupt) {
		return n, err
	}
	for i := int64(0); i < int64(len(p)); {
		k := min(SectorSize-(off+i)%SectorSize, int64(len(p))-i)
		q := p[i : i+k]
		if _, err := s.r.ReadAt(q, off+i); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				return int(i), err
			}
			clear(q)
			s.add(off+i, k)
		}
		i += k
	}
	return len(p), nil
}

func (s *SalvageReader) add(off, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := len(s.missing); k > 0 && s.missing[k-1].Off+s.missing[k-1].Len == off {
		s.missing[k-1].Len += n
		return
	}
	s.missing = append(s.missing, Range{off, n})
}

// Missing returns the ranges that read as zeros because they could not be
// read, sorted and merged.
func (s *SalvageReader) Missing() []Range {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := append([]Range(nil), s.missing...)
	slices.SortFunc(out, func(a, b Range) int { return cmp.Compare(a.Off, b.Off) })
	var m []Range
	for _, r := range out {
		if k := len(m); k > 0 && m[k-1].Off+m[k-1].Len >= r.Off {
			m[k-1].Len = max(m[k-1].Off+m[k-1].Len, r.Off+r.Len) - m[k-1].Off
			continue
		}
		m = append(m, r)
	}
	return m
}
