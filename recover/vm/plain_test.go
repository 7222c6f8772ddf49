package vm

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/sha256"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/iotest"

	"golang.org/x/crypto/xts"

	"github.com/vmcrypt/vmcrypt/vmdk"
)

// memChain is a Chain held in memory: per level, the stored bytes (the
// ciphertext for an encrypted level) at their virtual offsets.
type memChain struct {
	size   int64
	stored [][]byte
	runs   []vmdk.Run
	reads  sync.Map // level -> count, to prove holes are not read
}

func (m *memChain) Size() int64      { return m.size }
func (m *memChain) Runs() []vmdk.Run { return m.runs }
func (m *memChain) Levels() int      { return len(m.stored) }
func (m *memChain) ReadLevel(level int, p []byte, off int64) error {
	for _, r := range m.runs {
		if r.State == vmdk.Data && r.Level == level && off >= r.Off && off+int64(len(p)) <= r.Off+r.Len {
			copy(p, m.stored[level][off:])
			return nil
		}
	}
	return errors.New("memChain: read outside a Data run of its level")
}

// xtsCipher adapts golang.org/x/crypto/xts (an independent implementation)
// to SectorCipher.
type xtsCipher struct{ c *xts.Cipher }

func (x xtsCipher) DecryptSectors(dst, src []byte, lba uint64) {
	for i := 0; i < len(src); i += SectorSize {
		x.c.Decrypt(dst[i:i+SectorSize], src[i:i+SectorSize], lba)
		lba++
	}
}

func (x xtsCipher) encrypt(b []byte, lba uint64) {
	for i := 0; i < len(b); i += SectorSize {
		x.c.Encrypt(b[i:i+SectorSize], b[i:i+SectorSize], lba)
		lba++
	}
}

func newXTS(t testing.TB, seed byte) xtsCipher {
	k := make([]byte, 64)
	for i := range k {
		k[i] = seed + byte(i)
	}
	c, err := xts.NewCipher(aes.NewCipher, k)
	if err != nil {
		t.Fatal(err)
	}
	return xtsCipher{c}
}

// buildChain makes a 2-level chain (top encrypted with key 1, base with key
// 2 or plain) and returns it with the expected plaintext.
func buildChain(t testing.TB, size int64, baseEncrypted bool) (*memChain, []SectorCipher, []byte) {
	rng := mrand.New(mrand.NewPCG(7, uint64(size)))
	want := make([]byte, size)
	stored := [][]byte{make([]byte, size), make([]byte, size)}
	var runs []vmdk.Run
	ciphers := []SectorCipher{newXTS(t, 1), nil}
	if baseEncrypted {
		ciphers[1] = newXTS(t, 2)
	}
	grain := int64(64 << 10)
	for off := int64(0); off < size; off += grain {
		var r vmdk.Run
		zeroStored := false
		switch rng.IntN(7) {
		case 0: // hole
			continue
		case 1:
			r = vmdk.Run{Off: off, Len: grain, State: vmdk.Zero, Level: rng.IntN(2)}
		case 2: // an allocated grain of zeros: still ciphertext
			r = vmdk.Run{Off: off, Len: grain, State: vmdk.Data, Level: rng.IntN(2)}
		case 3: // every other sector zero, stored as zeros (vSphere, §8)
			r = vmdk.Run{Off: off, Len: grain, State: vmdk.Data, Level: rng.IntN(2)}
			zeroStored = true
			for i := off; i < off+grain; i++ {
				if (i/SectorSize)%2 == 1 {
					want[i] = byte(rng.Uint32())
				}
			}
		default:
			r = vmdk.Run{Off: off, Len: grain, State: vmdk.Data, Level: rng.IntN(2)}
			for i := off; i < off+grain; i++ {
				want[i] = byte(rng.Uint32())
			}
		}
		if r.State == vmdk.Data {
			s := stored[r.Level][off : off+grain]
			copy(s, want[off:off+grain])
			if c := ciphers[r.Level]; c != nil {
				for i := int64(0); i < grain; i += SectorSize {
					if zeroStored && vmdk.AllZero(s[i:i+SectorSize]) {
						continue
					}
					c.(xtsCipher).encrypt(s[i:i+SectorSize], uint64((off+i)/SectorSize))
				}
			}
		}
		if n := len(runs); n > 0 && runs[n-1].Off+runs[n-1].Len == r.Off && runs[n-1].State == r.State && runs[n-1].Level == r.Level {
			runs[n-1].Len += r.Len
		} else {
			runs = append(runs, r)
		}
	}
	return &memChain{size: size, stored: stored, runs: runs}, ciphers, want
}

