package vmdk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// probeFile probes a file on disk.
func probeFile(t *testing.T, path string) *Probed {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Probe(bytes.NewReader(b), int64(len(b)), path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

// Every file the writer makes is told apart by content, and the
// descriptor's encryptionKeys is seen; COWD and SEsparse deltas too.
func TestProbeKinds(t *testing.T) {
	dir := t.TempDir()
	src := bytes.Repeat([]byte{7}, 1<<20)
	for _, sf := range []string{SubformatMonolithicSparse, SubformatStreamOptimized, SubformatMonolithicFlat, SubformatTwoGbMaxExtentSparse} {
		p := filepath.Join(dir, sf+".vmdk")
		if err := Write(context.Background(), p, bytes.NewReader(src), int64(len(src)), nil,
			&WriteOptions{Subformat: sf, SplitSize: 512 << 10, EncryptionKeys: "vmware:key/list/()"}); err != nil {
			t.Fatal(err)
		}
		want := ProbeMonolithic
		if sf == SubformatMonolithicFlat || sf == SubformatTwoGbMaxExtentSparse {
			want = ProbeDescriptor
		}
		got := probeFile(t, p)
		if got.Kind != want || !got.Disk() || !got.Encrypted() || got.Descriptor.EncryptionKeys != "vmware:key/list/()" {
			t.Fatalf("%s: kind %s disk %v encrypted %v", sf, got.Kind, got.Disk(), got.Encrypted())
		}
	}
	for name, want := range map[string]ProbeKind{
		SubformatMonolithicFlat + "-flat.vmdk":       ProbeData,
		SubformatTwoGbMaxExtentSparse + "-s001.vmdk": ProbeSparseExtent,
	} {
		if got := probeFile(t, filepath.Join(dir, name)); got.Kind != want || got.Disk() {
			t.Fatalf("%s: kind %s, want %s", name, got.Kind, want)
		}
	}
	if p, _ := Probe(bytes.NewReader(validCOWD(t)), int64(len(validCOWD(t))), "c"); p.Kind != ProbeCOWD {
		t.Fatalf("COWD: %v", p.Kind)
	}
	if p, _ := Probe(bytes.NewReader(validSESparse(t)), int64(len(validSESparse(t))), "s"); p.Kind != ProbeSESparse {
		t.Fatalf("SEsparse: %v", p.Kind)
	}
	// A text file that is no descriptor is data; so is an empty file.
	for _, b := range [][]byte{[]byte("hello, world\n"), nil} {
		if p, err := Probe(bytes.NewReader(b), int64(len(b)), "t"); err != nil || p.Kind != ProbeData {
			t.Fatalf("%q: %v %v", b, p, err)
		}
	}
}

// A descriptor size near 2^64 once made off+size wrap in inspect's own
// probe; Probe refuses every impossible descriptor place as corrupt.
func TestProbeHostileDescriptorPlace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "d.vmdk")
	if err := Write(context.Background(), p, bytes.NewReader(make([]byte, 1<<20)), 1<<20, nil, nil); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(p)
	for _, c := range []struct{ off, size uint64 }{{1, ^uint64(0)}, {1, ^uint64(0) - 1}, {1, 1 << 63}, {^uint64(0), 1}, {uint64(len(good)) / 512, 1}} {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint64(b[28:], c.off)
		binary.LittleEndian.PutUint64(b[36:], c.size)
		_, err := Probe(bytes.NewReader(b), int64(len(b)), "d.vmdk")
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("descriptor at %d+%d: %v, want ErrCorrupt", c.off, c.size, err)
		}
	}
}

// FuzzProbe: Probe never panics, reads within the file, and a file it
// calls a disk has a descriptor.
func FuzzProbe(f *testing.F) {
	p := filepath.Join(f.TempDir(), "d.vmdk")
	if err := Write(context.Background(), p, bytes.NewReader(make([]byte, 64<<10)), 64<<10, nil, &WriteOptions{GrainSize: 4096}); err != nil {
		f.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	f.Add(b[:min(len(b), 8192)])
	f.Add([]byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\nRW 2048 FLAT \"x-flat.vmdk\" 0\n"))
	f.Add([]byte("COWD"))
	rng := rand.New(rand.NewPCG(1, 2))
	r := make([]byte, 600)
	for i := range r {
		r[i] = byte(rng.Uint32())
	}
	f.Add(r)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		pr, err := Probe(bytes.NewReader(b), int64(len(b)), "f.vmdk")
		if err == nil && pr.Disk() && pr.Descriptor == nil {
			t.Fatal("a disk without a descriptor")
		}
	})
}
