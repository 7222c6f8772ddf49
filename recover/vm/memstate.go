package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/vmcrypt/vmcrypt/recover/memory"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Memory states (docs/formats.md §13): a checkpoint state file (.vmsn of a
// snapshot, .vmss of a suspend) whose `memory` group maps a flat memory file
// to guest-physical pages, and that memory: the .vmem of the same base name
// (compressed before it was encrypted), or a block inside the state file.

// Kinds of memory states.
const (
	StateSnapshot   = "snapshot"    // NAME.vmsn (+ NAME.vmem)
	StateSuspend    = "suspend"     // NAME.vmss (+ NAME.vmem)
	StateMemoryOnly = "memory only" // NAME.vmem without a state file
)

// ErrNoMemory means a state file holds no memory and has no .vmem beside
// it: a snapshot taken without the VM's memory.
var ErrNoMemory = errors.New("no memory: a snapshot taken without the guest's memory (no .vmem, no memory inside the state file)")

// maxVMSD caps the .vmsd read for display names.
const maxVMSD = 4 << 20

// MemoryState is one memory state of a VM: a state file and the .vmem of
// the same base name (Volatility pairs them so), either possibly absent.
type MemoryState struct {
	Name        string    // base name without the extension, e.g. "VM-Snapshot1"
	Kind        string    // StateSnapshot, StateSuspend, StateMemoryOnly
	DisplayName string    // the snapshot's name in the .vmsd ("" if none)
	State       *DataFile // the .vmsn/.vmss; nil for StateMemoryOnly
	Memory      *DataFile // the .vmem; nil when the memory is in State or absent
}

// MemoryStates pairs the VM's state files with the .vmem of the same base
// name (case-insensitive), in folder order; a .vmem without a state file is
// a StateMemoryOnly state. It needs the data files (OpenVM with Depth Full
// or DataFilesOnly).
func (v *VM) MemoryStates() []*MemoryState {
	vmems := map[string]*DataFile{}
	for _, df := range v.DataFiles {
		if df.Kind == KindMemory {
			vmems[strings.ToLower(stem(df.Name))] = df
		}
	}
	names := v.snapshotNames()
	used := map[*DataFile]bool{}
	var out []*MemoryState
	for _, df := range v.DataFiles {
		if df.Kind != KindSnapshot && df.Kind != KindSuspend {
			continue
		}
		s := &MemoryState{Name: stem(df.Name), Kind: StateSnapshot, State: df, DisplayName: names[strings.ToLower(df.Name)]}
		if df.Kind == KindSuspend {
			s.Kind = StateSuspend
		}
		if m := vmems[strings.ToLower(s.Name)]; m != nil && !used[m] {
			s.Memory, used[m] = m, true
		}
		out = append(out, s)
	}
	for _, df := range v.DataFiles {
		if df.Kind == KindMemory && !used[df] {
			out = append(out, &MemoryState{Name: stem(df.Name), Kind: StateMemoryOnly, Memory: df})
		}
	}
	return out
}

func stem(name string) string { return strings.TrimSuffix(name, filepath.Ext(name)) }

var vmsdFileName = regexp.MustCompile(`(?i)^(snapshot\d+)\.filename$`)

// snapshotNames maps each snapshot state file named in the VM's .vmsd
// (lower case) to its display name. A .vmsd that does not parse gives none.
func (v *VM) snapshotNames() map[string]string {
	out := map[string]string{}
	for _, df := range v.DataFiles {
		if df.Kind != KindSnapList || df.StoredSize > maxVMSD {
			continue
		}
		b, err := os.ReadFile(df.Path)
		if err != nil {
			continue
		}
		f, err := vmx.ParseBytes(b)
		if err != nil {
			continue
		}
		for _, k := range f.Keys() {
			m := vmsdFileName.FindStringSubmatch(k)
			if m == nil {
				continue
			}
			file, _ := f.Get(k)
			if name, ok := f.Get(m[1] + ".displayName"); ok && file != "" {
				out[strings.ToLower(filepath.Base(filepath.FromSlash(file)))] = name
			}
		}
	}
	return out
}

// StateInfo is what a memory state holds: where its memory is, its sizes
// and its guest-physical regions. Reports print it as JSON.
type StateInfo struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"`
	DisplayName string `json:"displayName,omitempty"`
	StateFile   string `json:"stateFile,omitempty"`  // base name
	MemoryFile  string `json:"memoryFile,omitempty"` // base name of the .vmem
	// Embedded says the memory is inside the state file.
	Embedded bool `json:"embedded,omitempty"`
	// Compressed says the memory is the block container of §13.
	Compressed bool `json:"compressed"`
	// MemoryBytes is the memory as stored, decrypted: the block stream's
	// size when compressed.
	MemoryBytes int64 `json:"memoryBytes"`
	// FlatSize is the flat memory's size (the regions, concatenated).
	FlatSize  int64 `json:"flatSize"`
	Blocks    int64 `json:"blocks,omitempty"`
	RawBlocks int64 `json:"rawBlocks,omitempty"`
	// PhysicalSize is the guest-physical image's size (the end of the
	// highest region).
	PhysicalSize int64                `json:"physicalSize"`
	Regions      []memory.RegionEntry `json:"regions"`
	// Layout is the state file's memory group (nil for StateMemoryOnly).
	Layout *memory.MemoryLayout `json:"-"`

	state *MemoryState
}

