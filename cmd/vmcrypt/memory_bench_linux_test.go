//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	mrand "math/rand/v2"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/memory"
	"github.com/vmcrypt/vmcrypt/recover/vm"
)

// The benchmark's files live in $VMCRYPT_BENCH_DIR when set (/dev/shm
// measures the code; the default, a temporary folder on disk, includes
// the fsync of every output, which vmem_flatten.py does not do).

// benchMemMB is the flat size of the benchmark's memory in MiB:
// $VMCRYPT_BENCH_VMEM_MB, default 1024 (the Python peer then runs for
// minutes).
func benchMemMB() int {
	if v, err := strconv.Atoi(os.Getenv("VMCRYPT_BENCH_VMEM_MB")); err == nil && v > 0 {
		return v
	}
	return 1024
}

// benchMixed fills p with guest-shaped pages: zero pages, random pages,
// records with small variations, copies of earlier pages of the chunk and
// page tables.
func benchMixed(r *mrand.Rand, p []byte) {
	const pg = 4096
	clear(p)
	rec := []byte("proc:0000 state=R prio=20 name=svchost.exe ")
	for off := 0; off+pg <= len(p); off += pg {
		q := p[off : off+pg]
		switch k := r.IntN(100); {
		case k < 35:
		case k < 50:
			for i := 0; i < pg; i += 8 {
				binary.LittleEndian.PutUint64(q[i:], r.Uint64())
			}
		case k < 75:
			for i := 0; i < pg; i += len(rec) {
				binary.BigEndian.PutUint16(rec[5:], uint16(r.IntN(4)))
				rec[16] = "RSDZ"[r.IntN(4)]
				copy(q[i:], rec)
			}
		case k < 92:
			if back := (3 + r.IntN(15)) * pg; off >= back {
				copy(q, p[off-back:])
				q[r.IntN(pg)] ^= 0x55
			}
		default:
			base := r.Uint64() & 0x000ffffff000
			for i := 0; i < pg; i += 8 {
				binary.LittleEndian.PutUint64(q[i:], base+uint64(i/8)<<12|0x63)
			}
		}
	}
}

