//go:build linux

package memory

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/datafile"
)

// The benchmark memory: mixedMemory's page mix (35% zero pages, 15%
// random, 25% records, 17% far copies, 8% page tables) in VMware's 4 MiB
// blocks. Its size is $VMCRYPT_BENCH_VMEM_MB MiB (default 64: a 1 GiB file
// has the same per-byte figures, 16 times the wall time, and makes the
// Python peer run for minutes).

func benchSize() int {
	mb := 64
	if s := os.Getenv("VMCRYPT_BENCH_VMEM_MB"); s != "" {
		if v, err := strconv.Atoi(s); err == nil && v > 0 {
			mb = v
		}
	}
	return mb << 20
}

var benchFiles struct {
	once               sync.Once
	dir                string
	flatSize           int64
	vmem, encVMEM, key string
	err                error
}

// benchData writes, once per process, the compressed .vmem and its §9
// encrypted form to a temporary folder.
func benchData(b *testing.B) (dir string, flatSize int64) {
	bf := &benchFiles
	bf.once.Do(func() {
		bf.dir, bf.err = os.MkdirTemp("", "vmcrypt-membench-")
		if bf.err != nil {
			return
		}
		size := benchSize()
		bf.flatSize = int64(size)
		f, err := os.Create(filepath.Join(bf.dir, "bench.vmem"))
		if err != nil {
			bf.err = err
			return
		}
		bw := bufio.NewWriterSize(f, 1<<20)
		w, _ := NewWriter(bw, nil)
		const chunk = 16 << 20
		for off := 0; off < size; off += chunk {
			if _, err := w.Write(mixedMemory(uint64(off), min(chunk, size-off))); err != nil {
				bf.err = err
				return
			}
		}
		if bf.err = w.Close(); bf.err != nil {
			return
		}
		if bf.err = bw.Flush(); bf.err != nil {
			return
		}
		fi, _ := f.Stat()
		f.Close()
		// The encrypted container of the same file.
		key := bytes.Repeat([]byte{0x5a}, 64)
		src, _ := os.Open(filepath.Join(bf.dir, "bench.vmem"))
		defer src.Close()
		dst, _ := os.Create(filepath.Join(bf.dir, "bench.enc.vmem"))
		dbw := bufio.NewWriterSize(dst, 1<<20)
		r := rand.New(rand.NewPCG(1, 2))
		ivs := readerFunc(func(p []byte) (int, error) {
			for i := range p {
				p[i] = byte(r.Uint32())
			}
			return len(p), nil
		})
		if bf.err = datafile.Encrypt(dbw, bufio.NewReaderSize(src, 1<<20), fi.Size(), key, 2, ivs); bf.err != nil {
			return
		}
		bf.err = dbw.Flush()
		dst.Close()
	})
	if bf.err != nil {
		b.Fatal(bf.err)
	}
	return bf.dir, bf.flatSize
}

// timePeer runs the peer's scripts in sequence and returns the wall time.
func timePeer(b *testing.B, python, dir string, steps ...[]string) time.Duration {
	start := time.Now()
	for _, s := range steps {
		cmd := exec.Command(python, append([]string{filepath.Join(dir, s[0])}, s[1:]...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", s[0], err, out)
		}
	}
	return time.Since(start)
}

// BenchmarkFlatten: FlatReader on one core, from the compressed file to
// nowhere; x-vs-vmem_flatten is the speed ratio to vmem_flatten.py on the
// same file, measured in the same run.
func BenchmarkFlatten(b *testing.B) {
	python, peer := vmemPeer(b)
	dir, flatSize := benchData(b)
	path := filepath.Join(dir, "bench.vmem")
	d := NewFlatReader(nil, "")
	b.SetBytes(flatSize)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		d.Reset(f, path)
		if n, err := d.WriteTo(io.Discard); err != nil || n != flatSize {
			b.Fatalf("%d bytes: %v", n, err)
		}
		f.Close()
	}
	ours := time.Since(start) / time.Duration(b.N)
	b.StopTimer()
	peerTime := timePeer(b, python, peer, []string{"vmem_flatten.py", path, os.DevNull})
	b.ReportMetric(float64(peerTime)/float64(ours), "x-vs-vmem_flatten")
	b.ReportMetric(float64(flatSize)/1e6/peerTime.Seconds(), "peer-MB/s")
}

// BenchmarkDecryptFlatten: end to end, the §9 encrypted .vmem to flat
// memory (datafile reader, model MAC checked, then FlatReader), against
// vmem_decrypt.py + vmem_flatten.py. serial: one goroutine; concurrent:
// FlattenConcurrent, decryption and decompression on a core each.
func BenchmarkDecryptFlatten(b *testing.B) {
	python, peer := vmemPeer(b)
	dir, flatSize := benchData(b)
	path := filepath.Join(dir, "bench.enc.vmem")
	key := bytes.Repeat([]byte{0x5a}, 64)
	var peerOnce sync.Once
	var peerTime time.Duration
	for _, mode := range []string{"serial", "concurrent"} {
		b.Run(mode, func(b *testing.B) {
			d := NewFlatReader(nil, "")
			b.SetBytes(flatSize)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				f, err := os.Open(path)
				if err != nil {
					b.Fatal(err)
				}
				fi, _ := f.Stat()
				dr, err := datafile.NewReader(f, fi.Size(), key, nil)
				if err != nil {
					b.Fatal(err)
				}
				var n int64
				if mode == "serial" {
					d.Reset(bufio.NewReaderSize(io.NewSectionReader(dr, 0, dr.Size()), 1<<20), path)
					n, err = d.WriteTo(io.Discard)
				} else {
					n, err = FlattenConcurrent(io.Discard, dr, path)
				}
				if err != nil || n != flatSize {
					b.Fatalf("%d bytes: %v", n, err)
				}
				f.Close()
			}
			ours := time.Since(start) / time.Duration(b.N)
			b.StopTimer()
			peerOnce.Do(func() {
				dec := filepath.Join(b.TempDir(), "dec.vmem")
				peerTime = timePeer(b, python, peer,
					[]string{"vmem_decrypt.py", path, dec, "--key", fmt.Sprintf("%x", key)},
					[]string{"vmem_flatten.py", dec, os.DevNull})
			})
			b.ReportMetric(float64(peerTime)/float64(ours), "x-vs-vmem_decrypt+flatten")
		})
	}
}

// BenchmarkEncode: the fixture encoder (4 MiB blocks, chain depth 16).
func BenchmarkEncode(b *testing.B) {
	flat := mixedMemory(30, 16<<20)
	w, _ := NewWriter(io.Discard, nil)
	b.SetBytes(int64(len(flat)))
	b.ResetTimer()
	for range b.N {
		_ = w.Reset(io.Discard, nil)
		if _, err := w.Write(flat); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
	st := w.Stats()
	b.ReportMetric(float64(st.Out)/float64(st.In), "ratio")
}

// BenchmarkFlattenMem: FlatReader from memory to nowhere (no file I/O):
// the decoder alone, on 16 MiB of the benchmark mix.
func BenchmarkFlattenMem(b *testing.B) {
	flat := mixedMemory(31, 16<<20)
	enc, _ := compress(b, flat, nil)
	br := bytes.NewReader(enc)
	d := NewFlatReader(br, "")
	b.SetBytes(int64(len(flat)))
	b.ResetTimer()
	for range b.N {
		br.Reset(enc)
		d.Reset(br, "")
		if _, err := d.WriteTo(io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
