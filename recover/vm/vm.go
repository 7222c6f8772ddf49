package vm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/memory"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// ErrNotEncrypted means a command that needs an encrypted VM was given a
// plain one (it wraps keysafe.ErrUnsupported: exit 5).
var ErrNotEncrypted = fmt.Errorf("the VM is not encrypted: %w", keysafe.ErrUnsupported)

// Depth says how much of a VM OpenVM opens.
type Depth int

// Depths, each including the ones before.
const (
	// Full opens the settings, every disk chain with every link's key,
	// and the header of every data file (the default).
	Full Depth = iota
	// SettingsOnly opens the key safe and the settings; disks and data
	// files are listed (Files) but not opened.
	SettingsOnly
	// DataFilesOnly opens the key safe, the settings and every data
	// file's header, and no disk (memory and inspect: a VM copied without
	// its disks still opens).
	DataFilesOnly
)

// Notes of modelled formats (docs/formats.md), said wherever a VM went
// through them.
const (
	NoteDiskModel  = "modelled format: encrypted VMDK data was decrypted as XTS-AES-256 with tweak = virtual LBA (docs/formats.md §8, MODEL); a real sample may differ"
	NoteMACModel   = "modelled format: data-file page MACs were checked against vmcrypt's MODEL (HMAC-SHA256, docs/formats.md §9)"
	NoteMACSkip    = "data-file page MACs were NOT checked (the MAC rule was switched off)"
	NoteMACUnknown = "data-file page MACs were not checked: they match no known scheme (VMware's page MAC is not public, docs/formats.md §9); the data is decrypted but not authenticated"
	NoteFQIDModel  = "modelled format: an fqid (key provider) pair was unlocked through the MODEL of docs/formats.md §7"
)

// Options tune OpenVM.
type Options struct {
	// Resolver opens the keys. Nil opens no key: an encrypted VM then
	// opens Locked (its key safe and files are described, nothing is
	// decrypted), as inspect and scan need.
	Resolver *keys.Resolver
	// VMDK tunes opening disks (nil: safe defaults). Its AllowUnsafePaths
	// also lets data files that are links out of the VM folder be read.
	VMDK *vmdk.OpenOptions
	// Depth says how much to open (default Full).
	Depth Depth
	// KeepGoing records the failure of one disk or data file on it (Err)
	// and goes on with the others, for commands that report every disk
	// (unlock, nkp verify, kms verify). Without it the first failure is
	// returned.
	KeepGoing bool
	// IgnoreMAC switches the page-MAC rule of data files off (a damaged
	// file read as far as it goes).
	IgnoreMAC bool
	// StrictMAC refuses data files whose MAC scheme is unknown (not the
	// MODEL) instead of decrypting them unauthenticated.
	StrictMAC bool
}

// VM is an opened VM: the ONE walk from a .vmx to its key safe, settings,
// disks (each link with its key) and data files. Every command that reads a
// VM (inspect, unlock, recover, nkp verify, kms verify, mount, serve,
// memory, vmx) opens it here. It is a read-only view: disks are io.ReaderAt
// with allocation maps, data files open as io.ReaderAt; nothing is
// written. Close releases the files.
type VM struct {
	VMXPath string
	Dir     string
	// File is the VMX as stored.
	File *vmx.File
	// KeySafe is the VMX's key locator; nil for a plain VM.
	KeySafe *keysafe.Locator
	// Locked is true for an encrypted VM opened without a Resolver.
	Locked bool
	// ConfigKey and Opened: the key the key safe held and who opened it.
	ConfigKey *keysafe.Key
	Opened    keys.Opened
	// Decrypted is encryption.data decrypted (nil: plain or locked).
	Decrypted *vmx.Decrypted
	// Settings are the VM's settings: decrypted, or the VMX of a plain VM;
	// nil when locked.
	Settings *vmx.File
	// DataFileKey opens the data files (nil when the settings hold none).
	DataFileKey *keysafe.Key
	// Disks are the disks the settings name, in device order.
	Disks []*Disk
	// DataFiles are the VM's data files (.nvram, .vswp, .vmsn, .vmss,
	// .vmem) and small plain files (.vmsd, .vmxf) in its folder.
	DataFiles []*DataFile
	// Files is the inventory of the folder: every VM file, probed.
	Files []File
	// Warnings are things a user should know (one sentence each).
	Warnings []string

	notes map[string]bool
}