// RegionList returns the regions the state maps its flat memory with (none:
// the flat memory is guest-physical from address 0).
func (i *StateInfo) RegionList() []memory.Region {
	if i.Layout == nil {
		return nil
	}
	return i.Layout.Regions
}

// Read parses the state file (every count and size bounded, docs/formats.md
// §13) and the .vmem's block headers, and checks that the regions lie in
// the flat memory: nothing is decompressed yet. A state without memory is
// ErrNoMemory; damage is an error wrapping keysafe.ErrCorrupt naming the
// file and offset (in the plaintext for an encrypted file); a compressed
// block inside a state file keysafe.ErrUnsupported.
func (s *MemoryState) Read() (*StateInfo, error) {
	info := &StateInfo{Name: s.Name, Kind: s.Kind, DisplayName: s.DisplayName, Regions: []memory.RegionEntry{}, state: s}
	name := ""
	if s.State != nil {
		info.StateFile = s.State.Name
		name = s.State.memName()
		r, err := s.State.Open()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		cp, err := memory.ParseCheckpoint(r, r.Size(), name)
		if err != nil {
			return nil, err
		}
		lay, err := cp.Memory(name)
		if errors.Is(err, memory.ErrNoMemoryGroup) && s.Memory == nil {
			return nil, fmt.Errorf("%s: %w", s.State.Path, ErrNoMemory)
		}
		if err != nil {
			return nil, err
		}
		info.Layout = lay
		if s.Memory == nil {
			if lay.Embedded == nil {
				return nil, fmt.Errorf("%s: %w", s.State.Path, ErrNoMemory)
			}
			if _, err := lay.EmbeddedFlat(r, name); err != nil {
				return nil, err
			}
			info.Embedded, info.MemoryBytes, info.FlatSize = true, int64(lay.Embedded.DiskSize), int64(lay.Embedded.DiskSize)
		}
	}
	if s.Memory != nil {
		info.MemoryFile = s.Memory.Name
		fi, err := s.Memory.FlatInfo()
		if err != nil {
			return nil, err
		}
		info.Compressed, info.MemoryBytes, info.FlatSize, info.Blocks, info.RawBlocks = fi.Compressed, fi.Size, fi.FlatSize, fi.Blocks, fi.RawBlocks
	}
	if name == "" {
		name = s.Memory.memName()
	}
	p, err := memory.NewPhysical(nil, info.FlatSize, info.RegionList(), name)
	if err != nil {
		return nil, err
	}
	info.PhysicalSize = p.Size()
	info.Regions = append(info.Regions, memory.RegionTable(info.RegionList())...)
	return info, nil
}

// WriteFlat writes the state's flat memory to w: the .vmem decrypted and
// decompressed, or the block inside the state file. It returns the bytes
// written; ctx stops it.
func (i *StateInfo) WriteFlat(ctx context.Context, w io.Writer) (int64, error) {
	s := i.state
	if s.Memory != nil {
		return s.Memory.WriteFlat(ctx, w)
	}
	r, err := s.State.Open()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	sec, err := i.Layout.EmbeddedFlat(r, s.State.memName())
	if err != nil {
		return 0, err
	}
	return io.CopyBuffer(&ctxWriter{ctx, w}, sec, make([]byte, copyBuf))
}

// isBlockStream reports whether a .vmem plaintext starting with b is the
// block container of §13: its first 16 bytes are a valid block header
// (memory.ParseBlockHeader). Flat memory starts with guest page 0 (zeros,
// or the real-mode interrupt table's far pointers), which is never one.
// The first control byte is not looked at: a bad one is damage (exit 5),
// not a reason to copy the file as flat memory.
func isBlockStream(b []byte) bool {
	if len(b) < memory.BlockHeaderSize {
		return false
	}
	_, err := memory.ParseBlockHeader(b, 0, "")
	return err == nil
}

// FlatInfo describes a .vmem's plaintext.
type FlatInfo struct {
	// Compressed says the plaintext is the block container of §13 (its
	// first 16 bytes are a valid block header); otherwise it is flat
	// memory already.
	Compressed bool  `json:"compressed"`
	Size       int64 `json:"size"`     // the plaintext's size
	FlatSize   int64 `json:"flatSize"` // once decompressed
	Blocks     int64 `json:"blocks,omitempty"`
	RawBlocks  int64 `json:"rawBlocks,omitempty"`
}

// FlatInfo reads the block headers of a .vmem data file (decrypting one
// small piece per block): whether it is compressed, and its flat size. A
// block that runs past the file is an error wrapping keysafe.ErrCorrupt.
func (df *DataFile) FlatInfo() (FlatInfo, error) {
	r, err := df.Open()
	if err != nil {
		return FlatInfo{}, err
	}
	defer r.Close()
	return ScanBlocks(r, r.Size(), df.memName())
}

