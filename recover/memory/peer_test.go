package memory

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The peer is vmem-decrypt (heeeyaaaa/vmem-decrypt, MIT): vmem_decrypt.py
// decrypts the §9 container, vmem_flatten.py expands a decrypted .vmem. It
// is run, never copied: from $VMCRYPT_VMEM_DECRYPT, else from the shared
// folder beside the repository (../shared/peers/vmem-decrypt from the
// module root), where the workplace and CI lay it.

// vmemPeer returns python3 and the peer's directory, failing (never
// skipping) when either, or python3-cryptography, is missing.
func vmemPeer(t testing.TB) (python, dir string) {
	t.Helper()
	dir = os.Getenv("VMCRYPT_VMEM_DECRYPT")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(filepath.Dir(d), "shared", "peers", "vmem-decrypt")
				break
			}
			if filepath.Dir(d) == d {
				t.Fatal("module root not found")
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "vmem_flatten.py")); err != nil {
		t.Fatalf("peer vmem-decrypt not found (set VMCRYPT_VMEM_DECRYPT or lay ../shared/peers/vmem-decrypt): %v", err)
	}
	python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			t.Fatalf("python3 is required to run the vmem-decrypt peer: %v", err)
		}
	}
	if out, err := exec.Command(python, "-c", "import cryptography").CombinedOutput(); err != nil {
		t.Fatalf("python3-cryptography is required by the vmem-decrypt peer (apt-get install python3-cryptography): %v\n%s", err, out)
	}
	return python, dir
}

