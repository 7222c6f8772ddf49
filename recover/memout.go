package recover

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/memory"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Memory of snapshots and suspends for forensics (docs/formats.md §13):
// every memory state of a VM written as the pair Volatility opens (flat
// NAME.vmem + plain NAME.vmsn/NAME.vmss), optionally with the
// guest-physical image NAME.raw, and memory-report.json.

// MemoryReportName is the report WriteMemory writes beside the pairs.
const MemoryReportName = "memory-report.json"

// ErrNoMemoryState means the VM holds no memory state to write (or none
// of the name asked for).
var ErrNoMemoryState = errors.New("no memory state")

// MemoryOptions tune WriteMemory.
type MemoryOptions struct {
	// State selects one state by its base name, its state file's name or
	// its snapshot display name (case-insensitive); "" writes every state.
	State string
	// Physical also writes NAME.raw, the guest-physical image.
	Physical bool
	// Force replaces existing outputs.
	Force bool
	// Jobs is the number of workers copying state files (0: GOMAXPROCS).
	Jobs int
	// SkipSpaceCheck skips the free-space check (tests).
	SkipSpaceCheck bool
	// Progress, when set, receives counters; calls are serialised.
	Progress func(Progress)
	// CheckOutput, when set, is asked about every output path before
	// anything is written (a CLI refuses its key files).
	CheckOutput func(path string) error
}

// MemoryReport is memory-report.json.
type MemoryReport struct {
	Tool      string              `json:"tool"`
	VMX       string              `json:"vmx"`
	OutDir    string              `json:"outDir"`
	Started   time.Time           `json:"started"`
	Seconds   float64             `json:"seconds"`
	Encrypted bool                `json:"encrypted"`
	KeySafe   *KeyUse             `json:"keySafe,omitempty"` // which key opened the VM
	States    []MemoryStateReport `json:"states"`
	Outputs   []Output            `json:"outputs"`
	Warnings  []string            `json:"warnings,omitempty"`
	Notes     []string            `json:"notes,omitempty"`
}

// MemoryStateReport is one state written: what it holds (vm.StateInfo:
// kind, sizes, the region table) and the files written for it.
type MemoryStateReport struct {
	vm.StateInfo
	State    *MemoryFileReport `json:"state,omitempty"` // nil for a .vmem without state file
	Memory   MemoryFileReport  `json:"memory"`          // the flat .vmem
	Physical *PhysicalReport   `json:"physical,omitempty"`
}

// MemoryFileReport is one output of a state and the input it came from.
type MemoryFileReport struct {
	Input     string `json:"input"`
	Encrypted bool   `json:"encrypted"`
	MAC       string `json:"mac,omitempty"` // as FileReport.MAC
	Output    string `json:"output"`
	Size      int64  `json:"size"`
	SHA256    string `json:"sha256"`
}

// PhysicalReport is a guest-physical image written.
type PhysicalReport struct {
	Output      string `json:"output"`
	Size        int64  `json:"size"`
	Written     int64  `json:"written"`     // bytes of non-zero pages
	ZeroSkipped int64  `json:"zeroSkipped"` // bytes of zero pages left as holes (holes between regions excluded)
	SHA256      string `json:"sha256"`
}

// memJob is one state to write.
type memJob struct {
	s     *vm.MemoryState
	info  *vm.StateInfo
	state string // output names ("" when none)
	vmem  string
	raw   string
}