// BenchmarkMemoryCLI: `vmcrypt memory` end to end on a passphrase VM whose
// snapshot holds benchMemMB MiB of memory (4 MiB blocks, encrypted as §9):
// key safe, decryption, decompression, sparse flat .vmem, plain .vmsn,
// sha256 and report. x-vs-vmem_decrypt+flatten is the speed ratio to
// vmem_decrypt.py (.vmem and .vmsn, from the VMX and password) followed by
// vmem_flatten.py on the same files, measured in the same run.
func BenchmarkMemoryCLI(b *testing.B) {
	python, peer := vmemPeer(b)
	flatSize := int64(benchMemMB()) << 20
	tmp := b.TempDir()
	if d := os.Getenv("VMCRYPT_BENCH_DIR"); d != "" {
		// e.g. /dev/shm: the figures of the code, not of the disk's fsync.
		var err error
		if tmp, err = os.MkdirTemp(d, "vmcrypt-membench-"); err != nil {
			b.Fatal(err)
		}
		defer os.RemoveAll(tmp)
	}
	fx, err := fixtures.Generate(filepath.Join(tmp, "fx"), fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Snapshot: true, Memory: true, Seed: 800})
	if err != nil {
		b.Fatal(err)
	}
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	pass, err := readSecretFile(filepath.Join(fx.Dir, fx.Manifest.Secrets.PassphraseFile))
	if err != nil {
		b.Fatal(err)
	}
	v, err := vm.OpenVM(context.Background(), vmDir, &vm.Options{Resolver: keys.NewResolver(keys.NewPassphrase(pass)), Depth: vm.SettingsOnly})
	if err != nil {
		b.Fatal(err)
	}
	key := v.DataFileKey.Bytes
	v.Close()

	// The compressed stream, then its encrypted container in the VM.
	plainVMem := filepath.Join(tmp, "stream.vmem")
	f, err := os.Create(plainVMem)
	if err != nil {
		b.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w, _ := memory.NewWriter(bw, nil)
	r := mrand.New(mrand.NewPCG(8, 8))
	chunk := make([]byte, 16<<20)
	for off := int64(0); off < flatSize; off += int64(len(chunk)) {
		c := chunk[:min(int64(len(chunk)), flatSize-off)]
		benchMixed(r, c)
		if _, err := w.Write(c); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	st, _ := f.Stat()
	f.Close()
	encrypt := func(dst string, src *bufio.Reader, size int64, version uint32) {
		out, err := os.Create(dst)
		if err != nil {
			b.Fatal(err)
		}
		ow := bufio.NewWriterSize(out, 1<<20)
		if err := datafile.Encrypt(ow, src, size, key, version, rand.Reader); err != nil {
			b.Fatal(err)
		}
		if err := ow.Flush(); err != nil {
			b.Fatal(err)
		}
		out.Close()
	}
	in, _ := os.Open(plainVMem)
	encrypt(filepath.Join(vmDir, snap1+".vmem"), bufio.NewReaderSize(in, 1<<20), st.Size(), 2)
	in.Close()
	os.Remove(plainVMem)
	pages := uint64(flatSize / memory.PageSize)
	var sf memory.StateFile
	sf.Group("Checkpoint").Uint32("version", 8)
	sf.MemoryGroup([]memory.Region{{PPN: 0, PageNum: 0, Pages: pages * 3 / 4}, {PPN: 1 << 20, PageNum: pages * 3 / 4, Pages: pages - pages*3/4}}, nil, nil)
	state, err := sf.Bytes()
	if err != nil {
		b.Fatal(err)
	}
	encrypt(filepath.Join(vmDir, snap1+".vmsn"), bufio.NewReader(bytes.NewReader(state)), int64(len(state)), 1)

	args := recKeyArgs(fx)
	b.SetBytes(flatSize)
	b.ResetTimer()
	var ours time.Duration
	for i := range b.N {
		out := filepath.Join(tmp, "out"+strconv.Itoa(i))
		start := time.Now()
		var so, se bytes.Buffer
		if code := run(append([]string{"vmcrypt", "memory", vmDir, "-o", out, "-q"}, args...), &so, &se); code != exitOK {
			b.Fatalf("exit %d: %s", code, se.String())
		}
		ours += time.Since(start)
		b.StopTimer()
		if fi, err := os.Stat(filepath.Join(out, snap1+".vmem")); err != nil || fi.Size() != flatSize {
			b.Fatalf("flat .vmem: %v", err)
		}
		os.RemoveAll(out)
		b.StartTimer()
	}
	b.StopTimer()
	ours /= time.Duration(b.N)

	// The peer on the same files: decrypt both from the VMX + password,
	// then flatten.
	vmx := filepath.Join(vmDir, fixtures.DefaultName+".vmx")
	pdir := filepath.Join(tmp, "peer")
	os.Mkdir(pdir, 0o755)
	start := time.Now()
	for _, step := range [][]string{
		{"vmem_decrypt.py", filepath.Join(vmDir, snap1+".vmsn"), filepath.Join(pdir, snap1+".vmsn"), "--vmx", vmx, "--password", string(pass)},
		{"vmem_decrypt.py", filepath.Join(vmDir, snap1+".vmem"), filepath.Join(pdir, "dec.vmem"), "--vmx", vmx, "--password", string(pass)},
		{"vmem_flatten.py", filepath.Join(pdir, "dec.vmem"), filepath.Join(pdir, snap1+".vmem")},
	} {
		if out, err := exec.Command(python, append([]string{filepath.Join(peer, step[0])}, step[1:]...)...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", step[0], err, out)
		}
	}
	peerTime := time.Since(start)
	b.ReportMetric(float64(peerTime)/float64(ours), "x-vs-vmem_decrypt+flatten")
	b.ReportMetric(float64(flatSize)/1e6/peerTime.Seconds(), "peer-MB/s")
	b.ReportMetric(float64(st.Size())/float64(flatSize), "compressed/flat")
}
