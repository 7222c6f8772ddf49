package scan

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"testing"
)

// FuzzDetect builds a disk image of up to 2 TiB from a few fuzzed fields
// without holding it: a partition table (none, MBR or GPT, its entries
// from parts) and a file-system template at each partition's start (or at
// 0), read through a reader that returns zeros between those pieces. The
// patch triplets (big-endian u16 offset, byte) then XOR bytes of the
// pieces: the table sectors, the GPT entries, the template. Detect must
// never fail on a readable disk, must report offsets inside it, must read
// a bounded amount, and, unchanged, must report exactly the table and the
// templates laid out.
func FuzzDetect(f *testing.F) {
	f.Add(uint8(0), []byte{}, uint8(1), []byte{}, uint32(1<<20))                                           // ext4 on the whole disk
	f.Add(uint8(1), []byte{0, 8, 0x83, 1, 0, 0x07, 2, 0, 0x05}, uint8(2), []byte{}, uint32(1<<20))         // MBR, NTFS in each, an extended entry
	f.Add(uint8(1), []byte{0, 8, 0xee}, uint8(4), []byte{}, uint32(1<<20))                                 // a lone protective MBR
	f.Add(uint8(2), []byte{0, 34, 1, 0x10, 0, 2, 0xff, 0xff, 3}, uint8(7), []byte{}, uint32(1<<20))        // GPT, btrfs
	f.Add(uint8(2), []byte{0, 34, 1}, uint8(9), []byte{0x40, 0x50, 0x01, 0x40, 0x48, 0xff}, uint32(1<<20)) // GPT header patched
	f.Add(uint8(0), []byte{}, uint8(6), []byte{0x80, 0x20, 0x01}, uint32(100))                             // LVM, patched
	f.Add(uint8(1), []byte{0, 8, 0x83}, uint8(3), []byte{}, uint32(9))                                     // partition past the end
	f.Fuzz(func(t *testing.T, scheme uint8, parts []byte, fs uint8, patch []byte, sectors uint32) {
		if len(parts) > 3*(maxGPTEntries+4) || len(patch) > 3*16 {
			return
		}
		d, want := buildDisk(scheme, parts, fs, int64(sectors)+1)
		changed := d.patch(patch)
		cr := &countingDisk{d: d}
		sigs, err := Detect(cr, d.size)
		if err != nil {
			t.Fatalf("Detect: %v", err)
		}
		for _, s := range sigs {
			if s.Off < 0 || s.Off >= d.size || s.Name == "" {
				t.Fatalf("signature %v outside the %d-byte disk", s, d.size)
			}
		}
		if max := int64(MaxPartitions+2)*probeLen + maxGPTEntries*4096; cr.n > max {
			t.Fatalf("read %d bytes, more than %d", cr.n, max)
		}
		if !changed && !slices.Equal(sigs, want) {
			t.Fatalf("signatures %v, built %v", sigs, want)
		}
	})
}

// fsTemplates are file systems and containers as Detect knows them, each
// with the bytes that mark it (offsets from the partition start) and what
// it must be reported as, written from the formats' documentation apart
// from Detect's code.
var fsTemplates = []struct {
	name  string
	at    int64 // reported offset
	enc   bool
	marks []mark
}{
	{"", 0, false, nil}, // nothing
	{"ext4", 1080, false, []mark{{1080, "\x53\xef"}, {1120, "\x40"}}},
	{"NTFS", 3, false, []mark{{3, "NTFS    "}}},
	{"ext3", 1080, false, []mark{{1080, "\x53\xef"}, {1116, "\x04"}}},
	{"XFS", 0, false, []mark{{0, "XFSB"}}},
	{"LUKS", 0, true, []mark{{0, "LUKS\xba\xbe\x00\x02"}}},
	{"LVM2 PV", 512, false, []mark{{512, "LABELONE"}, {536, "LVM2 001"}}},
	{"btrfs", 65600, false, []mark{{65600, "_BHRfS_M"}}},
	{"Linux swap", 4086, false, []mark{{4086, "SWAPSPACE2"}}},
	{"BitLocker", 3, true, []mark{{3, "-FVE-FS-"}}},
	{"exFAT", 3, false, []mark{{3, "EXFAT   "}}},
	{"FAT32", 82, false, []mark{{82, "FAT32   "}}},
	{"FAT16", 54, false, []mark{{54, "FAT16"}}},
	{"ext2", 1080, false, []mark{{1080, "\x53\xef"}}},
}

type mark struct {
	off int64
	b   string
}

// piece is a run of bytes of the disk; zeros lie between pieces.
type piece struct {
	off int64
	b   []byte
}

// sparseDisk is a disk of size bytes made of pieces.
type sparseDisk struct {
	size   int64
	pieces []piece
}