// WriteMemory writes every memory state of the opened VM v (vm.OpenVM with
// its keys, Depth Full or DataFilesOnly; a plain VM needs none) into outDir
// (created if needed): NAME.vmem (flat: decrypted and decompressed) and
// NAME.vmsn or NAME.vmss (plain) per state, NAME.raw with Physical, and
// memory-report.json. Every state is read (state file parsed, block headers
// checked) before anything is written; everything is written into a
// staging folder and renamed into place only when complete, the report
// last; on failure or cancellation outDir gets no new file.
func WriteMemory(ctx context.Context, v *vm.VM, outDir string, opts *MemoryOptions) (rep *MemoryReport, err error) {
	var o MemoryOptions
	if opts != nil {
		o = *opts
	}
	start := time.Now()
	if v.Locked || v.Settings == nil {
		return nil, fmt.Errorf("%s: the VM was opened without its keys", v.VMXPath)
	}
	var picked []*vm.MemoryState
	var names []string
	for _, s := range v.MemoryStates() {
		names = append(names, s.Name)
		if o.State == "" || stateMatches(s, o.State) {
			picked = append(picked, s)
		}
	}
	if len(picked) == 0 {
		if o.State != "" {
			return nil, fmt.Errorf("%s: no memory state is named %q (the VM has: %s): %w", v.VMXPath, o.State, strings.Join(names, ", "), ErrNoMemoryState)
		}
		return nil, fmt.Errorf("%s holds no snapshot or suspend state: %w", v.VMXPath, ErrNoMemoryState)
	}
	var warns []string
	var jobs []*memJob
	taken := map[string]bool{}
	var outputs []string
	claim := func(name string) error {
		if taken[strings.ToLower(name)] {
			return fmt.Errorf("recover: two memory states would both be written as %s", name)
		}
		taken[strings.ToLower(name)] = true
		outputs = append(outputs, name)
		return nil
	}
	var need int64 = 1 << 20
	for _, s := range picked {
		info, err := s.Read()
		if errors.Is(err, vm.ErrNoMemory) {
			warns = append(warns, fmt.Sprintf("%s is not written: %v", s.State.Name, vm.ErrNoMemory))
			continue
		}
		if err != nil {
			return nil, err
		}
		j := &memJob{s: s, info: info, vmem: s.Name + ".vmem"}
		if s.State != nil {
			j.state = s.Name + strings.ToLower(filepath.Ext(s.State.Name))
			need += s.State.Size
		} else {
			warns = append(warns, fmt.Sprintf("%s has no .vmsn or .vmss beside it: its flat memory is written, but Volatility 3 needs the state file to map it (or reads it as raw guest-physical memory from address 0)", s.Memory.Name))
		}
		if o.Physical {
			j.raw = s.Name + ".raw"
			need += info.FlatSize
		}
		need += info.FlatSize
		for _, n := range []string{j.state, j.vmem, j.raw} {
			if n != "" {
				if err := claim(n); err != nil {
					return nil, err
				}
			}
		}
		jobs = append(jobs, j)
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("%s: no state holds memory: %w", v.VMXPath, ErrNoMemoryState)
	}
	if err := claim(MemoryReportName); err != nil {
		return nil, err
	}
	if err := checkOutputs(outDir, memInputDirs(v, jobs), outputs, o.Force); err != nil {
		return nil, err
	}
	if o.CheckOutput != nil {
		for _, n := range outputs {
			if err := o.CheckOutput(filepath.Join(outDir, n)); err != nil {
				return nil, err
			}
		}
	}
	createdDir := false
	if _, err := os.Stat(outDir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return nil, err
		}
		createdDir = true
	}
	defer func() {
		if err != nil && createdDir {
			os.Remove(outDir)
		}
	}()
	for _, s := range outfile.RemoveStale(outDir) {
		warns = append(warns, fmt.Sprintf("removed %s, left by an interrupted run (it held decrypted data)", s))
	}
	if !o.SkipSpaceCheck {
		if err := outfile.CheckSpace(outDir, need); err != nil {
			return nil, err
		}
	}
	stage, err := outfile.MkdirTemp(outDir, "memory")
	if err != nil {
		return nil, err
	}
	defer stage.Remove()
	rep = &MemoryReport{Tool: "vmcrypt memory", VMX: slash(v.VMXPath), OutDir: slash(outDir), Started: start.UTC(), Encrypted: v.Encrypted()}
	if v.Encrypted() {
		rep.KeySafe = &KeyUse{Locker: v.Opened.Locker, Source: v.Opened.Source, Cipher: v.ConfigKey.Cipher}
	}
	known := map[string]string{}
	for _, j := range jobs {
		sr, err := writeState(ctx, stage.Path, j, &o)
		if err != nil {
			return nil, err
		}
		for _, f := range []*MemoryFileReport{sr.State, &sr.Memory} {
			if f != nil {
				known[f.Output] = f.SHA256
			}
		}
		if sr.Physical != nil {
			known[sr.Physical.Output] = sr.Physical.SHA256
		}
		rep.States = append(rep.States, *sr)
	}
	for _, name := range outputs[:len(outputs)-1] {
		st, err := os.Stat(filepath.Join(stage.Path, name))
		if err != nil {
			return nil, err
		}
		rep.Outputs = append(rep.Outputs, Output{File: name, Size: st.Size(), SHA256: known[name]})
	}
	rep.Warnings = append(append([]string(nil), v.Warnings...), warns...)
	rep.Notes = v.Notes()
	rep.Seconds = time.Since(start).Seconds()
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileCtx(ctx, filepath.Join(stage.Path, MemoryReportName), append(js, '\n')); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := publishStage(stage, outDir, o.Force, MemoryReportName); err != nil {
		return nil, err
	}
	return rep, nil
}

