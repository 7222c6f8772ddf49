package recover

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Output formats of disks.
const (
	FormatVMDK = "vmdk" // plain VMDKs: the chain kept, or one image with Flatten
	FormatRaw  = "raw"  // one sparse raw .img per disk (always flattened)
)

// ReportName is the report written beside the recovered files.
const ReportName = "recover-report.json"

// Notes of the report when a modelled format was used.
const (
	NoteDiskModel = "modelled format: encrypted VMDK data was decrypted as XTS-AES-256 with tweak = virtual LBA (docs/formats.md §8, MODEL); a real sample may differ"
	NoteMACModel  = "modelled format: data-file page MACs were checked against vmcrypt's MODEL (HMAC-SHA256, docs/formats.md §9)"
	NoteMACSkip   = "data-file page MACs were NOT checked (--ignore-mac): the MAC is a modelled format"
	NoteFQIDModel = "modelled format: an fqid (key provider) pair was unlocked through the MODEL of docs/formats.md §7"
)

// dataFileExts are the data-file kinds of a VM folder (FORMATS.md §9).
var dataFileExts = []string{".nvram", ".vswp", ".vmsn", ".vmss", ".vmem"}

// plainCopyExts are small plain files of a VM folder copied as they are.
var plainCopyExts = []string{".vmsd", ".vmxf"}

// Options tune Plan and Run.
type Options struct {
	// Resolver opens every key (required for encrypted VMs).
	Resolver *keys.Resolver
	// Format is FormatVMDK (default) or FormatRaw.
	Format string
	// Flatten writes one image per disk instead of keeping the chain.
	Flatten bool
	// Jobs is the number of workers per disk (0: GOMAXPROCS).
	Jobs int
	// Force replaces existing outputs.
	Force bool
	// IgnoreMAC skips the MODEL page MAC of data files.
	IgnoreMAC bool
	// VMDK tunes opening disks (nil: safe defaults).
	VMDK *vmdk.OpenOptions
	// Progress, when set, receives counters as work advances; calls are
	// serialised.
	Progress func(Progress)
	// SkipSpaceCheck skips the free-space check (tests).
	SkipSpaceCheck bool
}

// Progress is one progress report: Done of Total bytes of File (an output
// name) in Phase ("write", "verify", "decrypt").
type Progress struct {
	File  string
	Phase string
	Done  int64
	Total int64
}

// Plan is an opened VM: every key opened, every input parsed, the outputs
// named. Nothing is written until Run.
type Plan struct {
	VMXPath string
	dir     string
	opts    Options
	dec     *vmx.Decrypted
	vmxOpen keys.Opened
	cfgKey  *keysafe.Key
	dfKey   *keysafe.Key
	disks   []*plannedDisk
	files   []*plannedFile
	outputs []string // final names in the output folder
	notes   map[string]bool
	warns   []string
}

type plannedDisk struct {
	dev, setting string // device and fileName as the settings give them
	od           *OpenedDisk
	out          string // output name (top file, or .img)
}

type plannedFile struct {
	path      string
	out       string
	encrypted bool
	size      int64
}

// Report is recover-report.json.
type Report struct {
	Tool      string       `json:"tool"`
	VMX       string       `json:"vmx"`
	OutDir    string       `json:"outDir"`
	Format    string       `json:"format"`
	Flatten   bool         `json:"flatten"`
	Started   time.Time    `json:"started"`
	Seconds   float64      `json:"seconds"`
	KeySafe   KeyUse       `json:"keySafe"`
	Disks     []DiskReport `json:"disks"`
	DataFiles []FileReport `json:"dataFiles"`
	Outputs   []Output     `json:"outputs"`
	Warnings  []string     `json:"warnings,omitempty"`
	Notes     []string     `json:"notes,omitempty"`
}

// KeyUse says which source opened a locator.
type KeyUse struct {
	Locker string `json:"locker"`
	Source string `json:"source"`
	Cipher string `json:"cipher"`
}

