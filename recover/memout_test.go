package recover

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/memory"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

func sumHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// memFixture is a passphrase fixture whose snapshot keeps its memory.
func memFixture(t *testing.T, seed uint64) (*fixtures.Fixture, []keys.Source, string) {
	t.Helper()
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Snapshot: true, Memory: true, Seed: seed})
	return fx, srcs, filepath.Join(fx.Dir, fixtures.VMDir)
}

// replaceDataFile writes plain as the VM's data file name, encrypted with
// its dataFileKey (the way a damaged file would be stored).
func replaceDataFile(t *testing.T, vmDir string, srcs []keys.Source, name string, plain []byte, version uint32) {
	t.Helper()
	v, err := vm.OpenVM(context.Background(), vmDir, &vm.Options{Resolver: keys.NewResolver(srcs...), Depth: vm.SettingsOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var b bytes.Buffer
	if err := datafile.Encrypt(&b, bytes.NewReader(plain), int64(len(plain)), v.DataFileKey.Bytes, version, rand.Reader); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vmDir, name), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// recover writes a snapshot's .vmem flat: the manifest's flat sha256, the
// report's sizes and counts.
func TestRecoverWritesFlatVMem(t *testing.T) {
	fx, srcs, vmDir := memFixture(t, 601)
	out := filepath.Join(t.TempDir(), "out")
	rep, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), SkipSpaceCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	name := fixtures.DefaultName + "-Snapshot1.vmem"
	got, err := os.ReadFile(filepath.Join(out, name))
	if err != nil {
		t.Fatal(err)
	}
	m := fx.Manifest.SHA256
	if sumHex(got) != m.VMem || !bytes.Equal(got, fx.Memory.Flat) {
		t.Fatal("the recovered .vmem is not the flat memory")
	}
	found := false
	for _, f := range rep.DataFiles {
		if f.Output != name {
			continue
		}
		found = true
		fm := f.Memory
		if fm == nil || !fm.Compressed || fm.FlatSHA256 != m.VMem || fm.FlatSize != int64(len(got)) || fm.CompressedSize != int64(len(fx.Memory.VMem)) ||
			fm.Blocks != fx.Memory.Encoder.Blocks || fm.RawBlocks != fx.Memory.Encoder.RawBlocks {
			t.Fatalf("report: %+v", fm)
		}
	}
	for _, o := range rep.Outputs {
		if o.File == name && (o.SHA256 != m.VMem || o.Size != int64(len(got))) {
			t.Fatalf("output %+v", o)
		}
	}
	if !found {
		t.Fatal("no report entry for the .vmem")
	}
	vmsn, _ := os.ReadFile(filepath.Join(out, fixtures.DefaultName+"-Snapshot1.vmsn"))
	if sumHex(vmsn) != m.VMSN {
		t.Fatal("the .vmsn differs")
	}
}

// A damaged .vmem stops recover with ErrCorrupt naming the file and the
// offset, and nothing is published: a block past the file is found while
// planning, a stream ending inside a literal run while decoding.
func TestRecoverDamagedVMemPublishesNothing(t *testing.T) {
	_, srcs, vmDir := memFixture(t, 602)
	ms, err := fixtures.GenerateMemory(602, fixtures.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's stream, its last block cut: it now runs past the end.
	cut := ms.VMem[:len(ms.VMem)-1]
	lastHdr := int64(0)
	for off := int64(0); off < int64(len(ms.VMem)); {
		lastHdr = off
		off += memory.BlockHeaderSize + int64(binary.LittleEndian.Uint32(ms.VMem[off+8:]))
	}
	// A block appended whose stream ends inside a literal run.
	var hdr [memory.BlockHeaderSize]byte
	binary.LittleEndian.PutUint32(hdr[0:], 64)
	binary.LittleEndian.PutUint32(hdr[8:], 3)
	bad := append(append(append([]byte(nil), ms.VMem...), hdr[:]...), 0x1f, 'a', 'b')
	for _, c := range []struct {
		name   string
		stream []byte
		off    int64
	}{
		{"last block past the end", cut, lastHdr + 8},
		{"literal run cut", bad, int64(len(ms.VMem)) + memory.BlockHeaderSize},
	} {
		replaceDataFile(t, vmDir, srcs, fixtures.DefaultName+"-Snapshot1.vmem", c.stream, 2)
		out := filepath.Join(t.TempDir(), "out")
		_, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), SkipSpaceCheck: true})
		var me *memory.Error
		if !errors.Is(err, keysafe.ErrCorrupt) || !errors.As(err, &me) || me.Offset != c.off || filepath.Base(me.File) != fixtures.DefaultName+"-Snapshot1.vmem (decrypted)" {
			t.Fatalf("%s: %v, want ErrCorrupt at offset %d", c.name, err, c.off)
		}
		if n := listDir(t, out); len(n) != 0 {
			t.Fatalf("%s: output folder holds %v", c.name, n)
		}
	}
}