func TestDiskReadAt(t *testing.T) {
	for _, baseEnc := range []bool{true, false} {
		c, ciphers, want := buildChain(t, 1<<20, baseEnc)
		d, err := NewPlainDisk(c, ciphers, "test.vmdk")
		if err != nil {
			t.Fatal(err)
		}
		if err := iotest.TestReader(io.NewSectionReader(d, 0, 256<<10), want[:256<<10]); err != nil {
			t.Fatal(err)
		}
		// Unaligned reads across runs.
		for _, r := range []struct{ off, n int64 }{{1, 1000}, {65535, 3}, {100000, 300000}, {1<<20 - 7, 7}} {
			got := make([]byte, r.n)
			if _, err := d.ReadAt(got, r.off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want[r.off:r.off+r.n]) {
				t.Fatalf("ReadAt(%d,%d) differs", r.off, r.n)
			}
		}
	}
}

// Without the right key the bytes differ: the layer really decrypts.
func TestDiskWrongKeyDiffers(t *testing.T) {
	c, ciphers, want := buildChain(t, 1<<20, true)
	ciphers[0] = newXTS(t, 9)
	d, _ := NewPlainDisk(c, ciphers, "x")
	got := make([]byte, len(want))
	d.ReadAt(got, 0)
	if bytes.Equal(got, want) {
		t.Fatal("decrypted with the wrong key yet equal")
	}
}

func TestCopy(t *testing.T) {
	c, ciphers, want := buildChain(t, 4<<20, true)
	d, err := NewPlainDisk(c, ciphers, "test.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	wantSum := sha256.Sum256(want)
	for _, jobs := range []int{1, 2, 7} {
		for _, cs := range []int64{4096, 64 << 10, 1 << 20, 3 << 20} {
			path := filepath.Join(t.TempDir(), "out.img")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			f.Truncate(d.Size())
			var calls, last int64
			sum, err := vmdk.Copy(context.Background(), f, d, d.Size(), d.Runs(), &vmdk.CopyOptions{Hash: true, Jobs: jobs, ChunkSize: cs,
				Progress: func(done, total int64) { calls++; last = done; _ = total }})
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if !bytes.Equal(got, want) {
				t.Fatalf("jobs %d chunk %d: output differs", jobs, cs)
			}
			if sum != wantSum {
				t.Fatalf("jobs %d chunk %d: sha256 differs", jobs, cs)
			}
			if last != d.DataBytes() || calls == 0 {
				t.Fatalf("progress ended at %d of %d", last, d.DataBytes())
			}
		}
	}
}

// A cancel from the progress callback stops the copy with ctx's error.
func TestCopyCancel(t *testing.T) {
	c, ciphers, _ := buildChain(t, 8<<20, true)
	d, _ := NewPlainDisk(c, ciphers, "x")
	ctx, cancel := context.WithCancel(context.Background())
	_, err := vmdk.Copy(ctx, discardAt{}, d, d.Size(), d.Runs(), &vmdk.CopyOptions{Hash: true, Jobs: 2, ChunkSize: 64 << 10,
		Progress: func(done, total int64) {
			if done > total/2 {
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

// A read error stops the copy with that error.
func TestCopyReadError(t *testing.T) {
	boom := errors.New("boom")
	src := readerAtFunc(func(p []byte, off int64) (int, error) {
		if off >= 512<<10 {
			return 0, boom
		}
		return len(p), nil
	})
	_, err := vmdk.Copy(context.Background(), discardAt{}, src, 1<<20,
		[]vmdk.Run{{Off: 0, Len: 1 << 20, State: vmdk.Data}}, &vmdk.CopyOptions{Hash: true, Jobs: 2, ChunkSize: 64 << 10})
	if !errors.Is(err, boom) {
		t.Fatalf("err %v", err)
	}
}

type readerAtFunc func(p []byte, off int64) (int, error)

func (f readerAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }

type discardAt struct{}

func (discardAt) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