// DiskReport describes one recovered disk.
type DiskReport struct {
	Device        string    `json:"device"`
	FileName      string    `json:"fileName"`
	Size          int64     `json:"size"`
	DataBytes     int64     `json:"dataBytes"`
	Links         []LinkKey `json:"links"`
	Output        string    `json:"output"`
	ContentSHA256 string    `json:"contentSha256"` // sha256 of the plain virtual disk (as qemu-img convert -O raw gives it)
	Verified      string    `json:"verified"`
	Seconds       float64   `json:"seconds"`
}

// FileReport describes one data file.
type FileReport struct {
	File       string `json:"file"`
	Output     string `json:"output"`
	Encrypted  bool   `json:"encrypted"`
	Size       int64  `json:"size"`
	MACChecked bool   `json:"macChecked"`
}

// Output is one written file with its sha256.
type Output struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// FindVMX returns the VMX of path: path itself, or the one .vmx in the
// folder path.
func FindVMX(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return path, nil
	}
	m, _ := filepath.Glob(filepath.Join(path, "*.vmx"))
	switch len(m) {
	case 1:
		return m[0], nil
	case 0:
		return "", fmt.Errorf("%s holds no .vmx file", path)
	}
	return "", fmt.Errorf("%s holds %d .vmx files; name one", path, len(m))
}