// WriteMemory: the pair (flat .vmem, plain .vmsn) as the manifest says, the
// guest-physical image with each region at its address and zeros in the
// hole, and the report listing regions, sizes, sums and the key.
func TestWriteMemoryPhysical(t *testing.T) {
	fx, srcs, vmDir := memFixture(t, 603)
	v, err := vm.OpenVM(context.Background(), vmDir, &vm.Options{Resolver: keys.NewResolver(srcs...), Depth: vm.DataFilesOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	out := filepath.Join(t.TempDir(), "mem")
	rep, err := WriteMemory(context.Background(), v, out, &MemoryOptions{Physical: true, SkipSpaceCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(out, fixtures.DefaultName+"-Snapshot1")
	flat, _ := os.ReadFile(base + ".vmem")
	state, _ := os.ReadFile(base + ".vmsn")
	raw, _ := os.ReadFile(base + ".raw")
	m := fx.Manifest.SHA256
	if sumHex(flat) != m.VMem || sumHex(state) != m.VMSN {
		t.Fatal("the pair differs from the manifest")
	}
	ms := fx.Memory
	if int64(len(raw)) != ms.PhysSize {
		t.Fatalf("physical image of %d bytes, want %d", len(raw), ms.PhysSize)
	}
	for _, r := range ms.Regions {
		if !bytes.Equal(raw[r.PhysOffset():r.PhysOffset()+r.Size()], flat[r.FlatOffset():r.FlatOffset()+r.Size()]) {
			t.Fatalf("region %+v is not at its guest-physical offset", r)
		}
	}
	hole := raw[ms.Regions[0].PhysOffset()+ms.Regions[0].Size() : ms.Regions[1].PhysOffset()]
	if len(hole) == 0 || !bytes.Equal(hole, make([]byte, len(hole))) {
		t.Fatalf("the %d-byte hole is not zeros", len(hole))
	}
	if len(rep.States) != 1 {
		t.Fatalf("%d states", len(rep.States))
	}
	s := rep.States[0]
	if s.Physical == nil || s.Physical.SHA256 != sumHex(raw) || s.Memory.SHA256 != m.VMem || s.State.SHA256 != m.VMSN || s.Memory.MAC != datafile.MACModel ||
		len(s.Regions) != 2 || s.Regions[1].PhysStart != ms.Regions[1].PhysOffset() || rep.KeySafe == nil || rep.KeySafe.Source != "passphrase" {
		t.Fatalf("report: %+v", s)
	}
	var onDisk MemoryReport
	b, _ := os.ReadFile(filepath.Join(out, MemoryReportName))
	if err := json.Unmarshal(b, &onDisk); err != nil || len(onDisk.Outputs) != 3 {
		t.Fatalf("memory-report.json: %v %s", err, b)
	}
	// Again: refused without Force, nothing changed; a missing state name
	// is ErrNoMemoryState.
	if _, err := WriteMemory(context.Background(), v, out, &MemoryOptions{SkipSpaceCheck: true}); !errors.Is(err, ErrOutputExists) {
		t.Fatalf("existing outputs: %v", err)
	}
	if _, err := WriteMemory(context.Background(), v, t.TempDir(), &MemoryOptions{State: "nope", SkipSpaceCheck: true}); !errors.Is(err, ErrNoMemoryState) {
		t.Fatalf("unknown state: %v", err)
	}
	for _, name := range []string{"vmcrypt fixture snapshot", fixtures.DefaultName + "-snapshot1", fixtures.DefaultName + "-Snapshot1.vmsn"} {
		if _, err := WriteMemory(context.Background(), v, filepath.Join(t.TempDir(), "o"), &MemoryOptions{State: name, SkipSpaceCheck: true}); err != nil {
			t.Fatalf("state %q: %v", name, err)
		}
	}
	if _, err := WriteMemory(context.Background(), v, vmDir, &MemoryOptions{Force: true, SkipSpaceCheck: true}); !errors.Is(err, ErrOutputIsInput) {
		t.Fatalf("into the VM folder: %v", err)
	}
}

// Cancelled half-way: the context's error, and no output folder left.
func TestWriteMemoryCancel(t *testing.T) {
	_, srcs, vmDir := memFixture(t, 604)
	v, err := vm.OpenVM(context.Background(), vmDir, &vm.Options{Resolver: keys.NewResolver(srcs...), Depth: vm.DataFilesOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	for _, phase := range []string{"decompress", "physical"} {
		ctx, cancel := context.WithCancel(context.Background())
		out := filepath.Join(t.TempDir(), "mem")
		_, err := WriteMemory(ctx, v, out, &MemoryOptions{Physical: true, SkipSpaceCheck: true, Progress: func(p Progress) {
			if p.Phase == phase && p.Done > 0 {
				cancel()
			}
		}})
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: %v", phase, err)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: the output folder was left: %v", phase, listDir(t, out))
		}
	}
}

// flatSink writes what it is given at the right offsets whatever the zero
// runs (short ones written, long ones left as holes, at piece edges too),
// and hashes it in order.
func TestFlatSinkContent(t *testing.T) {
	const pg = memory.PageSize
	var src []byte
	for i, run := range []int{3, 1, 40, 2, 17, 16, 15, 5, 2048, 1} { // pages: data, zeros, data, ...
		part := make([]byte, run*pg)
		if i%2 == 0 {
			for k := range part {
				part[k] = byte(k*7 + i + 1)
			}
		}
		src = append(src, part...)
	}
	src = append(src, 1, 2, 3) // an odd tail
	for _, piece := range []int{1000, pg, 5 * pg, 3 << 20, len(src)} {
		path := filepath.Join(t.TempDir(), "flat")
		n, sum, err := writeFlatFile(context.Background(), path, func(ctx context.Context, w io.Writer) (int64, error) {
			for off := 0; off < len(src); off += piece {
				if _, err := w.Write(src[off:min(off+piece, len(src))]); err != nil {
					return int64(off), err
				}
			}
			return int64(len(src)), nil
		}, nil, int64(len(src)))
		got, _ := os.ReadFile(path)
		if err != nil || n != int64(len(src)) || sum != sumHex(src) || !bytes.Equal(got, src) {
			t.Fatalf("pieces of %d: %d bytes, %v; content equal %v", piece, n, err, bytes.Equal(got, src))
		}
	}
}
