package vm

import (
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// SectorSize is the XTS data unit of encrypted disks: one 512-byte sector.
const SectorSize = 512

// Chain is what the decrypting layer needs of an opened VMDK chain: its
// virtual size, its allocation map, and the bytes one link stores (the
// ciphertext, for an encrypted link). The adapter over *vmdk.Disk is
// chainAdapter.
type Chain interface {
	// Size is the virtual size in bytes.
	Size() int64
	// Runs is the allocation map: sorted, non-overlapping Data and Zero
	// runs (holes are not listed), each naming the link that holds it.
	Runs() []vmdk.Run
	// Levels is the number of links: 0 = the top disk, Levels()-1 the base.
	Levels() int
	// ReadLevel fills p with the bytes link level stores at virtual offset
	// off; [off, off+len(p)) lies inside one Data run of that level.
	ReadLevel(level int, p []byte, off int64) error
}

// SectorCipher decrypts whole 512-byte sectors in place or to dst, with the
// tweak of the first sector = lba (recover/xts's *Cipher).
type SectorCipher interface {
	DecryptSectors(dst, src []byte, lba uint64)
}

// PlainDisk is the plaintext of a possibly encrypted VMDK chain, as an
// io.ReaderAt safe for concurrent use (state from the offset only).
//
// MODEL (docs/formats.md §8): for every allocated Data run held by link k,
// the stored bytes of link k are decrypted with link k's XTS-AES-256 key,
// data unit one sector, tweak = the virtual LBA. Zero runs and holes read
// as zeros and are never decrypted; a stored sector of all zeros reads as
// zeros (PUBLIC: vSphere stores zero blocks unencrypted); a link without a
// key (a plain link) passes its bytes through.
type PlainDisk struct {
	c       Chain
	size    int64
	runs    []vmdk.Run
	ciphers []SectorCipher
	name    string
	scratch sync.Pool // *[]byte, for unaligned reads
}

// NewPlainDisk returns the decrypted view of c. ciphers[k] decrypts link k (nil
// for a plain link); it has c.Levels() entries. Every Data run of an
// encrypted link must be sector-aligned. name is used in errors.
func NewPlainDisk(c Chain, ciphers []SectorCipher, name string) (*PlainDisk, error) {
	if len(ciphers) != c.Levels() {
		return nil, fmt.Errorf("vm: %s: %d link keys for %d links", name, len(ciphers), c.Levels())
	}
	runs := c.Runs()
	size := c.Size()
	var end int64
	for i, r := range runs {
		if r.Off < end || r.Len <= 0 || r.Off+r.Len > size || r.Level < 0 || r.Level >= c.Levels() {
			return nil, fmt.Errorf("vm: %s: allocation map run %d (%d+%d level %d) is out of order or outside the disk: %w", name, i, r.Off, r.Len, r.Level, keysafe.ErrCorrupt)
		}
		if r.State == vmdk.Data && ciphers[r.Level] != nil && (r.Off%SectorSize != 0 || r.Len%SectorSize != 0) {
			return nil, fmt.Errorf("vm: %s: encrypted run at %d+%d is not sector-aligned: %w", name, r.Off, r.Len, keysafe.ErrCorrupt)
		}
		end = r.Off + r.Len
	}
	return &PlainDisk{c: c, size: size, runs: runs, ciphers: ciphers, name: name}, nil
}

// Size is the virtual size in bytes.
func (d *PlainDisk) Size() int64 { return d.size }

// Runs is the allocation map of the chain (shared; do not modify).
func (d *PlainDisk) Runs() []vmdk.Run { return d.runs }

// Encrypted reports whether link level is decrypted.
func (d *PlainDisk) Encrypted(level int) bool { return d.ciphers[level] != nil }

// DataBytes is the number of allocated Data bytes (what a copy reads).
func (d *PlainDisk) DataBytes() int64 {
	var n int64
	for _, r := range d.runs {
		if r.State == vmdk.Data {
			n += r.Len
		}
	}
	return n
}

// ReadAt reads plaintext. A read past the end returns io.EOF with the bytes
// before it.
func (d *PlainDisk) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("vm: %s: negative offset %d", d.name, off)
	}
	if off >= d.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if int64(len(p)) > d.size-off {
		p = p[:d.size-off]
	}
	if err := d.read(p, off); err != nil {
		return 0, err
	}
	if len(p) < want {
		return len(p), io.EOF
	}
	return len(p), nil
}

// read fills p (inside the disk) from the runs.
func (d *PlainDisk) read(p []byte, off int64) error {
	i := sort.Search(len(d.runs), func(i int) bool { return d.runs[i].Off+d.runs[i].Len > off })
	for len(p) > 0 {
		if i >= len(d.runs) || d.runs[i].Off >= off+int64(len(p)) {
			clear(p)
			return nil
		}
		r := d.runs[i]
		if r.Off > off { // hole before the run
			n := r.Off - off
			clear(p[:n])
			p, off = p[n:], r.Off
		}
		n := min(int64(len(p)), r.Off+r.Len-off)
		if r.State == vmdk.Data {
			if err := d.readData(r.Level, p[:n], off); err != nil {
				return err
			}
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+n
		i++
	}
	return nil
}

// readData reads and decrypts bytes of one Data run of link level.
func (d *PlainDisk) readData(level int, p []byte, off int64) error {
	c := d.ciphers[level]
	if c == nil {
		return d.c.ReadLevel(level, p, off)
	}
	if off%SectorSize == 0 && len(p)%SectorSize == 0 {
		if err := d.c.ReadLevel(level, p, off); err != nil {
			return err
		}
		decryptNonZero(c, p, uint64(off/SectorSize))
		return nil
	}
	// Unaligned: decrypt the covering sectors into scratch (runs are
	// sector-aligned, so they lie inside the run).
	start := off &^ (SectorSize - 1)
	end := (off + int64(len(p)) + SectorSize - 1) &^ (SectorSize - 1)
	bp, _ := d.scratch.Get().(*[]byte)
	if bp == nil || int64(cap(*bp)) < end-start {
		b := make([]byte, end-start)
		bp = &b
	}
	defer d.scratch.Put(bp)
	b := (*bp)[:end-start]
	if err := d.c.ReadLevel(level, b, start); err != nil {
		return err
	}
	decryptNonZero(c, b, uint64(start/SectorSize))
	copy(p, b[off-start:])
	return nil
}

// decryptNonZero decrypts the sectors of b in place, tweak of the first =
// lba, except those stored as all zeros: vSphere stores all-zero blocks of
// encrypted disks unencrypted (docs/formats.md §8), and a real ciphertext
// sector is all zeros with probability 2^-4096. Runs of non-zero sectors
// are decrypted in one call, so the fast path stays batched.
func decryptNonZero(c SectorCipher, b []byte, lba uint64) {
	n := len(b) / SectorSize
	for i := 0; i < n; {
		if vmdk.AllZero(b[i*SectorSize : (i+1)*SectorSize]) {
			i++
			continue
		}
		j := i + 1
		for j < n && !vmdk.AllZero(b[j*SectorSize:(j+1)*SectorSize]) {
			j++
		}
		c.DecryptSectors(b[i*SectorSize:j*SectorSize], b[i*SectorSize:j*SectorSize], lba+uint64(i))
		i = j
	}
}
