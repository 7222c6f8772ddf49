package memory

import (
	"fmt"
	"io"
	"slices"
)

// RegionEntry is one row of a region table in a report.
type RegionEntry struct {
	Index      int    `json:"index"`
	PPN        uint64 `json:"ppn"`        // first guest-physical page
	PageNum    uint64 `json:"pageNum"`    // first page in the flat memory file
	Pages      uint64 `json:"pages"`      // pages
	PhysStart  int64  `json:"physStart"`  // guest-physical byte address
	PhysEnd    int64  `json:"physEnd"`    // exclusive
	FlatOffset int64  `json:"flatOffset"` // byte offset in the flat memory file
	Size       int64  `json:"size"`       // bytes
}

// RegionTable returns the regions as report rows, in their file order.
func RegionTable(rs []Region) []RegionEntry {
	t := make([]RegionEntry, len(rs))
	for i, r := range rs {
		t[i] = RegionEntry{Index: i, PPN: r.PPN, PageNum: r.PageNum, Pages: r.Pages,
			PhysStart: r.PhysOffset(), PhysEnd: r.PhysOffset() + r.Size(), FlatOffset: r.FlatOffset(), Size: r.Size()}
	}
	return t
}

// PhysicalSize returns the size of the guest-physical image the regions
// describe: the end of the highest region.
func PhysicalSize(rs []Region) int64 {
	var end int64
	for _, r := range rs {
		end = max(end, r.PhysOffset()+r.Size())
	}
	return end
}

// Physical is the guest-physical view of a flat memory file: each region's
// pages at their guest-physical address, holes (and anything past the
// last region) reading as zeros. It is an io.ReaderAt safe for concurrent
// use if the flat file's ReadAt is.
type Physical struct {
	flat    io.ReaderAt
	regions []Region // sorted by PPN
	size    int64
}

// NewPhysical returns the guest-physical view of flat (flatSize bytes)
// laid out by regions. With no regions the flat file is guest-physical
// memory from address 0. A region reaching past flatSize, or regions that
// overlap, are errors wrapping keysafe.ErrCorrupt; name is used in errors.
func NewPhysical(flat io.ReaderAt, flatSize int64, regions []Region, name string) (*Physical, error) {
	if flatSize < 0 {
		return nil, fmt.Errorf("memory: negative flat size %d", flatSize)
	}
	if len(regions) == 0 {
		if flatSize == 0 {
			return &Physical{flat: flat}, nil
		}
		return &Physical{flat: flat, regions: []Region{{Pages: uint64(flatSize+PageSize-1) / PageSize}}, size: flatSize}, nil
	}
	if err := CheckRegions(regions); err != nil {
		return nil, &Error{File: name, Field: "memory regions", Msg: err.Error(), Err: errCorrupt}
	}
	p := &Physical{flat: flat, regions: slices.Clone(regions)}
	for i, r := range p.regions {
		if end := r.FlatOffset() + r.Size(); end > flatSize {
			return nil, corrupt(name, flatSize, "memory regions", "region %d ends at flat offset %d, the flat memory file has %d bytes", i, end, flatSize)
		}
	}
	slices.SortFunc(p.regions, func(a, b Region) int { return int64Cmp(int64(a.PPN), int64(b.PPN)) })
	p.size = PhysicalSize(p.regions)
	return p, nil
}

func int64Cmp(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Size returns the guest-physical size.
func (p *Physical) Size() int64 { return p.size }

// Regions returns the regions, sorted by guest-physical address.
func (p *Physical) Regions() []Region { return slices.Clone(p.regions) }

// ReadAt reads guest-physical memory.
func (p *Physical) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("memory: negative offset %d", off)
	}
	if off >= p.size {
		return 0, io.EOF
	}
	want := len(b)
	if int64(want) > p.size-off {
		b = b[:p.size-off]
	}
	n := 0
	for n < len(b) {
		pos := off + int64(n)
		// The region holding pos, or the next one above it.
		i, _ := slices.BinarySearchFunc(p.regions, pos, func(r Region, x int64) int {
			if r.PhysOffset()+r.Size() <= x {
				return -1
			}
			if r.PhysOffset() > x {
				return 1
			}
			return 0
		})
		if i == len(p.regions) || p.regions[i].PhysOffset() > pos {
			// A hole up to the next region (or the end).
			end := p.size
			if i < len(p.regions) {
				end = p.regions[i].PhysOffset()
			}
			k := int(min(int64(len(b)-n), end-pos))
			clear(b[n : n+k])
			n += k
			continue
		}
		r := p.regions[i]
		k := int(min(int64(len(b)-n), r.PhysOffset()+r.Size()-pos))
		got, err := p.flat.ReadAt(b[n:n+k], r.FlatOffset()+pos-r.PhysOffset())
		if got < k {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF // the flat file shrank
			}
			return n + got, err
		}
		n += k
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// PhysicalTarget is where WritePhysical writes: *os.File satisfies it.
type PhysicalTarget interface {
	io.WriterAt
	Truncate(size int64) error
}