// memName names the file in memory errors, whose offsets are in the
// plaintext.
func (df *DataFile) memName() string {
	if df.Encrypted {
		return df.Path + " (decrypted)"
	}
	return df.Path
}

// scanChunk is how much of the plaintext ScanBlocks reads around a block
// header: small blocks are then found in one read, and a 4 MiB block costs
// a few decrypted pages.
const scanChunk = 16 << 10

// ScanBlocks reads the block headers of the .vmem plaintext of size bytes
// in r (name is used in errors): whether it is the block container, the
// block counts and the flat size. Every header is checked
// (memory.ParseBlockHeader) and every block must end inside the file; an
// end marker (a header of zeros) or zero padding shorter than a header
// ends the scan (the decoder checks that only zeros follow). Work is one
// bounded read per block; nothing is allocated per block.
func ScanBlocks(r io.ReaderAt, size int64, name string) (FlatInfo, error) {
	fi := FlatInfo{Size: size}
	var first [memory.BlockHeaderSize + 1]byte
	n, err := r.ReadAt(first[:min(int64(len(first)), size)], 0)
	if n < int(min(int64(len(first)), size)) {
		return fi, readErr(name, 0, err)
	}
	if !isBlockStream(first[:n]) {
		fi.FlatSize = size
		return fi, nil
	}
	fi.Compressed = true
	buf := make([]byte, scanChunk)
	var bufOff, bufLen int64 = 0, 0
	for off := int64(0); off < size; {
		if off+memory.BlockHeaderSize > bufOff+bufLen || off < bufOff {
			bufOff, bufLen = off, min(int64(len(buf)), size-off)
			if n, err := r.ReadAt(buf[:bufLen], off); int64(n) < bufLen {
				return fi, readErr(name, off, err)
			}
			if bufLen < memory.BlockHeaderSize {
				if !allZero(buf[:bufLen]) {
					return fi, &memory.Error{File: name, Offset: off, Field: "block header", Msg: fmt.Sprintf("input ends after %d of its %d bytes", bufLen, memory.BlockHeaderSize), Err: keysafe.ErrCorrupt}
				}
				break
			}
		}
		h, err := memory.ParseBlockHeader(buf[off-bufOff:off-bufOff+memory.BlockHeaderSize], off, name)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fi, err
		}
		if left := size - off - memory.BlockHeaderSize; int64(h.CompressedSize) > left {
			return fi, &memory.Error{File: name, Offset: off + 8, Field: "compressedSize",
				Msg: fmt.Sprintf("%d bytes, but the input ends %d bytes into the block's stream", h.CompressedSize, left), Err: keysafe.ErrCorrupt}
		}
		fi.Blocks++
		if h.Raw() {
			fi.RawBlocks++
		}
		fi.FlatSize += int64(h.UncompressedSize)
		off += memory.BlockHeaderSize + int64(h.CompressedSize)
	}
	return fi, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func readErr(name string, off int64, err error) error {
	if err == nil || err == io.EOF || err == io.ErrUnexpectedEOF {
		return &memory.Error{File: name, Offset: off, Field: "file", Msg: "ends unexpectedly", Err: keysafe.ErrCorrupt}
	}
	return fmt.Errorf("%s: reading at offset %d: %w", name, off, err)
}

// copyBuf is the copy buffer of flat memory that needs no decompression.
const copyBuf = 1 << 20

// WriteFlat writes the flat memory of a .vmem data file to w: decrypted
// (when encrypted) and decompressed (when its plaintext is the block
// container: FlatInfo.Compressed), with decryption and decompression on a
// core each and bounded memory (memory.FlattenConcurrent); copied as is
// otherwise. It returns the flat bytes written. Damage is an error
// wrapping keysafe.ErrCorrupt naming the file and the plaintext offset;
// ctx stops it (its error is returned).
func (df *DataFile) WriteFlat(ctx context.Context, w io.Writer) (int64, error) {
	r, err := df.Open()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	name := df.memName()
	var first [memory.BlockHeaderSize + 1]byte
	k := int(min(int64(len(first)), r.Size()))
	if n, err := r.ReadAt(first[:k], 0); n < k {
		return 0, readErr(name, 0, err)
	}
	cw := &ctxWriter{ctx, w}
	var src io.WriterTo = sectionWriterTo{io.NewSectionReader(r, 0, r.Size())}
	if wt, ok := r.(*encFile); ok {
		src = wt.Reader // sequential decryption in batches of pages
	}
	if !isBlockStream(first[:k]) {
		n, err := src.WriteTo(cw)
		return n, ctxErr(ctx, err)
	}
	n, err := memory.FlattenConcurrent(cw, src, name)
	return n, ctxErr(ctx, err)
}

// sectionWriterTo copies a section in large reads.
type sectionWriterTo struct{ r *io.SectionReader }

func (s sectionWriterTo) WriteTo(w io.Writer) (int64, error) {
	return io.CopyBuffer(w, s.r, make([]byte, copyBuf))
}

// ctxWriter fails its writes once ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// ctxErr prefers the context's error once it is done.
func ctxErr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}