func (d *sparseDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= d.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > d.size-off {
		n = int(d.size - off)
	}
	clear(p[:n])
	for _, pc := range d.pieces {
		lo, hi := max(off, pc.off), min(off+int64(n), pc.off+int64(len(pc.b)))
		if lo < hi {
			copy(p[lo-off:hi-off], pc.b[lo-pc.off:hi-pc.off])
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// patch XORs the triplets into the pieces (offset modulo their total
// length) and reports whether a byte changed.
func (d *sparseDisk) patch(p []byte) bool {
	total := 0
	for _, pc := range d.pieces {
		total += len(pc.b)
	}
	changed := false
	for i := 0; i+3 <= len(p) && total > 0; i += 3 {
		o := int(binary.BigEndian.Uint16(p[i:])) % total
		for _, pc := range d.pieces {
			if o < len(pc.b) {
				pc.b[o] ^= p[i+2]
				changed = changed || p[i+2] != 0
				break
			}
			o -= len(pc.b)
		}
	}
	return changed
}

type countingDisk struct {
	d *sparseDisk
	n int64
}

func (c *countingDisk) ReadAt(p []byte, off int64) (int, error) {
	c.n += int64(len(p))
	return c.d.ReadAt(p, off)
}

// partStart is the start sector a parts entry gives: a multiple of 256
// sectors (128 KiB), so that templates (which reach 64 KiB + 72) never
// overlap each other or the partition table.
func partStart(p []byte) int64 { return int64(binary.BigEndian.Uint16(p)) * 256 }

// buildDisk lays out a disk of sectors sectors: scheme%3 0 = a file
// system on the whole disk, 1 = MBR with up to four entries from parts
// (u16 start in 128 KiB units, type), 2 = protective MBR + GPT with an entry per
// triplet (u16 start, type byte 0 = an unused entry); template
// fs%len(fsTemplates) at every partition start. It returns the disk and
// the signatures Detect must report for it.
func buildDisk(scheme uint8, parts []byte, fs uint8, sectors int64) (*sparseDisk, []Signature) {
	d := &sparseDisk{size: sectors * 512}
	tpl := fsTemplates[int(fs)%len(fsTemplates)]
	var want []Signature
	// The template's bytes at start: a 4 KiB block plus the marks
	// further out (btrfs), each a piece.
	place := func(start int64) {
		if start <= 0 && scheme%3 != 0 || start >= d.size {
			return
		}
		blk := make([]byte, 4096)
		for _, m := range tpl.marks {
			if m.off+int64(len(m.b)) <= int64(len(blk)) {
				copy(blk[m.off:], m.b)
			} else {
				d.pieces = append(d.pieces, piece{start + m.off, []byte(m.b)})
			}
		}
		d.pieces = append(d.pieces, piece{start, blk})
		if tpl.name != "" && start+tpl.at < d.size {
			want = append(want, Signature{tpl.name, start + tpl.at, tpl.enc})
		}
	}
	le := binary.LittleEndian
	head := make([]byte, 1024)
	switch scheme % 3 {
	case 0:
		place(0)
		return d, want
	case 1:
		var starts []int64
		protective := false
		n := 0
		for i := 0; i+3 <= len(parts) && n < 4; i += 3 {
			start, typ := partStart(parts[i:]), parts[i+2]
			if typ == 0 || start == 0 {
				continue
			}
			e := head[446+16*n:]
			e[4] = typ
			le.PutUint32(e[8:], uint32(start))
			le.PutUint32(e[12:], 2048)
			n++
			switch typ {
			case 0xee:
				protective = true
			case 0x05, 0x0f, 0x85:
			default:
				starts = append(starts, start*512)
			}
		}
		if n > 0 {
			head[510], head[511] = 0x55, 0xaa
			if protective {
				want = append(want, Signature{Name: "protective MBR"})
			} else if len(starts) > 0 {
				want = append(want, Signature{Name: "MBR partition table"})
			}
		}
		d.pieces = append(d.pieces, piece{0, head})
		if protective {
			return d, want
		}
		if n == 0 || len(starts) == 0 {
			place(0)
			return d, want
		}
		for _, s := range starts[:min(len(starts), MaxPartitions)] {
			place(s)
		}
		return d, want
	}
	// GPT: protective MBR, header at LBA 1, 128-byte entries from LBA 2.
	e := head[446:]
	e[4] = 0xee
	le.PutUint32(e[8:], 1)
	le.PutUint32(e[12:], uint32(max(1, min(sectors-1, 0xffffffff))))
	head[510], head[511] = 0x55, 0xaa
	copy(head[512:], "EFI PART")
	n := len(parts) / 3
	le.PutUint64(head[512+72:], 2)
	le.PutUint32(head[512+80:], uint32(max(n, 1)))
	le.PutUint32(head[512+84:], 128)
	want = append(want, Signature{Name: "protective MBR"})
	if sectors >= 2 { // else the GPT header lies past the end
		want = append(want, Signature{Name: "GPT", Off: 512})
	}
	d.pieces = append(d.pieces, piece{0, head})
	ents := make([]byte, max(n, 1)*128)
	var starts []int64
	for i := 0; i < n; i++ {
		start, typ := partStart(parts[3*i:]), parts[3*i+2]
		if typ == 0 {
			continue
		}
		ents[128*i] = typ // type GUID, non-zero
		le.PutUint64(ents[128*i+32:], uint64(start))
		le.PutUint64(ents[128*i+40:], uint64(start+2047))
		if i < maxGPTEntries && start > 0 && start < sectors && len(starts) < MaxPartitions {
			starts = append(starts, start*512)
		}
	}
	if 2 <= sectors { // the entries' LBA must lie inside the disk
		d.pieces = append(d.pieces, piece{2 * 512, ents})
		for _, s := range starts {
			place(s)
		}
	}
	return d, want
}