// Disk is one disk of a VM, as the settings name it.
type Disk struct {
	Device   string // e.g. scsi0:0
	FileName string // as the settings give it
	Path     string // resolved against the VM folder
	// Opened is the chain with every link's key (nil when Err is set).
	*OpenedDisk
	// Err is why the disk did not open (only with KeepGoing).
	Err error
}

// Encrypted reports whether the VM has a key safe.
func (v *VM) Encrypted() bool { return v.KeySafe != nil }

// Notes lists the modelled formats the VM went through, sorted.
func (v *VM) Notes() []string {
	var out []string
	for n := range v.notes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (v *VM) note(n string) {
	if v.notes == nil {
		v.notes = map[string]bool{}
	}
	v.notes[n] = true
}

// VTPM reports whether the VM has a virtual TPM (vtpm.present, in the
// plain header lines or the settings).
func (v *VM) VTPM() bool {
	for _, f := range []*vmx.File{v.File, v.Settings} {
		if f == nil {
			continue
		}
		if val, ok := f.Get("vtpm.present"); ok && vmx.IsTrue(val) {
			return true
		}
	}
	return false
}

// Close closes the VM's disks.
func (v *VM) Close() error {
	var first error
	for _, d := range v.Disks {
		if d.OpenedDisk != nil {
			if err := d.OpenedDisk.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	v.Disks = nil
	return first
}

// Locators returns every key locator the VM holds: the key safe, then each
// encrypted link of each opened disk (what key providers must answer for).
func (v *VM) Locators() []*keysafe.Locator {
	var out []*keysafe.Locator
	if v.KeySafe != nil {
		out = append(out, v.KeySafe)
	}
	for _, d := range v.Disks {
		if d.OpenedDisk == nil {
			continue
		}
		for _, l := range d.VMDK.Links() {
			if l.EncryptionKeys != "" {
				if loc, err := keysafe.Parse(l.EncryptionKeys); err == nil {
					out = append(out, loc)
				}
			}
		}
	}
	return out
}

// OpenVM opens the VM at path (a .vmx file or its folder): the VMX, its key
// safe (with opts.Resolver), the settings, then (Depth Full) every disk
// chain with the key of every encrypted link, and every data file's
// header. A wrong or missing key fails here: keysafe.ErrWrongKey,
// *keysafe.KeyNotFoundError; damage is ErrCorrupt; a folder without a
// .vmx ErrNoVMX. The VM is a plain VM when it has no key safe (OpenVM does
// not refuse it: callers that need encryption check Encrypted and return
// ErrNotEncrypted).
func OpenVM(ctx context.Context, path string, opts *Options) (_ *VM, err error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	vmxPath, err := FindVMX(path)
	if err != nil {
		return nil, err
	}
	f, err := vmx.ReadFile(vmxPath)
	if err != nil {
		return nil, err
	}
	v := &VM{VMXPath: vmxPath, Dir: filepath.Dir(vmxPath), File: f}
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	for _, p := range f.Problems() {
		v.Warnings = append(v.Warnings, vmxPath+": "+p)
	}
	if v.KeySafe, err = f.KeySafe(); err != nil {
		return nil, fmt.Errorf("%s: %w", vmxPath, err)
	}
	switch {
	case v.KeySafe == nil:
		v.Settings = f
	case o.Resolver == nil:
		v.Locked = true
	default:
		if err := v.unlock(ctx, o.Resolver); err != nil {
			return nil, err
		}
	}
	ents, err := os.ReadDir(v.Dir)
	if err != nil {
		return nil, err
	}
	v.Files = inventory(v.Dir, ents)
	if v.Settings == nil || o.Depth == SettingsOnly {
		return v, nil
	}
	res := o.Resolver
	if res == nil {
		res = keys.NewResolver()
	}
	for _, d := range vmx.Disks(v.Settings) {
		if o.Depth == DataFilesOnly {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		dk := &Disk{Device: d.Device, FileName: d.FileName, Path: d.FileName}
		if !filepath.IsAbs(dk.Path) {
			dk.Path = filepath.Join(v.Dir, filepath.FromSlash(dk.Path))
		}
		dk.OpenedDisk, dk.Err = OpenDisk(ctx, dk.Path, res, o.VMDK)
		if dk.Err != nil {
			dk.Err = fmt.Errorf("disk %s (%s): %w", d.FileName, d.Device, dk.Err)
			if !o.KeepGoing || ctx.Err() != nil {
				return nil, dk.Err
			}
		} else {
			v.Warnings = append(v.Warnings, dk.VMDK.Warnings()...)
			for _, lk := range dk.Links {
				if lk.Modelled {
					v.note(NoteDiskModel)
				}
				if strings.HasPrefix(lk.Locker, "fqid") {
					v.note(NoteFQIDModel)
				}
			}
		}
		v.Disks = append(v.Disks, dk)
	}
	if err := v.openDataFiles(ents, &o); err != nil {
		return nil, err
	}
	if o.Depth != DataFilesOnly {
		v.Warnings = append(v.Warnings, v.unusedDisks(ents)...)
	}
	return v, nil
}

// unlock opens the key safe and decrypts the settings.
func (v *VM) unlock(ctx context.Context, res *keys.Resolver) error {
	key, opened, err := res.Open(ctx, v.KeySafe)
	if err != nil {
		return fmt.Errorf("%s: key safe: %w", v.VMXPath, err)
	}
	v.ConfigKey, v.Opened = key, opened
	if strings.HasPrefix(opened.Locker, "fqid") {
		v.note(NoteFQIDModel)
	}
	if v.Decrypted, err = vmx.Decrypt(v.File, key); err != nil {
		return fmt.Errorf("%s: %w", v.VMXPath, err)
	}
	v.Settings = v.Decrypted.Settings
	if v.DataFileKey, err = v.Settings.DataFileKey(); err != nil {
		return fmt.Errorf("%s: %w", v.VMXPath, err)
	}
	return nil
}

// unusedDisks warns about each .vmdk file of the VM folder that no disk of
// the VMX reads (a snapshot branch named only in the .vmsd, a detached
// disk): commands that copy the VM leave it behind, and say so.
func (v *VM) unusedDisks(ents []os.DirEntry) []string {
	used := map[string]bool{}
	for _, d := range v.Disks {
		if d.OpenedDisk == nil {
			used[filepath.Clean(d.Path)] = true
			continue
		}
		for _, l := range d.VMDK.Links() {
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
		if !strings.EqualFold(filepath.Ext(e.Name()), ".vmdk") || !isRegular(filepath.Join(v.Dir, e.Name()), e) {
			continue
		}
		if !used[filepath.Clean(filepath.Join(v.Dir, e.Name()))] {
			warns = append(warns, fmt.Sprintf("%s is not recovered, mounted or served: no disk of the VMX reads it (a snapshot branch named only in the .vmsd, or a detached disk); vmcrypt vmdk export decrypts it with the same keys", e.Name()))
		}
	}
	return warns
}

// isRegular reports whether the folder entry e (at path) is a regular file
// or a symbolic link to one (a datastore copy may link files from
// elsewhere). FIFOs and devices are not: opening them could block.
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

// DataFile is a data file of the VM folder (.nvram, .vswp, .vmsn, .vmss,
// .vmem: the container of docs/formats.md §9 when encrypted) or a small
// plain file copied as it is (.vmsd, .vmxf).
type DataFile struct {
	Name string // base name
	Path string
	Kind string // KindNVRAM, KindSwap, ...
	// Encrypted says the file is the encrypted container.
	Encrypted bool
	// Size is the plaintext size (the stored size for plain files).
	Size int64
	// StoredSize is the file's size.
	StoredSize int64
	// Header is the container header (encrypted files).
	Header *datafile.Header
	// MAC says how the pages are authenticated (datafile.MACModel,
	// MACUnknown, MACIgnored); "" for plain files.
	MAC string
	// Err is why the file cannot be read (only with KeepGoing).
	Err error

	key       []byte
	ignoreMAC bool
	strictMAC bool
}

// Kinds of VM files.
const (
	KindVMX      = "settings"
	KindDisk     = "disk"
	KindExtent   = "disk extent"
	KindNVRAM    = "NVRAM"
	KindSwap     = "swap"
	KindSnapshot = "memory snapshot" // .vmsn
	KindSuspend  = "suspend state"   // .vmss
	KindMemory   = "memory image"    // .vmem
	KindSnapList = "snapshot list"   // .vmsd
	KindTeam     = "team settings"   // .vmxf
)

// kindOf maps file extensions (lower case) to kinds.
var kindOf = map[string]string{
	".vmx": KindVMX, ".vmxf": KindTeam, ".vmsd": KindSnapList,
	".nvram": KindNVRAM, ".vswp": KindSwap, ".vmsn": KindSnapshot, ".vmss": KindSuspend,
	".vmem": KindMemory, ".vmdk": KindDisk,
}

// KindOf returns the kind of a VM file name ("" for other files).
func KindOf(name string) string { return kindOf[strings.ToLower(filepath.Ext(name))] }

// IsDataFileKind reports the kinds that use the container of §9.
func IsDataFileKind(kind string) bool {
	switch kind {
	case KindNVRAM, KindSwap, KindSnapshot, KindSuspend, KindMemory:
		return true
	}
	return false
}

// openDataFiles lists and probes the data files of the folder.
func (v *VM) openDataFiles(ents []os.DirEntry, o *Options) error {
	for _, e := range ents {
		kind := KindOf(e.Name())
		data := IsDataFileKind(kind)
		if !data && kind != KindSnapList && kind != KindTeam {
			continue
		}
		p := filepath.Join(v.Dir, e.Name())
		if !isRegular(p, e) {
			if !e.IsDir() {
				v.Warnings = append(v.Warnings, fmt.Sprintf("%s is not recovered, mounted or served: not a regular file (a FIFO, device or broken link)", e.Name()))
			}
			continue
		}
		if o.VMDK == nil || !o.VMDK.AllowUnsafePaths {
			if err := vmdk.StaysInside(v.Dir, p); err != nil {
				v.Warnings = append(v.Warnings, fmt.Sprintf("%s is not recovered, mounted or served: %v", e.Name(), err))
				continue
			}
		}
		df := &DataFile{Name: e.Name(), Path: p, Kind: kind, ignoreMAC: o.IgnoreMAC, strictMAC: o.StrictMAC}
		if err := df.probe(v.DataFileKey); err != nil {
			if !o.KeepGoing {
				return err
			}
			df.Err = err
		}
		if df.Encrypted && df.Err == nil {
			switch df.MAC {
			case datafile.MACIgnored:
				v.note(NoteMACSkip)
			case datafile.MACModel:
				v.note(NoteMACModel)
			case datafile.MACUnknown:
				v.note(NoteMACUnknown)
				v.Warnings = append(v.Warnings, fmt.Sprintf("%s: its page MACs match no known scheme (VMware's is not public): decrypted without authentication; the header, page count, padding and the plaintext's magic were checked", df.Name))
			}
		}
		v.DataFiles = append(v.DataFiles, df)
	}
	return nil
}

// probe reads the file's header: encrypted or not, and the plaintext size.
func (df *DataFile) probe(key *keysafe.Key) error {
	f, err := os.Open(df.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	df.StoredSize, df.Size = st.Size(), st.Size()
	if !IsDataFileKind(df.Kind) {
		return nil
	}
	var magic [4]byte
	if n, _ := f.ReadAt(magic[:], 0); n < 4 || !datafile.IsDataFile(magic[:]) {
		return nil
	}
	df.Encrypted = true
	if key == nil {
		return fmt.Errorf("%s is an encrypted data file but the VM's settings hold no dataFileKey: %w", df.Path, keysafe.ErrCorrupt)
	}
	df.key = key.Bytes
	r, err := datafile.NewReader(f, st.Size(), key.Bytes, df.options())
	if err != nil {
		return err
	}
	h := r.Header()
	df.Header, df.Size, df.MAC = &h, r.Size(), r.MACStatus()
	return nil
}

// options are the reader options of the file: the MAC rule, and the magic
// its plaintext must start with.
func (df *DataFile) options() *datafile.Options {
	return &datafile.Options{Name: df.Path, IgnoreMAC: df.ignoreMAC, StrictMAC: df.strictMAC, CheckPlain: plainCheck(df.Kind)}
}

// plainCheck returns the check of the first plaintext page of a kind (the
// check that remains when a data file's MAC is of an unknown scheme): the
// checkpoint magic of .vmsn/.vmss, a block header (docs/formats.md §13)
// for .vmem. Both come from package memory, the one place that knows them.
func plainCheck(kind string) func([]byte) error {
	switch kind {
	case KindSnapshot, KindSuspend:
		return func(b []byte) error {
			if !memory.IsCheckpointMagic(b) {
				return fmt.Errorf("the decrypted checkpoint state does not start with a known magic (% x)", b[:min(len(b), 4)])
			}
			return nil
		}
	case KindMemory:
		return func(b []byte) error {
			if !memory.LooksCompressed(b) {
				return fmt.Errorf("the decrypted memory image does not start with a block header")
			}
			return nil
		}
	}
	return nil
}

// Reader is a data file opened for reading: its plaintext as an
// io.ReaderAt safe for concurrent use.
type Reader interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// Open opens the data file's plaintext (decrypted when encrypted).
func (df *DataFile) Open() (Reader, error) {
	if df.Err != nil {
		return nil, df.Err
	}
	f, err := os.Open(df.Path)
	if err != nil {
		return nil, err
	}
	if !df.Encrypted {
		return &plainFile{f, df.StoredSize}, nil
	}
	r, err := datafile.NewReader(f, df.StoredSize, df.key, df.options())
	if err != nil {
		f.Close()
		return nil, err
	}
	return &encFile{r, f}, nil
}

type plainFile struct {
	*os.File
	size int64
}

func (p *plainFile) Size() int64 { return p.size }

type encFile struct {
	*datafile.Reader
	f *os.File
}

func (e *encFile) Close() error { return e.f.Close() }

// File is one file of the VM folder as inspect lists it.
type File struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Size      int64  `json:"size"`
	Encrypted *bool  `json:"encrypted"` // null: cannot tell (e.g. a flat extent)
	Note      string `json:"note,omitempty"`
}

// inventory lists the VM files of a folder and whether each is encrypted,
// reading at most a header of each (a FIFO or device is never opened).
func inventory(dir string, ents []os.DirEntry) []File {
	out := []File{}
	for _, e := range ents {
		kind := KindOf(e.Name())
		if kind == "" || e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p) // follows symlinks: report the file's size
		if err != nil {
			out = append(out, File{Name: e.Name(), Kind: kind, Note: err.Error()})
			continue
		}
		if st.IsDir() {
			continue
		}
		fi := File{Name: e.Name(), Kind: kind, Size: st.Size()}
		if !st.Mode().IsRegular() {
			fi.Note = "not a regular file (" + st.Mode().Type().String() + "): not read"
			out = append(out, fi)
			continue
		}
		switch {
		case kind == KindVMX:
			if vf, err := vmx.ReadFile(p); err != nil {
				fi.Note = err.Error()
			} else {
				_, _, enc, err := vf.Encryption()
				fi.Encrypted = &enc
				if err != nil {
					fi.Note = err.Error()
				}
			}
		case IsDataFileKind(kind):
			enc, err := hasDataFileMagic(p)
			if err != nil {
				fi.Note = err.Error()
			} else {
				fi.Encrypted = &enc
			}
		case kind == KindDisk:
			fi.Kind, fi.Encrypted, fi.Note = probeVMDK(p)
		}
		out = append(out, fi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func hasDataFileMagic(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [4]byte
	n, err := f.ReadAt(b[:], 0)
	if n < 4 {
		if err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		return false, nil
	}
	return datafile.IsDataFile(b[:]), nil
}

// probeVMDK says what a .vmdk file is with vmdk.Probe.
func probeVMDK(path string) (kind string, encrypted *bool, note string) {
	f, err := os.Open(path)
	if err != nil {
		return KindDisk, nil, err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return KindDisk, nil, err.Error()
	}
	p, err := vmdk.Probe(f, st.Size(), path)
	if err != nil {
		return KindDisk, nil, err.Error()
	}
	if !p.Disk() {
		note := "extent data (encryption is recorded in the disk's descriptor)"
		if p.Kind == vmdk.ProbeSparseExtent {
			note = "sparse extent without a descriptor (see the disk's descriptor file)"
		}
		return KindExtent, nil, note
	}
	enc := p.Encrypted()
	return KindDisk, &enc, ""
}

// HasMemory reports whether the folder holds memory snapshots or images.
func (v *VM) HasMemory() bool {
	return slices.ContainsFunc(v.Files, func(f File) bool { return f.Kind == KindSnapshot || f.Kind == KindMemory })
}
