package vm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/recover/memory"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// blk is one .vmem block: header and stream.
func blk(usize, csize int, stream ...byte) []byte {
	var h [memory.BlockHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(usize))
	binary.LittleEndian.PutUint32(h[8:], uint32(csize))
	return append(h[:], stream...)
}

// plainVM writes a plain VM folder holding files and opens it.
func plainVM(t *testing.T, files map[string][]byte) *VM {
	t.Helper()
	dir := t.TempDir()
	files["p.vmx"] = []byte(".encoding = \"UTF-8\"\ndisplayName = \"plain memory\"\n")
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v, err := OpenVM(context.Background(), dir, &Options{Depth: DataFilesOnly, KeepGoing: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

// States are paired by base name (case-insensitive), a .vmem alone is a
// memory-only state, the .vmsd gives display names, a state without
// memory says so, and Read gives each one's regions and sizes.
func TestMemoryStatesPairAndRead(t *testing.T) {
	ms, err := fixtures.GenerateMemory(31, fixtures.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	emb, err := fixtures.GenerateMemory(32, fixtures.MemoryOptions{Embedded: true, Pages: 32})
	if err != nil {
		t.Fatal(err)
	}
	var none memory.StateFile
	none.Group("Checkpoint").Uint32("version", 8)
	noMem, err := none.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	v := plainVM(t, map[string][]byte{
		"p-Snapshot1.vmsn": ms.State, "P-SNAPSHOT1.vmem": ms.VMem,
		"p-1a2b.vmss": ms.State, "p-1a2b.vmem": ms.VMem,
		"p-live.vmem":      ms.Flat,
		"p-Snapshot2.vmsn": noMem,
		"p-Snapshot3.vmsn": emb.State,
		"p.vmsd":           []byte("snapshot0.filename = \"p-Snapshot1.vmsn\"\nsnapshot0.displayName = \"before update\"\n"),
	})
	want := map[string]struct {
		kind, vmem, display string
	}{
		"p-Snapshot1": {StateSnapshot, "P-SNAPSHOT1.vmem", "before update"},
		"p-1a2b":      {StateSuspend, "p-1a2b.vmem", ""},
		"p-live":      {StateMemoryOnly, "p-live.vmem", ""},
		"p-Snapshot2": {StateSnapshot, "", ""},
		"p-Snapshot3": {StateSnapshot, "", ""},
	}
	states := v.MemoryStates()
	if len(states) != len(want) {
		t.Fatalf("%d states, want %d", len(states), len(want))
	}
	for _, s := range states {
		w, ok := want[s.Name]
		vmem := ""
		if s.Memory != nil {
			vmem = s.Memory.Name
		}
		if !ok || s.Kind != w.kind || vmem != w.vmem || s.DisplayName != w.display {
			t.Fatalf("state %+v: want %+v", s, w)
		}
		info, err := s.Read()
		switch s.Name {
		case "p-Snapshot2":
			if !errors.Is(err, ErrNoMemory) {
				t.Fatalf("state without memory: %v", err)
			}
			continue
		case "p-Snapshot3":
			if err != nil || !info.Embedded || info.FlatSize != int64(len(emb.Flat)) || len(info.Regions) != 2 {
				t.Fatalf("embedded: %+v %v", info, err)
			}
			var b bytes.Buffer
			if n, err := info.WriteFlat(context.Background(), &b); err != nil || n != info.FlatSize || !bytes.Equal(b.Bytes(), emb.Flat) {
				t.Fatalf("embedded flat: %d %v", n, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		if info.FlatSize != int64(len(ms.Flat)) {
			t.Fatalf("%s: flat size %d, want %d", s.Name, info.FlatSize, len(ms.Flat))
		}
		if s.Kind == StateMemoryOnly {
			if info.Compressed || len(info.Regions) != 0 || info.PhysicalSize != info.FlatSize {
				t.Fatalf("flat .vmem alone: %+v", info)
			}
		} else if !info.Compressed || info.Blocks != ms.Encoder.Blocks || info.RawBlocks != ms.Encoder.RawBlocks || info.MemoryBytes != int64(len(ms.VMem)) ||
			len(info.Regions) != 2 || info.PhysicalSize != ms.PhysSize || info.Regions[1].PhysStart != ms.Regions[1].PhysOffset() {
			t.Fatalf("%s: %+v", s.Name, info)
		}
		var b bytes.Buffer
		if n, err := info.WriteFlat(context.Background(), &b); err != nil || n != info.FlatSize || !bytes.Equal(b.Bytes(), ms.Flat) {
			t.Fatalf("%s: flat: %d %v", s.Name, n, err)
		}
	}
}

// Damage found by Read or WriteFlat: each is a *memory.Error wrapping
// keysafe.ErrCorrupt, naming the file and the offset of the fault.
func TestMemoryDamage(t *testing.T) {
	ms, err := fixtures.GenerateMemory(33, fixtures.MemoryOptions{Pages: 16})
	if err != nil {
		t.Fatal(err)
	}
	hugeGroups := append([]byte(nil), ms.State...)
	binary.LittleEndian.PutUint32(hugeGroups[8:], 0xffffffff)
	good := blk(4, 5, 0x03, 'a', 'b', 'c', 'd')
	for _, c := range []struct {
		name      string
		vmem      []byte
		state     []byte
		off       int64
		readFails bool // Read finds it (before anything is written)
	}{
		{"block past the file", append(blk(0x10000, 0x8000, 0x00), make([]byte, 100)...), nil, 8, true},
		{"second block past the file", append(good, blk(0x10000, 0x9000, 0x00, 1, 2)...), nil, int64(len(good)) + 8, true},
		{"header cut short", append(good, 1, 2, 3), nil, int64(len(good)), true},
		{"ends inside a literal run", blk(64, 3, 0x1f, 'a', 'b'), nil, 16, false},
		{"ends inside a distance escape", blk(100, 7, 0x02, 'a', 'b', 'c', 0x3f, 0xff, 0x00), nil, 20, false},
		{"decodes to less than its size", blk(10, 4, 0x02, 'a', 'b', 'c'), nil, 20, false},
		{"decodes to more than its size", blk(2, 4, 0x02, 'a', 'b', 'c'), nil, 16, false},
		{"first control byte F>>5 > 1", blk(4, 5, 0x43, 'a', 'b', 'c', 'd'), nil, 16, false},
		{"bad first control byte of a later block", append(good, blk(4, 5, 0x43, 'a', 'b', 'c', 'd')...), nil, int64(len(good)) + 16, false},
		{"state file with 2^32-1 groups", good, hugeGroups, 8, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			state := c.state
			if state == nil {
				var s memory.StateFile
				s.MemoryGroup(nil, nil, nil)
				if state, err = s.Bytes(); err != nil {
					t.Fatal(err)
				}
			}
			v := plainVM(t, map[string][]byte{"bad.vmsn": state, "bad.vmem": c.vmem})
			states := v.MemoryStates()
			if len(states) != 1 {
				t.Fatalf("%d states", len(states))
			}
			info, err := states[0].Read()
			if !c.readFails {
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				_, err = info.WriteFlat(context.Background(), io.Discard)
			}
			var me *memory.Error
			if !errors.Is(err, keysafe.ErrCorrupt) || !errors.As(err, &me) || me.Offset != c.off {
				t.Fatalf("error %v (offset %v), want ErrCorrupt at offset %d", err, me, c.off)
			}
			want := "bad.vmem"
			if c.state != nil {
				want = "bad.vmsn"
			}
			if filepath.Base(me.File) != want {
				t.Fatalf("error names %q, want %s", me.File, want)
			}
		})
	}
}

// A .vmem of many blocks flattens with bounded memory: what it allocates
// does not grow with the file (a few blocks' worth, for a file of 16).
func TestWriteFlatBoundedMemory(t *testing.T) {
	flat := make([]byte, 64<<20)
	for i := 0; i < len(flat); i += 4096 {
		binary.LittleEndian.PutUint64(flat[i:], uint64(i)*0x9e3779b97f4a7c15)
		copy(flat[i+64:], "vmcrypt bounded memory test page")
	}
	var enc bytes.Buffer
	w, err := memory.NewWriter(&enc, &memory.WriterOptions{ChainDepth: 1})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(flat)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	v := plainVM(t, map[string][]byte{"big.vmem": enc.Bytes()})
	enc.Reset()
	df := v.MemoryStates()[0].Memory
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n, err := df.WriteFlat(context.Background(), io.Discard)
	runtime.ReadMemStats(&after)
	if err != nil || n != int64(len(flat)) {
		t.Fatalf("%d bytes: %v", n, err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 24<<20 {
		t.Fatalf("flattening %d MiB allocated %d MiB", len(flat)>>20, got>>20)
	}
}

// Cancelling stops WriteFlat with the context's error.
func TestWriteFlatCancel(t *testing.T) {
	ms, err := fixtures.GenerateMemory(34, fixtures.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v := plainVM(t, map[string][]byte{"c.vmsn": ms.State, "c.vmem": ms.VMem})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	info, err := v.MemoryStates()[0].Read()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := info.WriteFlat(ctx, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// ScanBlocks agrees with the decoder: whenever memory.Flatten decodes a
// block stream, ScanBlocks accepts it with the same flat size and block
// count, and it never panics, loops or allocates by a header's word.
func FuzzScanBlocks(f *testing.F) {
	good := blk(4, 5, 0x03, 'a', 'b', 'c', 'd')
	f.Add(good)
	f.Add(append(good, blk(3, 3, 'r', 'a', 'w')...))
	f.Add(append(good, make([]byte, 20)...))
	f.Add(blk(0x10000, 0x8000, 0x00))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		fi, err := ScanBlocks(bytes.NewReader(b), int64(len(b)), "fuzz")
		if err != nil {
			if !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatalf("error without the sentinel: %v", err)
			}
			return
		}
		if !fi.Compressed {
			if fi.FlatSize != int64(len(b)) {
				t.Fatal("a flat file's size changed")
			}
			return
		}
		var out bytes.Buffer
		if n, err := memory.Flatten(&out, bytes.NewReader(b), "fuzz"); err == nil && n != fi.FlatSize {
			t.Fatalf("decoder gives %d bytes, ScanBlocks says %d", n, fi.FlatSize)
		}
	})
}