// PhysicalStats says what WritePhysical did.
type PhysicalStats struct {
	Size        int64 `json:"size"`        // guest-physical image size
	Written     int64 `json:"written"`     // bytes written (non-zero pages)
	ZeroSkipped int64 `json:"zeroSkipped"` // bytes of all-zero pages left as holes
	FlatRead    int64 `json:"flatRead"`    // bytes of the flat file read
}

// WritePhysical reads the flat memory file from flat, in order (a
// FlatReader decoding a .vmem, or a plain file), and writes the
// guest-physical image to dst: each region's pages at their guest-physical
// offset. Holes and all-zero pages are not written, and dst is truncated to
// the image size, so a file stays sparse. With no regions the flat file is
// copied from address 0 (its size becomes the image size). The flat file
// ending before a region does is an error wrapping keysafe.ErrCorrupt
// (name is used in errors); flat bytes outside every region are read and
// dropped. Memory use is one 1 MiB buffer.
func WritePhysical(dst PhysicalTarget, flat io.Reader, regions []Region, name string) (PhysicalStats, error) {
	var st PhysicalStats
	identity := len(regions) == 0
	if identity {
		regions = []Region{{Pages: MaxPhysPages}}
	} else if err := CheckRegions(regions); err != nil {
		return st, &Error{File: name, Field: "memory regions", Msg: err.Error(), Err: errCorrupt}
	}
	rs := slices.Clone(regions)
	slices.SortFunc(rs, func(a, b Region) int { return int64Cmp(int64(a.PageNum), int64(b.PageNum)) })
	st.Size = PhysicalSize(rs)
	buf := make([]byte, 1<<20)
	var pos int64 // flat offset read so far
	for i, r := range rs {
		// Drop flat bytes before the region.
		if skip := r.FlatOffset() - pos; skip > 0 {
			n, err := io.CopyN(io.Discard, flat, skip)
			pos += n
			if err != nil {
				return st, flatErr(name, pos, i, r, err)
			}
		}
		left := r.Size()
		phys := r.PhysOffset()
		for left > 0 {
			k := int(min(int64(len(buf)), left))
			n, err := io.ReadFull(flat, buf[:k])
			if identity && n < k && (err == io.EOF || err == io.ErrUnexpectedEOF) {
				st.Size = phys + int64(n)
				left = int64(n) // write what there is, then stop
				k = n
				err = nil
			}
			if err != nil {
				return st, flatErr(name, pos+int64(n), i, r, err)
			}
			if err := writeNonZeroPages(dst, buf[:k], phys, &st); err != nil {
				return st, err
			}
			pos += int64(k)
			phys += int64(k)
			left -= int64(k)
		}
	}
	st.FlatRead = pos
	if err := dst.Truncate(st.Size); err != nil {
		return st, err
	}
	return st, nil
}

func flatErr(name string, pos int64, i int, r Region, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return corrupt(name, pos, "memory regions", "the flat memory file ends at %d, inside region %d (flat %d..%d)", pos, i, r.FlatOffset(), r.FlatOffset()+r.Size())
	}
	return err
}

// writeNonZeroPages writes b at off, page by page, leaving all-zero pages
// unwritten.
func writeNonZeroPages(dst io.WriterAt, b []byte, off int64, st *PhysicalStats) error {
	for len(b) > 0 {
		// Extend a run of non-zero pages, then write it at once.
		run := 0
		for run < len(b) {
			k := min(PageSize, len(b)-run)
			if allZero(b[run : run+k]) {
				break
			}
			run += k
		}
		if run > 0 {
			if _, err := dst.WriteAt(b[:run], off); err != nil {
				return err
			}
			st.Written += int64(run)
			b, off = b[run:], off+int64(run)
			continue
		}
		k := min(PageSize, len(b))
		st.ZeroSkipped += int64(k)
		b, off = b[k:], off+int64(k)
	}
	return nil
}
