package recover

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/vm"
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

// MaxJobs caps Options.Jobs.
const MaxJobs = vmdk.MaxJobs

// ErrVTPMNoNVRAM means a VM with a vTPM lacks a readable .nvram: its
// sealed secrets (BitLocker keys) would be lost without a word.
var ErrVTPMNoNVRAM = errors.New("the VM has a vTPM but its .nvram (the vTPM state) is missing or unreadable")

// Options tune NewPlan and Run.
type Options struct {
	// Resolver opens every key (Recover only; NewPlan takes an opened VM).
	Resolver *keys.Resolver
	// Format is FormatVMDK (default) or FormatRaw.
	Format string
	// Flatten writes one image per disk instead of keeping the chain.
	Flatten bool
	// Jobs is the number of workers per disk (0: GOMAXPROCS).
	Jobs int
	// Force replaces existing outputs.
	Force bool
	// IgnoreMAC switches the page-MAC rule of data files off (Recover
	// only).
	IgnoreMAC bool
	// StrictMAC refuses data files whose MAC scheme is unknown (Recover
	// only).
	StrictMAC bool
	// VMDK tunes opening disks (Recover only; nil: safe defaults).
	VMDK *vmdk.OpenOptions
	// DropVTPM removes the vtpm.* settings from the recovered VMX (the
	// vTPM state in the .nvram is then unused: secrets sealed to it are
	// lost for this copy).
	DropVTPM bool
	// AllowMissingNVRAM recovers a vTPM VM whose .nvram is missing or
	// unreadable.
	AllowMissingNVRAM bool
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

// Plan is the outputs of a recovery of an opened VM: every key opened,
// every input parsed, the outputs named. Nothing is written until Run.
type Plan struct {
	VM      *vm.VM
	opts    Options
	disks   []*plannedDisk
	files   []*plannedFile
	outputs []string // final names in the output folder
	warns   []string
	vtpm    *VTPMReport
	ownVM   bool // NewPlan's caller passed a path: Close closes the VM
}

type plannedDisk struct {
	d   *vm.Disk
	out string // output name (top file, or .img)
}

type plannedFile struct {
	df  *vm.DataFile
	out string
}

// NewPlan plans the recovery of an opened, encrypted VM (vm.OpenVM with
// Depth Full and no KeepGoing): output names for every disk (per link,
// flattened, or raw), data file and plain file, checked for collisions.
func NewPlan(v *vm.VM, opts *Options) (*Plan, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Format == "" {
		o.Format = FormatVMDK
	}
	if o.Format != FormatVMDK && o.Format != FormatRaw {
		return nil, fmt.Errorf("recover: format %q: want vmdk or raw", o.Format)
	}
	if !v.Encrypted() {
		return nil, fmt.Errorf("%s: nothing to recover: %w", v.VMXPath, vm.ErrNotEncrypted)
	}
	if v.Locked || v.Settings == nil {
		return nil, fmt.Errorf("%s: the VM was opened without its keys", v.VMXPath)
	}
	p := &Plan{VM: v, opts: o}
	taken := map[string]string{}
	claim := func(name, what string) error {
		if prev, ok := taken[strings.ToLower(name)]; ok {
			return fmt.Errorf("recover: %s and %s would both be written as %s", prev, what, name)
		}
		taken[strings.ToLower(name)] = what
		p.outputs = append(p.outputs, name)
		return nil
	}
	if err := claim(filepath.Base(v.VMXPath), v.VMXPath); err != nil {
		return nil, err
	}
	for _, d := range v.Disks {
		if d.Err != nil {
			return nil, d.Err
		}
		pd := &plannedDisk{d: d}
		p.disks = append(p.disks, pd)
		links := d.VMDK.Links()
		top := filepath.Base(links[0].Path)
		switch {
		case o.Format == FormatRaw:
			pd.out = strings.TrimSuffix(top, filepath.Ext(top)) + ".img"
			if err := claim(pd.out, d.Path); err != nil {
				return nil, err
			}
		case o.Flatten:
			// Every file the writer will make (extents too), as Run
			// writes it.
			pd.out = top
			sf := writableSubformat(links[len(links)-1].Descriptor.CreateType, false)
			for _, name := range vmdk.OutputFiles(top, d.Plain.Size(), &vmdk.WriteOptions{Subformat: sf}) {
				if err := claim(name, d.Path); err != nil {
					return nil, err
				}
			}
		default:
			pd.out = top
			for i, l := range links {
				sf := writableSubformat(l.Descriptor.CreateType, i < len(links)-1)
				for _, name := range vmdk.OutputFiles(filepath.Base(l.Path), l.Size(), &vmdk.WriteOptions{Subformat: sf}) {
					if err := claim(name, l.Path); err != nil {
						return nil, err
					}
				}
			}
		}
	}
	for _, df := range v.DataFiles {
		if df.Err != nil {
			return nil, df.Err
		}
		pf := &plannedFile{df: df, out: df.Name}
		if err := claim(pf.out, df.Path); err != nil {
			return nil, err
		}
		p.files = append(p.files, pf)
	}
	if err := claim(ReportName, "the report"); err != nil {
		return nil, err
	}
	if err := p.planVTPM(); err != nil {
		return nil, err
	}
	if o.Flatten || o.Format == FormatRaw {
		chained := false
		for _, d := range p.disks {
			chained = chained || len(d.d.VMDK.Links()) > 1
		}
		for _, f := range p.files {
			if chained && f.df.Kind == vm.KindSnapList {
				p.warns = append(p.warns, fmt.Sprintf("%s is copied but names snapshot disks that were flattened into one image and not written: VMware would list snapshots it cannot revert to; delete it, or recover with VMDK output kept as a chain to keep the snapshot tree", f.out))
			}
		}
	}
	return p, nil
}

// VTPMReport says what became of a VM's virtual TPM.
type VTPMReport struct {
	Present bool   `json:"present"`
	NVRAM   string `json:"nvram"`   // the file that holds the vTPM state
	Kept    bool   `json:"kept"`    // vtpm.* settings kept in the plain VMX
	Note    string `json:"note"`    // what the user should know
	Missing bool   `json:"missing"` // the .nvram was missing or unreadable
}

// planVTPM checks the vTPM state of a VM that has one: VMware powers on a
// vTPM VM only when it is encrypted, and secrets sealed to the vTPM
// (BitLocker) live in the .nvram.
func (p *Plan) planVTPM() error {
	v := p.VM
	if !v.VTPM() {
		return nil
	}
	nv := vmx.NVRAM(v.Settings, filepath.Base(v.VMXPath))
	r := &VTPMReport{Present: true, NVRAM: nv, Kept: !p.opts.DropVTPM}
	found := false
	for _, f := range p.files {
		if strings.EqualFold(f.df.Name, filepath.Base(nv)) && f.df.Err == nil {
			found = true
		}
	}
	if !found {
		r.Missing = true
		if !p.opts.AllowMissingNVRAM {
			return fmt.Errorf("%s: %s: its sealed secrets (BitLocker keys) would be lost: %w", v.VMXPath, nv, ErrVTPMNoNVRAM)
		}
	}
	switch {
	case p.opts.DropVTPM:
		r.Note = "the vTPM was removed from the plain VMX: it powers on without encryption, but secrets sealed to the vTPM (BitLocker, Windows Hello, credentials in the TPM) are lost for this copy; keep the original to get them back"
	default:
		r.Note = "the plain VMX keeps its vTPM (vtpm.present): VMware powers on a vTPM VM only when it is encrypted, so re-encrypt this copy (VM Options > Encryption) before starting it; the vTPM state is kept in " + nv + ", so secrets sealed to it (BitLocker) work again once it is"
	}
	if r.Missing {
		r.Note = nv + " is missing or unreadable: the vTPM state and every secret sealed to it are lost; " + r.Note
	}
	p.vtpm = r // the report and the summary say it (Report.VTPM)
	return nil
}

// SetProgress sets the progress callback of Run.
func (p *Plan) SetProgress(f func(Progress)) { p.opts.Progress = f }

// Close closes the VM when the plan opened it (Recover).
func (p *Plan) Close() error {
	if p.ownVM {
		return p.VM.Close()
	}
	return nil
}

// Outputs lists the files Run writes in the output folder.
func (p *Plan) Outputs() []string { return append([]string(nil), p.outputs...) }

// NeedBytes estimates the space the outputs take: every allocated byte of
// every disk (per link when the chain is kept) and every data file.
func (p *Plan) NeedBytes() int64 {
	var n int64
	for _, d := range p.disks {
		if p.opts.Format == FormatVMDK && !p.opts.Flatten {
			n += d.d.StoredBytes()
		} else {
			n += d.d.Plain.DataBytes()
		}
	}
	for _, f := range p.files {
		n += f.df.Size
	}
	return n + 1<<20
}

// writableSubformat maps a link's createType to a subformat vmdk.Write
// produces; deltas and anything else become monolithicSparse.
func writableSubformat(createType string, delta bool) string {
	for _, s := range []string{vmdk.SubformatMonolithicSparse, vmdk.SubformatMonolithicFlat, vmdk.SubformatStreamOptimized, vmdk.SubformatTwoGbMaxExtentSparse} {
		if strings.EqualFold(createType, s) {
			if delta && (s == vmdk.SubformatMonolithicFlat || s == vmdk.SubformatStreamOptimized) {
				return vmdk.SubformatMonolithicSparse
			}
			return s
		}
	}
	return vmdk.SubformatMonolithicSparse
}

// Recover opens the VM at vmPath with opts.Resolver, plans and runs: the
// VM is written plain into outDir. See vm.OpenVM, NewPlan and Plan.Run.
func Recover(ctx context.Context, vmPath, outDir string, opts *Options) (*Report, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Resolver == nil {
		o.Resolver = keys.NewResolver()
	}
	v, err := vm.OpenVM(ctx, vmPath, &vm.Options{Resolver: o.Resolver, VMDK: o.VMDK, IgnoreMAC: o.IgnoreMAC, StrictMAC: o.StrictMAC})
	if err != nil {
		return nil, err
	}
	p, err := NewPlan(v, &o)
	if err != nil {
		v.Close()
		return nil, err
	}
	p.ownVM = true
	defer p.Close()
	return p.Run(ctx, outDir)
}

// NeedsPassphrase reports whether the key safe of the VM at vmPath can be
// opened by a passphrase (a phrase pair), so that a CLI knows whether to
// prompt for one when no key was given.
func NeedsPassphrase(vmPath string) (bool, error) {
	v, err := vm.OpenVM(context.Background(), vmPath, &vm.Options{Depth: vm.SettingsOnly})
	if err != nil {
		return false, err
	}
	defer v.Close()
	if v.KeySafe == nil {
		return false, nil
	}
	for _, p := range v.KeySafe.Pairs() {
		if p.Locker != nil && p.Locker.Type == keysafe.TypePhrase {
			return true, nil
		}
	}
	return false, nil
}
