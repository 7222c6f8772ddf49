package memory

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// mixedMemory returns size bytes shaped like guest memory, page by page
// (4 KiB): zero pages, random pages, structured records with small
// variations, copies of pages 3..17 pages back (distance escapes), and
// page-table-like pages of 8-byte entries. Deterministic in seed.
func mixedMemory(seed uint64, size int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x766d656d))
	b := make([]byte, size)
	const pg = 4096
	for off := 0; off < size; off += pg {
		p := b[off:min(off+pg, size)]
		switch k := r.IntN(100); {
		case k < 35: // zero page
		case k < 50: // random page
			for i := range p {
				p[i] = byte(r.Uint32())
			}
		case k < 75: // structured records
			rec := []byte("proc:0000 state=R prio=20 name=svchost.exe ")
			for i := 0; i < len(p); i += len(rec) {
				binary.BigEndian.PutUint16(rec[5:], uint16(r.IntN(4)))
				rec[16] = "RSDZ"[r.IntN(4)]
				copy(p[i:], rec)
			}
		case k < 92: // a copy of an earlier page, far back
			back := (3 + r.IntN(15)) * pg
			if off >= back {
				copy(p, b[off-back:])
				if len(p) > 100 {
					p[r.IntN(len(p))] ^= 0x55 // one change, so it is not one match
				}
			}
		default: // page table: present entries, consecutive frames
			base := r.Uint64() & 0x000ffffff000
			for i := 0; i+8 <= len(p); i += 8 {
				binary.LittleEndian.PutUint64(p[i:], base+uint64(i/8)<<12|0x63)
			}
		}
	}
	return b
}

// compress encodes flat with opts and returns the container bytes and the
// encoder's stats.
func compress(t testing.TB, flat []byte, opts *WriterOptions) ([]byte, EncoderStats) {
	t.Helper()
	var out bytes.Buffer
	w, err := NewWriter(&out, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(flat); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes(), w.Stats()
}