// stateMatches reports whether want names s: its base name, its state
// file's name or its display name, case-insensitively.
func stateMatches(s *vm.MemoryState, want string) bool {
	if strings.EqualFold(s.Name, want) || (s.DisplayName != "" && strings.EqualFold(s.DisplayName, want)) {
		return true
	}
	return s.State != nil && strings.EqualFold(s.State.Name, want) || s.Memory != nil && strings.EqualFold(s.Memory.Name, want)
}

// memInputDirs are the folders WriteMemory reads from.
func memInputDirs(v *vm.VM, jobs []*memJob) []string {
	dirs := []string{v.Dir, filepath.Dir(v.VMXPath)}
	for _, j := range jobs {
		for _, df := range []*vm.DataFile{j.s.State, j.s.Memory} {
			if df == nil {
				continue
			}
			dirs = append(dirs, filepath.Dir(df.Path))
			if real, err := filepath.EvalSymlinks(df.Path); err == nil {
				dirs = append(dirs, filepath.Dir(real))
			}
		}
	}
	return dirs
}

// writeState writes one state's outputs into stage.
func writeState(ctx context.Context, stage string, j *memJob, o *MemoryOptions) (*MemoryStateReport, error) {
	s, info := j.s, j.info
	sr := &MemoryStateReport{StateInfo: *info}
	if s.State != nil {
		sum, err := copyDataFile(ctx, s.State, filepath.Join(stage, j.state), o.Jobs, progressOf(o.Progress, j.state, "decrypt"))
		if err != nil {
			return nil, err
		}
		sr.State = &MemoryFileReport{Input: slash(s.State.Path), Encrypted: s.State.Encrypted, MAC: s.State.MAC, Output: j.state, Size: s.State.Size, SHA256: sum}
	}
	src := s.Memory
	if src == nil {
		src = s.State
	}
	sr.Memory = MemoryFileReport{Input: slash(src.Path), Encrypted: src.Encrypted, MAC: src.MAC, Output: j.vmem}
	flatPath := filepath.Join(stage, j.vmem)
	n, sum, err := writeFlatFile(ctx, flatPath, info.WriteFlat, progressOf(o.Progress, j.vmem, "decompress"), info.FlatSize)
	if err != nil {
		return nil, err
	}
	if n != info.FlatSize {
		return nil, fmt.Errorf("%s: decoded to %d flat bytes, its block headers say %d (did it change?): %w", src.Path, n, info.FlatSize, keysafe.ErrCorrupt)
	}
	sr.Memory.Size, sr.Memory.SHA256 = n, sum
	if j.raw != "" {
		pr, err := writePhysical(ctx, flatPath, filepath.Join(stage, j.raw), info, progressOf(o.Progress, j.raw, "physical"))
		if err != nil {
			return nil, err
		}
		pr.Output = j.raw
		sr.Physical = pr
	}
	return sr, nil
}

// writePhysical lays the staged flat file out by the state's regions into
// rawPath (sparse) and hashes the result.
func writePhysical(ctx context.Context, flatPath, rawPath string, info *vm.StateInfo, prog vmdk.Progress) (*PhysicalReport, error) {
	flat, err := os.Open(flatPath)
	if err != nil {
		return nil, err
	}
	defer flat.Close()
	out, err := os.OpenFile(rawPath, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	in := &ctxReader{ctx: ctx, r: flat, prog: prog, total: info.FlatSize}
	st, err := memory.WritePhysical(out, bufio.NewReaderSize(in, 1<<20), info.RegionList(), flatPath)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	if err := out.Sync(); err != nil {
		return nil, err
	}
	if err := out.Close(); err != nil {
		return nil, err
	}
	sum, err := hashFile(ctx, rawPath)
	if err != nil {
		return nil, err
	}
	return &PhysicalReport{Size: st.Size, Written: st.Written, ZeroSkipped: st.ZeroSkipped, SHA256: sum}, nil
}

// ctxReader stops reading once ctx is done and counts progress.
type ctxReader struct {
	ctx   context.Context
	r     io.Reader
	prog  vmdk.Progress
	done  int64
	total int64
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.done += int64(n)
	if c.prog != nil {
		c.prog(c.done, c.total)
	}
	return n, err
}

// progressOf returns a progress callback for one output, or nil.
func progressOf(f func(Progress), file, phase string) vmdk.Progress {
	if f == nil {
		return nil
	}
	var mu sync.Mutex
	return func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		f(Progress{File: file, Phase: phase, Done: done, Total: total})
	}
}