// NewPlan opens the VM at vmPath (a .vmx or its folder): the key safe, the
// settings, every disk chain and its keys, the data files' headers. A wrong
// or missing key fails here, before anything is written.
func NewPlan(vmPath string, opts *Options) (_ *Plan, err error) {
	if opts == nil {
		opts = &Options{}
	}
	o := *opts
	if o.Format == "" {
		o.Format = FormatVMDK
	}
	if o.Format != FormatVMDK && o.Format != FormatRaw {
		return nil, fmt.Errorf("recover: format %q: want vmdk or raw", o.Format)
	}
	if o.Resolver == nil {
		o.Resolver = keys.NewResolver()
	}
	path, err := FindVMX(vmPath)
	if err != nil {
		return nil, err
	}
	p := &Plan{VMXPath: path, dir: filepath.Dir(path), opts: o, notes: map[string]bool{}}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	f, err := vmx.ReadFile(path)
	if err != nil {
		return nil, err
	}
	loc, err := f.KeySafe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if loc == nil {
		return nil, fmt.Errorf("%s is not encrypted (no encryption.keySafe): nothing to recover: %w", path, keysafe.ErrUnsupported)
	}
	key, opened, err := o.Resolver.Open(loc)
	if err != nil {
		return nil, fmt.Errorf("%s: key safe: %w", path, err)
	}
	p.cfgKey, p.vmxOpen = key, opened
	if strings.HasPrefix(opened.Locker, "fqid") {
		p.notes[NoteFQIDModel] = true
	}
	dec, err := vmx.Decrypt(f, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p.dec = dec
	if p.dfKey, err = dec.Settings.DataFileKey(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	taken := map[string]string{}
	claim := func(name, what string) error {
		if prev, ok := taken[strings.ToLower(name)]; ok {
			return fmt.Errorf("recover: %s and %s would both be written as %s", prev, what, name)
		}
		taken[strings.ToLower(name)] = what
		p.outputs = append(p.outputs, name)
		return nil
	}
	if err := claim(filepath.Base(path), path); err != nil {
		return nil, err
	}
	// Disks.
	for _, d := range vmx.Disks(dec.Settings) {
		dp := d.FileName
		if !filepath.IsAbs(dp) {
			dp = filepath.Join(p.dir, filepath.FromSlash(dp))
		}
		od, err := OpenDisk(dp, o.Resolver, o.VMDK)
		if err != nil {
			return nil, fmt.Errorf("disk %s (%s): %w", d.FileName, d.Device, err)
		}
		pd := &plannedDisk{dev: d.Device, setting: d.FileName, od: od}
		p.disks = append(p.disks, pd)
		for _, lk := range od.Links {
			if lk.Modelled {
				p.notes[NoteDiskModel] = true
			}
			if strings.HasPrefix(lk.Locker, "fqid") {
				p.notes[NoteFQIDModel] = true
			}
		}
		p.warns = append(p.warns, od.VMDK.Warnings()...)
		top := filepath.Base(od.VMDK.Links()[0].Path)
		switch {
		case o.Format == FormatRaw:
			pd.out = strings.TrimSuffix(top, filepath.Ext(top)) + ".img"
			if err := claim(pd.out, dp); err != nil {
				return nil, err
			}
		case o.Flatten:
			// Every file the writer will make (extents too), as Run
			// writes it.
			pd.out = top
			links := od.VMDK.Links()
			sf := writableSubformat(links[len(links)-1].Descriptor.CreateType, false)
			for _, name := range vmdk.OutputFiles(top, od.Plain.Size(), &vmdk.WriteOptions{Subformat: sf}) {
				if err := claim(name, dp); err != nil {
					return nil, err
				}
			}
		default:
			pd.out = top
			for i, l := range od.VMDK.Links() {
				sf := writableSubformat(l.Descriptor.CreateType, i < len(od.VMDK.Links())-1)
				for _, name := range vmdk.OutputFiles(filepath.Base(l.Path), l.Size(), &vmdk.WriteOptions{Subformat: sf}) {
					if err := claim(name, l.Path); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	// Data files and small plain files of the folder.
	ents, err := os.ReadDir(p.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		isData, isPlain := slices.Contains(dataFileExts, ext), slices.Contains(plainCopyExts, ext)
		if !isData && !isPlain || !isRegular(filepath.Join(p.dir, e.Name()), e) {
			continue
		}
		fp := filepath.Join(p.dir, e.Name())
		if o.VMDK == nil || !o.VMDK.AllowUnsafePaths {
			if err := vmdk.StaysInside(p.dir, fp); err != nil {
				p.warns = append(p.warns, fmt.Sprintf("%s is not recovered: %v", e.Name(), err))
				continue
			}
		}
		pf := &plannedFile{path: fp, out: e.Name()}
		if isData {
			enc, size, err := probeDataFile(fp, p.dfKey, o.IgnoreMAC)
			if err != nil {
				return nil, err
			}
			pf.encrypted, pf.size = enc, size
			if enc && !o.IgnoreMAC {
				p.notes[NoteMACModel] = true
			}
			if enc && o.IgnoreMAC {
				p.notes[NoteMACSkip] = true
			}
		}
		if err := claim(pf.out, fp); err != nil {
			return nil, err
		}
		p.files = append(p.files, pf)
	}
	if err := claim(ReportName, "the report"); err != nil {
		return nil, err
	}
	p.warns = append(p.warns, unusedDisks(p.dir, ents, p.disks)...)
	if o.Flatten || o.Format == FormatRaw {
		chained := false
		for _, d := range p.disks {
			chained = chained || len(d.od.VMDK.Links()) > 1
		}
		for _, f := range p.files {
			if chained && strings.EqualFold(filepath.Ext(f.out), ".vmsd") {
				p.warns = append(p.warns, fmt.Sprintf("%s is copied but names snapshot disks that were flattened into one image and not written: VMware would list snapshots it cannot revert to; delete it, or recover without --flatten to keep the snapshot tree", f.out))
			}
		}
	}
	return p, nil
}

// isRegular reports whether the folder entry e (at path) is a regular file
// or a symbolic link to one (a datastore copy may link files from
// elsewhere; they are read like the others).
func isRegular(path string, e os.DirEntry) bool {
	if e.Type().IsRegular() {
		return true
	}
	if e.Type()&os.ModeSymlink == 0 {
		return false
	}
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

// unusedDisks warns about each .vmdk file of the VM folder that no disk of
// the VMX reads (a snapshot branch named only in the .vmsd, a detached
// disk): recover leaves it behind, and says so.
func unusedDisks(dir string, ents []os.DirEntry, disks []*plannedDisk) []string {
	used := map[string]bool{}
	for _, d := range disks {
		for _, l := range d.od.VMDK.Links() {
			used[filepath.Clean(l.Path)] = true
			for _, e := range l.Extents {
				if e.Path != "" {
					used[filepath.Clean(e.Path)] = true
				}
			}
		}
	}
	var warns []string
	for _, e := range ents {
		if !strings.EqualFold(filepath.Ext(e.Name()), ".vmdk") || !isRegular(filepath.Join(dir, e.Name()), e) {
			continue
		}
		if !used[filepath.Clean(filepath.Join(dir, e.Name()))] {
			warns = append(warns, fmt.Sprintf("%s is not recovered: no disk of the VMX reads it (a snapshot branch named only in the .vmsd, or a detached disk); vmcrypt vmdk export can decrypt it with the same key options", e.Name()))
		}
	}
	return warns
}

// probeDataFile says whether a data file is encrypted (the container's
// magic) and checks its header; the plaintext size is returned.
func probeDataFile(path string, key *keysafe.Key, ignoreMAC bool) (bool, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, 0, err
	}
	var magic [4]byte
	if n, _ := f.ReadAt(magic[:], 0); n < 4 || !datafile.IsDataFile(magic[:]) {
		return false, st.Size(), nil
	}
	if key == nil {
		return false, 0, fmt.Errorf("%s is an encrypted data file but the VM's settings hold no dataFileKey: %w", path, keysafe.ErrCorrupt)
	}
	r, err := datafile.NewReader(f, st.Size(), key.Bytes, &datafile.Options{Name: path, IgnoreMAC: ignoreMAC})
	if err != nil {
		return false, 0, err
	}
	return true, r.Size(), nil
}

// Close closes the plan's disks.
func (p *Plan) Close() error {
	var first error
	for _, d := range p.disks {
		if err := d.od.Close(); err != nil && first == nil {
			first = err
		}
	}
	p.disks = nil
	return first
}

// Outputs lists the files Run writes in the output folder.
func (p *Plan) Outputs() []string { return append([]string(nil), p.outputs...) }

// NeedBytes estimates the space the outputs take: every allocated byte of
// every disk (per link when the chain is kept) and every data file.
func (p *Plan) NeedBytes() int64 {
	var n int64
	for _, d := range p.disks {
		if p.opts.Format == FormatVMDK && !p.opts.Flatten {
			for _, runs := range d.od.runs {
				for _, r := range runs {
					if r.State == vmdk.Data {
						n += r.Len
					}
				}
			}
		} else {
			n += d.od.Plain.DataBytes()
		}
	}
	for _, f := range p.files {
		n += f.size
	}
	return n + 1<<20
}

// ErrNoSpace means the output folder lacks the space the outputs need.
var ErrNoSpace = errors.New("not enough free space")

// rename moves a file into place (a variable so that tests can make a
// publish fail half-way).
var rename = os.Rename

// stagePrefix starts the name of the staging folder of a run in OUTDIR.
const stagePrefix = ".vmcrypt-recover-"

// removeStaleStages removes the staging folders of killed runs in outDir
// (their lock is free; a running recover holds its own) and says so: they
// hold decrypted data and would eat the free space of this run.
func removeStaleStages(outDir string) []string {
	ents, err := os.ReadDir(outDir)
	if err != nil {
		return nil
	}
	var warns []string
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), stagePrefix) {
			continue
		}
		path := filepath.Join(outDir, e.Name())
		d, err := os.Open(path)
		if err != nil {
			continue
		}
		err = unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			err = os.RemoveAll(path)
			if err == nil {
				warns = append(warns, fmt.Sprintf("removed %s, the staging folder of an interrupted run (it held decrypted data)", path))
			}
		}
		d.Close()
	}
	return warns
}

// ErrOutputExists means an output file exists and Force is not set.
var ErrOutputExists = errors.New("output exists")

// ErrOutputIsInput means the output folder is a folder that holds inputs
// (the VM folder, or a folder of a disk's file): refused even with Force,
// for it would replace the encrypted originals.
var ErrOutputIsInput = errors.New("the output folder holds the inputs")

// inputDirs returns the folders the plan reads from: those of every input
// file, and of the file each symbolic link among them points to.
func (p *Plan) inputDirs() []string {
	paths := []string{p.VMXPath}
	for _, d := range p.disks {
		for _, l := range d.od.VMDK.Links() {
			paths = append(paths, l.Path)
			for _, e := range l.Extents {
				if e.Path != "" {
					paths = append(paths, e.Path)
				}
			}
		}
	}
	for _, f := range p.files {
		paths = append(paths, f.path)
	}
	dirs := []string{p.dir}
	for _, path := range paths {
		dirs = append(dirs, filepath.Dir(path))
		if real, err := filepath.EvalSymlinks(path); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	return dirs
}

// checkOutDir refuses an output folder that is one of the input folders.
func (p *Plan) checkOutDir(outDir string) error {
	ost, err := os.Stat(outDir)
	if err != nil {
		return nil // it does not exist yet: it holds no input
	}
	for _, d := range p.inputDirs() {
		if st, err := os.Stat(d); err == nil && os.SameFile(ost, st) {
			return fmt.Errorf("%s is %s, where the encrypted inputs are: choose another output folder: %w", outDir, d, ErrOutputIsInput)
		}
	}
	return nil
}

// Run writes the plain VM into outDir (created if needed). Every output is
// written under a staging folder inside outDir, verified, and renamed into
// place only when everything is complete; on failure or cancellation the
// staging folder is removed and outDir holds no new file.
func (p *Plan) Run(ctx context.Context, outDir string) (rep *Report, err error) {
	start := time.Now()
	o := &p.opts
	if err := p.checkOutDir(outDir); err != nil {
		return nil, err
	}
	for _, name := range p.outputs {
		st, err := os.Lstat(filepath.Join(outDir, name))
		switch {
		case err != nil:
		case st.IsDir():
			return nil, fmt.Errorf("%s is a folder where an output file goes: move it away: %w", filepath.Join(outDir, name), ErrOutputExists)
		case !o.Force:
			return nil, fmt.Errorf("%s already exists (use --force to replace it): %w", filepath.Join(outDir, name), ErrOutputExists)
		}
	}
	createdDir := false
	if _, err := os.Stat(outDir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return nil, err
		}
		createdDir = true
	}
	p.warns = append(p.warns, removeStaleStages(outDir)...)
	if !o.SkipSpaceCheck {
		var fs unix.Statfs_t
		if err := unix.Statfs(outDir, &fs); err == nil {
			free := int64(fs.Bavail) * int64(fs.Bsize)
			if need := p.NeedBytes(); need > free {
				if createdDir {
					os.Remove(outDir)
				}
				return nil, fmt.Errorf("%s has %d bytes free, the recovered VM needs up to %d: %w", outDir, free, need, ErrNoSpace)
			}
		}
	}
	stage, err := os.MkdirTemp(outDir, stagePrefix+"*")
	if err != nil {
		return nil, err
	}
	// Held until Run returns: a later run that finds this folder unlocked
	// knows its run was killed (kill -9 runs no cleanup) and removes it.
	if lock, err := os.Open(stage); err == nil {
		defer lock.Close()
		unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	}
	defer func() {
		os.RemoveAll(stage)
		if err != nil && createdDir {
			os.Remove(outDir)
		}
	}()
	rep = &Report{
		Tool: "vmcrypt recover", VMX: p.VMXPath, OutDir: outDir, Format: o.Format, Flatten: o.Flatten || o.Format == FormatRaw,
		Started: start.UTC(), KeySafe: KeyUse{Locker: p.vmxOpen.Locker, Source: p.vmxOpen.Source, Cipher: p.cfgKey.Cipher},
	}
	known := map[string]string{} // output name -> sha256 already known
	// The VMX.
	for _, d := range p.disks {
		if d.setting != d.out {
			p.dec.Settings.Set(d.dev+".fileName", d.out)
			p.warns = append(p.warns, fmt.Sprintf("%s.fileName changed from %q to %q", d.dev, d.setting, d.out))
		}
	}
	if o.Format == FormatRaw && len(p.disks) > 0 {
		p.warns = append(p.warns, "disks were written as raw .img images; the VMX names them but VMware cannot attach raw images: convert them (qemu-img convert -O vmdk) before starting the VM")
	}
	if err := writeFileCtx(ctx, filepath.Join(stage, filepath.Base(p.VMXPath)), p.dec.Recovered()); err != nil {
		return nil, err
	}
	// Disks.
	for _, d := range p.disks {
		dr, err := p.runDisk(ctx, stage, d, known)
		if err != nil {
			return nil, err
		}
		rep.Disks = append(rep.Disks, *dr)
	}
	// Data files.
	for _, f := range p.files {
		fr, sum, err := p.runFile(ctx, stage, f)
		if err != nil {
			return nil, err
		}
		known[f.out] = sum
		rep.DataFiles = append(rep.DataFiles, *fr)
	}
	// Every output with its sha256.
	ents, err := os.ReadDir(stage)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		fp := filepath.Join(stage, e.Name())
		st, err := os.Stat(fp)
		if err != nil {
			return nil, err
		}
		sum, ok := known[e.Name()]
		if !ok {
			if sum, err = hashFile(ctx, fp); err != nil {
				return nil, err
			}
		}
		rep.Outputs = append(rep.Outputs, Output{File: e.Name(), Size: st.Size(), SHA256: sum})
	}
	rep.Warnings = p.warns
	for n := range p.notes {
		rep.Notes = append(rep.Notes, n)
	}
	sort.Strings(rep.Notes)
	rep.Seconds = time.Since(start).Seconds()
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileCtx(ctx, filepath.Join(stage, ReportName), append(js, '\n')); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	// Publish: rename every staged file into place, the report last. A
	// file being replaced (Force) is first moved aside into the staging
	// folder and put back if a later rename fails, so that a failure leaves
	// the previous recovery as it was.
	ents, err = os.ReadDir(stage)
	if err != nil {
		return nil, err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[j].Name() == ReportName })
	aside := filepath.Join(stage, ".replaced")
	type moved struct{ dst, aside string }
	var done []string
	var setAside []moved
	undo := func() {
		for _, d := range done {
			os.Remove(d)
		}
		for _, m := range setAside {
			rename(m.aside, m.dst)
		}
	}
	for _, e := range ents {
		dst := filepath.Join(outDir, e.Name())
		if st, err := os.Lstat(dst); err == nil {
			if !o.Force || st.IsDir() {
				undo()
				return nil, fmt.Errorf("%s appeared while recovering: %w", dst, ErrOutputExists)
			}
			if len(setAside) == 0 {
				if err := os.Mkdir(aside, 0o700); err != nil {
					undo()
					return nil, err
				}
			}
			m := moved{dst, filepath.Join(aside, e.Name())}
			if err := rename(dst, m.aside); err != nil {
				undo()
				return nil, fmt.Errorf("moving the old %s aside: %w", dst, err)
			}
			setAside = append(setAside, m)
		}
		if err := rename(filepath.Join(stage, e.Name()), dst); err != nil {
			undo()
			return nil, fmt.Errorf("moving %s into place: %w", dst, err)
		}
		done = append(done, dst)
	}
	return rep, nil
}

