package scan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Bounds of signature detection: how much of a disk is read.
const (
	// MaxPartitions caps the partitions probed (MBR primaries or GPT
	// entries).
	MaxPartitions = 16
	// probeLen is what is read at each probed offset: enough for every
	// signature below (btrfs sits at 64 KiB + 64).
	probeLen = 68 << 10
	// maxGPTEntries caps the GPT entries read (128 is the standard).
	maxGPTEntries = 128
)

// Signature is a recognised structure found on a disk.
type Signature struct {
	Name string `json:"name"`   // e.g. "MBR", "GPT", "ext4", "NTFS"
	Off  int64  `json:"offset"` // virtual byte offset of the structure
	// GuestEncrypted marks containers encrypted inside the guest (LUKS,
	// BitLocker): their content is not exposed by a plain disk.
	GuestEncrypted bool `json:"guestEncrypted,omitempty"`
}

func (s Signature) String() string { return fmt.Sprintf("%s at %d", s.Name, s.Off) }

// Detect looks for partition tables and file-system signatures at the
// start of a disk and at the start of each partition it lists (at most
// MaxPartitions). It reads at most (MaxPartitions+2) * 68 KiB plus the GPT
// entries (16 KiB), never the whole disk. Read errors other than io.EOF
// are returned with what was found so far.
func Detect(r io.ReaderAt, size int64) ([]Signature, error) {
	head := make([]byte, probeLen)
	if err := readFull(r, head, 0, size); err != nil {
		return nil, err
	}
	var sigs []Signature
	var parts []int64
	gpt := false
	if head[510] == 0x55 && head[511] == 0xAA {
		var entries []int64
		valid := true
		protective := false
		for i := range 4 {
			e := head[446+16*i : 462+16*i]
			if e[0] != 0 && e[0] != 0x80 {
				valid = false
				break
			}
			typ := e[4]
			start := int64(binary.LittleEndian.Uint32(e[8:]))
			n := int64(binary.LittleEndian.Uint32(e[12:]))
			if typ == 0 {
				continue
			}
			if start == 0 || n == 0 {
				valid = false
				break
			}
			if typ == 0xEE {
				protective = true
			}
			if typ != 0x05 && typ != 0x0f && typ != 0x85 && typ != 0xEE { // not extended
				entries = append(entries, start*512)
			}
		}
		if valid && len(entries)+boolInt(protective) > 0 {
			if protective {
				sigs = append(sigs, Signature{Name: "protective MBR", Off: 0})
			} else {
				sigs = append(sigs, Signature{Name: "MBR partition table", Off: 0})
				parts = entries
			}
		}
	}
	if bytes.Equal(head[512:520], []byte("EFI PART")) {
		gpt = true
		sigs = append(sigs, Signature{Name: "GPT", Off: 512})
		p, err := gptPartitions(r, head[512:1024], size)
		if err != nil {
			return sigs, err
		}
		parts = p
	}
	// A file system on the whole disk (no partition table), then in each
	// partition.
	if !gpt && len(parts) == 0 {
		sigs = append(sigs, probe(head, 0)...)
	}
	if len(parts) > MaxPartitions {
		parts = parts[:MaxPartitions]
	}
	buf := make([]byte, probeLen)
	for _, p := range parts {
		if p <= 0 || p >= size {
			continue
		}
		if err := readFull(r, buf, p, size); err != nil {
			return sigs, err
		}
		sigs = append(sigs, probe(buf, p)...)
	}
	return sigs, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// gptPartitions returns the start offsets of the used GPT entries.
func gptPartitions(r io.ReaderAt, h []byte, size int64) ([]int64, error) {
	le := binary.LittleEndian
	lba := int64(le.Uint64(h[72:]))
	n := int64(le.Uint32(h[80:]))
	esz := int64(le.Uint32(h[84:]))
	if esz < 128 || esz > 4096 || n == 0 || lba < 2 || lba > size/512 {
		return nil, nil // not a usable header: report the GPT, probe nothing
	}
	n = min(n, maxGPTEntries)
	b := make([]byte, n*esz)
	if err := readFull(r, b, lba*512, size); err != nil {
		return nil, err
	}
	var parts []int64
	for i := int64(0); i < n && len(parts) < MaxPartitions; i++ {
		e := b[i*esz : (i+1)*esz]
		if allZero(e[:16]) {
			continue
		}
		if first := int64(le.Uint64(e[32:])); first > 0 && first < size/512 {
			parts = append(parts, first*512)
		}
	}
	return parts, nil
}

// probe checks b, the first 68 KiB at offset off, for file systems,
// volume managers and guest encryption.
func probe(b []byte, off int64) []Signature {
	var s []Signature
	add := func(name string, at int64, enc bool) { s = append(s, Signature{name, off + at, enc}) }
	le := binary.LittleEndian
	if le.Uint16(b[1080:]) == 0xEF53 && le.Uint32(b[1024+24:]) <= 6 {
		name := "ext2"
		switch inc := le.Uint32(b[1024+96:]); {
		case inc&0x40 != 0: // extents
			name = "ext4"
		case le.Uint32(b[1024+92:])&0x4 != 0: // has_journal
			name = "ext3"
		}
		add(name, 1080, false)
	}
	switch {
	case bytes.Equal(b[3:11], []byte("NTFS    ")):
		add("NTFS", 3, false)
	case bytes.Equal(b[3:11], []byte("EXFAT   ")):
		add("exFAT", 3, false)
	case bytes.Equal(b[3:11], []byte("-FVE-FS-")):
		add("BitLocker", 3, true)
	}
	if bytes.Equal(b[82:90], []byte("FAT32   ")) {
		add("FAT32", 82, false)
	} else if bytes.Equal(b[54:59], []byte("FAT16")) || bytes.Equal(b[54:59], []byte("FAT12")) {
		add(string(b[54:59]), 54, false)
	}
	if bytes.Equal(b[0:4], []byte("XFSB")) {
		add("XFS", 0, false)
	}
	if bytes.Equal(b[0:6], []byte("LUKS\xba\xbe")) {
		add("LUKS", 0, true)
	}
	for sec := int64(0); sec < 4; sec++ {
		if bytes.Equal(b[sec*512:sec*512+8], []byte("LABELONE")) && bytes.Equal(b[sec*512+24:sec*512+32], []byte("LVM2 001")) {
			add("LVM2 PV", sec*512, false)
			break
		}
	}
	if bytes.Equal(b[65536+64:65536+72], []byte("_BHRfS_M")) {
		add("btrfs", 65536+64, false)
	}
	if bytes.Equal(b[4086:4096], []byte("SWAPSPACE2")) {
		add("Linux swap", 4086, false)
	}
	return s
}

// readFull reads len(p) bytes at off; bytes past size read as zeros.
func readFull(r io.ReaderAt, p []byte, off, size int64) error {
	clear(p)
	if off >= size {
		return nil
	}
	q := p[:min(int64(len(p)), size-off)]
	n, err := r.ReadAt(q, off)
	if n == len(q) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