// writeFlatFile creates path and fills it with what write produces (flat
// memory, in order): all-zero pages are left as holes, the sha256 is
// computed in order, and the file is synced. It returns the bytes written
// and their sha256. Hashing and writing run on goroutines of their own
// (flatSink), beside the decoder.
func writeFlatFile(ctx context.Context, path string, write func(context.Context, io.Writer) (int64, error), prog vmdk.Progress, total int64) (int64, string, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	sink := newFlatSink(f, prog, total)
	n, err := write(ctx, sink)
	if cerr := sink.close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, "", err
	}
	if n != sink.off {
		return n, "", fmt.Errorf("%s: %d bytes reported, %d written", path, n, sink.off)
	}
	if err := f.Truncate(sink.off); err != nil {
		return n, "", err
	}
	if err := f.Sync(); err != nil {
		return n, "", err
	}
	if err := f.Close(); err != nil {
		return n, "", err
	}
	return n, hex.EncodeToString(sink.h.Sum(nil)), nil
}

// Buffers of flatSink: sinkBufs of sinkBufSize bytes (a block of VMware's
// .vmem each), so memory stays bounded.
const (
	sinkBufs    = 3
	sinkBufSize = memory.BlockSize
)

// sinkBuf is a piece of the stream on its way to the hasher and the
// writer; the last of the two to finish frees it.
type sinkBuf struct {
	b       []byte
	off     int64
	pending atomic.Int32
}

// flatSink takes a stream of flat memory (Write, in order) and hands each
// piece, copied, to two goroutines: one hashes the stream in order, the
// other writes it at its offset leaving all-zero pages unwritten (the file
// stays sparse; the caller truncates it to its size). The decoder thus
// runs beside the hashing and the writing. Memory is sinkBufs buffers;
// nothing is allocated per write. close waits for both and returns the
// first error.
type flatSink struct {
	f      *os.File
	h      hash.Hash
	off    int64
	prog   vmdk.Progress
	total  int64
	free   chan *sinkBuf
	toHash chan *sinkBuf
	toDisk chan *sinkBuf
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

func newFlatSink(f *os.File, prog vmdk.Progress, total int64) *flatSink {
	s := &flatSink{f: f, h: sha256.New(), prog: prog, total: total,
		free: make(chan *sinkBuf, sinkBufs), toHash: make(chan *sinkBuf, sinkBufs), toDisk: make(chan *sinkBuf, sinkBufs)}
	for range sinkBufs {
		s.free <- &sinkBuf{b: make([]byte, sinkBufSize)}
	}
	s.wg.Add(2)
	go s.worker(s.toHash, func(b *sinkBuf) error { s.h.Write(b.b); return nil })
	go s.worker(s.toDisk, s.writeNonZero)
	return s
}

func (s *flatSink) worker(in chan *sinkBuf, do func(*sinkBuf) error) {
	defer s.wg.Done()
	for b := range in {
		if s.failed() == nil {
			if err := do(b); err != nil {
				s.fail(err)
			}
		}
		if b.pending.Add(-1) == 0 {
			s.free <- b
		}
	}
}

func (s *flatSink) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

func (s *flatSink) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Write queues a copy of p.
func (s *flatSink) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if err := s.failed(); err != nil {
			return 0, err
		}
		b := <-s.free
		k := copy(b.b[:cap(b.b)], p)
		b.b, b.off = b.b[:k], s.off
		b.pending.Store(2)
		s.toHash <- b
		s.toDisk <- b
		p = p[k:]
		s.off += int64(k)
	}
	if s.prog != nil {
		s.prog(s.off, s.total)
	}
	return n, nil
}

// close stops the workers and returns the first error.
func (s *flatSink) close() error {
	close(s.toHash)
	close(s.toDisk)
	s.wg.Wait()
	return s.failed()
}

// minHole is the shortest run of zero pages flatSink leaves unwritten:
// shorter runs are written with the data around them (one write instead
// of many small ones).
const minHole = 64 << 10

// writeNonZero writes b at its offset, leaving runs of at least minHole
// bytes of all-zero pages unwritten.
func (s *flatSink) writeNonZero(sb *sinkBuf) error {
	b, off := sb.b, sb.off
	start := 0 // first byte not yet written or skipped
	for i := 0; i < len(b); {
		if !vmdk.AllZero(b[i:min(i+memory.PageSize, len(b))]) {
			i += memory.PageSize
			continue
		}
		j := i + memory.PageSize // end of the zero run
		for j < len(b) && vmdk.AllZero(b[j:min(j+memory.PageSize, len(b))]) {
			j += memory.PageSize
		}
		j = min(j, len(b))
		if j-i >= minHole || (j == len(b) && i == start) {
			if i > start {
				if _, err := s.f.WriteAt(b[start:i], off+int64(start)); err != nil {
					return err
				}
			}
			start = j
		}
		i = j
	}
	if start < len(b) {
		if _, err := s.f.WriteAt(b[start:], off+int64(start)); err != nil {
			return err
		}
	}
	return nil
}