// progress returns a serialised progress callback for one output.
func (p *Plan) progress(file, phase string, total int64) func(done int64) {
	if p.opts.Progress == nil {
		return func(int64) {}
	}
	var mu sync.Mutex
	return func(done int64) {
		mu.Lock()
		defer mu.Unlock()
		p.opts.Progress(Progress{File: file, Phase: phase, Done: done, Total: total})
	}
}

// runDisk writes one disk into stage and verifies it.
func (p *Plan) runDisk(ctx context.Context, stage string, d *plannedDisk, known map[string]string) (*DiskReport, error) {
	t0 := time.Now()
	o := &p.opts
	od := d.od
	plain := od.Plain
	dr := &DiskReport{Device: d.dev, FileName: d.setting, Size: plain.Size(), DataBytes: plain.DataBytes(), Links: od.Links, Output: d.out}
	copts := &CopyOptions{Jobs: o.Jobs}
	if o.Format == FormatRaw {
		path := filepath.Join(stage, d.out)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		if err := f.Truncate(plain.Size()); err != nil {
			return nil, err
		}
		prog := p.progress(d.out, "decrypt", dr.DataBytes)
		copts.Progress = func(done, total int64) { prog(done) }
		sum, err := Copy(ctx, f, plain, plain.Size(), plain.Runs(), copts)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", d.setting, err)
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		dr.ContentSHA256 = hex.EncodeToString(sum[:])
		dr.Verified = "sha256 computed in order as written"
		known[d.out] = dr.ContentSHA256
		dr.Seconds = time.Since(t0).Seconds()
		return dr, nil
	}
	links := od.VMDK.Links()
	wopts := func(l *vmdk.Link, delta bool, total int64, name string) *vmdk.WriteOptions {
		var ddb []vmdk.Field
		for _, f := range l.Descriptor.DDB {
			if !strings.EqualFold(f.Key, "ddb.iofilters") {
				ddb = append(ddb, f)
			}
		}
		prog := p.progress(name, "write", total)
		var done int64
		return &vmdk.WriteOptions{
			Subformat: writableSubformat(l.Descriptor.CreateType, delta),
			GrainSize: validGrain(l.GrainSize),
			CID:       l.CID,
			DDB:       ddb,
			Jobs:      o.Jobs,
			Progress:  func(n int64) { done += n; prog(done) },
		}
	}
	if o.Flatten {
		base := links[len(links)-1]
		w := wopts(links[0], false, plain.Size(), d.out)
		w.Subformat = writableSubformat(base.Descriptor.CreateType, false)
		if err := vmdk.Write(filepath.Join(stage, d.out), ctxReaderAt{ctx, plain}, plain.Size(), plain.Runs(), w); err != nil {
			return nil, ctxErr(ctx, fmt.Errorf("disk %s: %w", d.setting, err))
		}
	} else {
		var parent *vmdk.ParentInfo
		for level := len(links) - 1; level >= 0; level-- {
			l := links[level]
			name := filepath.Base(l.Path)
			w := wopts(l, parent != nil, l.Size(), name)
			grain := int64(0)
			if parent != nil {
				grain = w.GrainSize
				if grain == 0 {
					grain = vmdk.DefaultGrainSize
				}
			}
			view, own, err := od.LinkView(level, grain)
			if err != nil {
				return nil, err
			}
			w.Parent = parent
			if err := vmdk.Write(filepath.Join(stage, name), ctxReaderAt{ctx, view}, view.Size(), own, w); err != nil {
				return nil, ctxErr(ctx, fmt.Errorf("disk %s link %s: %w", d.setting, l.Path, err))
			}
			parent = &vmdk.ParentInfo{CID: l.CID, FileNameHint: name}
		}
	}
	// Verify: the written disk, read back through the vmdk reader, must
	// equal the decrypted source byte for byte.
	sum, err := p.verify(ctx, filepath.Join(stage, d.out), plain, d.out)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", d.setting, err)
	}
	dr.ContentSHA256 = hex.EncodeToString(sum[:])
	dr.Verified = "read back through the VMDK reader and compared with the decrypted source"
	dr.Seconds = time.Since(t0).Seconds()
	return dr, nil
}