func runPeer(t testing.TB, python, dir, script string, args ...string) error {
	t.Helper()
	cmd := exec.Command(python, append([]string{filepath.Join(dir, script)}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return errors.New(err.Error() + ": " + string(out))
	}
	return nil
}

// peerFlat is memory-shaped content whose encoding uses every feature of
// the grammar: zero pages at the start (references before the start),
// an incompressible block (stored raw), far copies (distance escapes),
// long runs (0xff length continuations), references across blocks.
func peerFlat() []byte {
	const bs = 256 << 10
	flat := mixedMemory(20, 5*bs+12345)
	clear(flat[:3*PageSize])
	r := rand.New(rand.NewPCG(21, 21))
	for i := 2 * bs; i < 3*bs; i++ {
		flat[i] = byte(r.Uint32())
	}
	return flat
}

func TestPeerFlattenAgrees(t *testing.T) {
	python, dir := vmemPeer(t)
	tmp := t.TempDir()
	flat := peerFlat()
	enc, st := compress(t, flat, &WriterOptions{BlockSize: 256 << 10})
	if st.RawBlocks == 0 || st.DistanceEscapes == 0 || st.LongLengths == 0 || st.CrossBlock == 0 || st.BeforeStart == 0 {
		t.Fatalf("the peer file does not exercise every feature: %+v", st)
	}
	hand := cat(block(271, 10, 0x00, 'X', 0xff, 0xff, 0x05, 0xff, 0x00, 0x10, 0x00, 'Y'), block(5, 4, 0x20, 'Z', 0x41, 0x0f), block(3, 3, 'r', 'a', 'w'), block(12, len(vec1), vec1...))
	for name, in := range map[string][]byte{"encoder": enc, "hand": hand} {
		src := filepath.Join(tmp, name+".dec.vmem")
		dst := filepath.Join(tmp, name+".flat.vmem")
		if err := os.WriteFile(src, in, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := runPeer(t, python, dir, "vmem_flatten.py", src, dst); err != nil {
			t.Fatalf("%s: vmem_flatten.py: %v", name, err)
		}
		peer, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		var ours bytes.Buffer
		if _, err := Flatten(&ours, bytes.NewReader(in), ""); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(peer, ours.Bytes()) {
			t.Fatalf("%s: vmem_flatten.py gives %d bytes, vmcrypt %d, and they differ", name, len(peer), ours.Len())
		}
		if name == "encoder" && !bytes.Equal(peer, flat) {
			t.Fatal("vmem_flatten.py does not restore the encoder's input")
		}
	}
}

// TestPeerRejectsBadFirstControl: a first control byte with F>>5 > 1 fails in
// both.
func TestPeerRejectsBadFirstControl(t *testing.T) {
	python, dir := vmemPeer(t)
	tmp := t.TempDir()
	src := filepath.Join(tmp, "bad.vmem")
	in := block(12, 9, 0x43, 'a', 'b', 'c', 'd', 0x40, 0x03, 0x40, 0x00)
	if err := os.WriteFile(src, in, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := runPeer(t, python, dir, "vmem_flatten.py", src, filepath.Join(tmp, "out")); err == nil {
		t.Fatal("vmem_flatten.py accepted F>>5 == 2")
	}
	if _, err := Flatten(io.Discard, bytes.NewReader(in), ""); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("vmcrypt: %v", err)
	}
}

// TestPeerEncryptedPair: a compressed .vmem and a .vmsn describing it, each
// in the §9 container (datafile.Encrypt): vmem_decrypt.py + vmem_flatten.py
// give exactly what vmcrypt's datafile reader + FlatReader give, and the
// plain .vmsn parses to the regions written.
func TestPeerEncryptedPair(t *testing.T) {
	python, dir := vmemPeer(t)
	tmp := t.TempDir()
	key := make([]byte, 64)
	for i := range key {
		key[i] = byte(i*7 + 1)
	}
	ivs := rand.New(rand.NewPCG(22, 22))
	ivReader := readerFunc(func(p []byte) (int, error) {
		for i := range p {
			p[i] = byte(ivs.Uint32())
		}
		return len(p), nil
	})

	flat := peerFlat()
	enc, _ := compress(t, flat, &WriterOptions{BlockSize: 256 << 10})
	pages := uint64(len(flat) / PageSize)
	regions := []Region{{PPN: 0, PageNum: 0, Pages: pages / 2}, {PPN: 0x100000, PageNum: pages / 2, Pages: pages - pages/2}}
	var s StateFile
	s.Group("Checkpoint").Uint32("version", 8)
	s.MemoryGroup(regions, []uint64{0, 1, 2}, nil)
	vmsn, err := s.Bytes()
	if err != nil {
		t.Fatal(err)
	}

	files := map[string]struct {
		plain   []byte
		version uint32
	}{"snap.vmem": {enc, 2}, "snap.vmsn": {vmsn, 1}}
	for name, f := range files {
		var b bytes.Buffer
		if err := datafile.Encrypt(&b, bytes.NewReader(f.plain), int64(len(f.plain)), key, f.version, ivReader); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, name), b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := runPeer(t, python, dir, "vmem_decrypt.py", filepath.Join(tmp, name), filepath.Join(tmp, "dec-"+name), "--key", hex.EncodeToString(key)); err != nil {
			t.Fatalf("vmem_decrypt.py %s: %v", name, err)
		}
	}
	if err := runPeer(t, python, dir, "vmem_flatten.py", filepath.Join(tmp, "dec-snap.vmem"), filepath.Join(tmp, "flat-snap.vmem")); err != nil {
		t.Fatalf("vmem_flatten.py: %v", err)
	}
	peerFlat, _ := os.ReadFile(filepath.Join(tmp, "flat-snap.vmem"))
	peerVMSN, _ := os.ReadFile(filepath.Join(tmp, "dec-snap.vmsn"))
	peerDec, _ := os.ReadFile(filepath.Join(tmp, "dec-snap.vmem"))

	// vmcrypt: datafile reader, then FlatReader, streaming.
	fh, err := os.Open(filepath.Join(tmp, "snap.vmem"))
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	fi, _ := fh.Stat()
	dr, err := datafile.NewReader(fh, fi.Size(), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	var ours bytes.Buffer
	if _, err := Flatten(&ours, io.NewSectionReader(dr, 0, dr.Size()), "snap.vmem"); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours.Bytes(), peerFlat) || !bytes.Equal(ours.Bytes(), flat) {
		t.Fatalf("flat .vmem: vmcrypt %d bytes, peer %d bytes, differ", ours.Len(), len(peerFlat))
	}
	// The other direction: vmcrypt's decoder on the peer's decrypted file.
	var fromPeer bytes.Buffer
	if _, err := Flatten(&fromPeer, bytes.NewReader(peerDec), ""); err != nil || !bytes.Equal(fromPeer.Bytes(), flat) {
		t.Fatalf("FlatReader on vmem_decrypt.py's output: %v", err)
	}
	if !bytes.Equal(peerVMSN, vmsn) {
		t.Fatal("vmem_decrypt.py's .vmsn differs from the plain state file")
	}
	c, err := ParseCheckpoint(bytes.NewReader(peerVMSN), int64(len(peerVMSN)), "snap.vmsn")
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Memory("snap.vmsn")
	if err != nil || len(m.Regions) != 2 || m.Regions[1] != regions[1] {
		t.Fatalf("regions %+v: %v", m, err)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