// validGrain returns g when vmdk.Write accepts it as a grain, else 0
// (the default).
func validGrain(g int64) int64 {
	if g >= 4096 && g <= vmdk.MaxWriteGrainSize && g&(g-1) == 0 {
		return g
	}
	return 0
}

// ErrVerify means a written output does not read back as its source.
var ErrVerify = errors.New("verification failed")

// verify opens the written disk and compares it with src over the union of
// both allocation maps, returning the sha256 of the content.
func (p *Plan) verify(ctx context.Context, path string, src *Disk, name string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	out, err := vmdk.Open(path, nil)
	if err != nil {
		return sum, fmt.Errorf("%s: reading back: %w: %w", name, ErrVerify, err)
	}
	defer out.Close()
	if out.Size() != src.Size() {
		return sum, fmt.Errorf("%s: size %d, source %d: %w", name, out.Size(), src.Size(), ErrVerify)
	}
	oruns, err := out.Allocated()
	if err != nil {
		return sum, fmt.Errorf("%s: %w: %w", name, ErrVerify, err)
	}
	runs := unionRuns(src.Runs(), oruns)
	var total int64
	for _, r := range runs {
		total += r.Len
	}
	prog := p.progress(name, "verify", total)
	return Copy(ctx, nil, src, src.Size(), runs, &CopyOptions{Jobs: p.opts.Jobs, Compare: out,
		Progress: func(done, _ int64) { prog(done) }})
}

// unionRuns returns Data runs covering every byte either map allocates.
func unionRuns(a, b []vmdk.Run) []vmdk.Run {
	all := append(append([]vmdk.Run(nil), a...), b...)
	sort.Slice(all, func(i, j int) bool { return all[i].Off < all[j].Off })
	var out []vmdk.Run
	for _, r := range all {
		if n := len(out); n > 0 && out[n-1].Off+out[n-1].Len >= r.Off {
			out[n-1].Len = max(out[n-1].Off+out[n-1].Len, r.Off+r.Len) - out[n-1].Off
			continue
		}
		out = append(out, vmdk.Run{Off: r.Off, Len: r.Len, State: vmdk.Data})
	}
	return out
}

// dataFileChunk is the pipeline chunk for data files: 256 whole pages of
// plaintext (a multiple of 512 bytes).
const dataFileChunk = 256 * datafile.DataPerPage

// runFile writes one data file (decrypted) or small plain file (copied).
func (p *Plan) runFile(ctx context.Context, stage string, pf *plannedFile) (*FileReport, string, error) {
	fr := &FileReport{File: pf.path, Output: pf.out, Encrypted: pf.encrypted, Size: pf.size, MACChecked: pf.encrypted && !p.opts.IgnoreMAC}
	in, err := os.Open(pf.path)
	if err != nil {
		return nil, "", err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return nil, "", err
	}
	out, err := os.OpenFile(filepath.Join(stage, pf.out), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, "", err
	}
	defer out.Close()
	prog := p.progress(pf.out, "decrypt", pf.size)
	var sum string
	if pf.encrypted {
		// Decrypted by the parallel pipeline over the Reader: chunks of
		// whole pages, zero pages left as holes, sha256 in order.
		r, err := datafile.NewReader(in, st.Size(), p.dfKey.Bytes, &datafile.Options{Name: pf.path, IgnoreMAC: p.opts.IgnoreMAC})
		if err != nil {
			return nil, "", err
		}
		if err := out.Truncate(r.Size()); err != nil {
			return nil, "", err
		}
		s, err := Copy(ctx, out, r, r.Size(), []vmdk.Run{{Off: 0, Len: r.Size(), State: vmdk.Data}},
			&CopyOptions{Jobs: p.opts.Jobs, ChunkSize: dataFileChunk, Progress: func(done, _ int64) { prog(done) }})
		if err != nil {
			return nil, "", err
		}
		sum = hex.EncodeToString(s[:])
	} else {
		h := sha256.New()
		w := &ctxWriter{ctx: ctx, w: io.MultiWriter(out, h), prog: prog}
		if _, err := io.Copy(w, in); err != nil {
			return nil, "", ctxErr(ctx, err)
		}
		sum = hex.EncodeToString(h.Sum(nil))
	}
	if err := out.Sync(); err != nil {
		return nil, "", err
	}
	if err := out.Close(); err != nil {
		return nil, "", err
	}
	return fr, sum, nil
}

// ctxReaderAt fails reads once ctx is done, so that a writer that knows no
// context stops (vmdk.Write).
type ctxReaderAt struct {
	ctx context.Context
	r   io.ReaderAt
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.ReadAt(p, off)
}

// ctxWriter fails writes once ctx is done and reports progress.
type ctxWriter struct {
	ctx  context.Context
	w    io.Writer
	n    int64
	prog func(int64)
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.prog(c.n)
	return n, err
}

// ctxErr prefers the context's error when it is done (a writer may wrap a
// cancelled read in its own words).
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// writeFileCtx writes a small file.
func writeFileCtx(ctx context.Context, path string, b []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// hashFile returns the sha256 (hex) of a file.
func hashFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(&ctxWriter{ctx: ctx, w: h, prog: func(int64) {}}, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Recover plans and runs in one call: the VM at vmPath is written plain
// into outDir. See NewPlan and Plan.Run.
func Recover(ctx context.Context, vmPath, outDir string, opts *Options) (*Report, error) {
	p, err := NewPlan(vmPath, opts)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	return p.Run(ctx, outDir)
}

// NeedsPassphrase reports whether the key safe of the VM at vmPath can be
// opened by a passphrase (a phrase pair), so that a CLI knows whether to
// prompt for one when no key was given.
func NeedsPassphrase(vmPath string) (bool, error) {
	path, err := FindVMX(vmPath)
	if err != nil {
		return false, err
	}
	f, err := vmx.ReadFile(path)
	if err != nil {
		return false, err
	}
	loc, err := f.KeySafe()
	if err != nil || loc == nil {
		return false, err
	}
	for _, p := range loc.Pairs() {
		if p.Locker != nil && p.Locker.Type == keysafe.TypePhrase {
			return true, nil
		}
	}
	return false, nil
}
