package view

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vmcrypt/vmcrypt/recover/memory"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
)

// Kinds of files in a view.
const (
	KindDisk     = "disk"           // a disk as the VM shows it now (the chain flattened)
	KindSnapshot = "snapshot state" // a disk as a snapshot left it
	KindSettings = "settings"       // the decrypted .vmx
	KindDataFile = "data file"      // a data file (decrypted when encrypted)
	KindMemory   = "memory"         // a .vmem as flat memory (decompressed on read)
	KindReport   = "report"         // report.json
)

// ReportName is the name of the report file.
const ReportName = "report.json"

// RawExt is the extension of disk images.
const RawExt = ".raw"

// maxBaseName caps the bytes of a name's stem, so that "@N.raw" and a
// device suffix still fit in one 255-byte path component.
const maxBaseName = 200

// ErrNoKeys means the VM was opened without its keys (or without opening
// its disks): there is nothing decrypted to show.
var ErrNoKeys = errors.New("view: the VM was opened without its keys")

// ErrNameClash means two files of the view would share a name.
var ErrNameClash = errors.New("view: two files would share a name")

// File is one read-only file of a view.
type File struct {
	// Name is the file's name in the mount and, for disks and snapshot
	// states, the NBD export name. A plain name: no folder.
	Name string
	Kind string
	// Size is the exact size in bytes.
	Size int64
	// Data holds the bytes, safe for concurrent use; a read inside Size
	// returns all the bytes asked for or an error naming the source and
	// offset.
	Data io.ReaderAt
	// Runs is the allocation map of a disk or snapshot state: sorted,
	// non-overlapping Data and Zero runs; bytes outside every run are
	// holes that read as zeros. Nil for other files: all of it is data.
	Runs []vmdk.Run
	// Source is the VM file the view reads first: a disk's top link, a
	// snapshot state's link, the data file, the .vmx.
	Source string
	// Device is the disk's device (scsi0:0) for disks and snapshot states.
	Device string
	// Links are the chain links read, top first, with who opened each key
	// (disks and snapshot states).
	Links []vm.LinkKey
	// Snapshot names the snapshot of a snapshot state.
	Snapshot *Snapshot
	// Encrypted says the bytes are decrypted on read (any link of a disk,
	// an encrypted data file, an encrypted VMX).
	Encrypted bool
	// ModTime is the source file's modification time (zero for the
	// report).
	ModTime time.Time
	// MAC says how an encrypted data file's pages are authenticated
	// (vm.DataFile.MAC: datafile.MACModel, MACUnknown, MACIgnored).
	MAC string
}

// Snapshot identifies the snapshot a snapshot state belongs to.
type Snapshot struct {
	// Level is the chain link (1 = the top link's parent).
	Level int `json:"level"`
	// N is the number in the file name (DISK@N.raw).
	N int `json:"n"`
	// UID and DisplayName come from the .vmsd (UID 0: not named there).
	UID         int    `json:"uid,omitempty"`
	DisplayName string `json:"displayName,omitempty"`
}

// DataBytes is the number of bytes a full read decrypts or reads: the Data
// runs of a disk, the whole size of other files.
func (f *File) DataBytes() int64 {
	if f.Runs == nil {
		return f.Size
	}
	var n int64
	for _, r := range f.Runs {
		if r.State == vmdk.Data {
			n += r.Len
		}
	}
	return n
}

// IsDisk reports whether the file is a disk image (a disk or a snapshot
// state): what NBD exports.
func (f *File) IsDisk() bool { return f.Kind == KindDisk || f.Kind == KindSnapshot }

// Options tune New.
type Options struct {
	// Tool is written into report.json ("vmcrypt mount").
	Tool string
	// Now is the time written into report.json (default time.Now).
	Now func() time.Time
}

// View is the read-only view of an opened VM. It does not own the VM:
// close the view (its data-file readers), then the VM.
type View struct {
	VM    *vm.VM
	Files []File
	// Report is report.json's content.
	Report Report
	// Warnings are what the view left out (a data file that did not open
	// when the VM was opened with KeepGoing), one sentence each; they are
	// in the report too.
	Warnings []string

	closers []io.Closer
}

// New builds the view of v, opened with its keys (vm.OpenVM with a
// Resolver, Depth Full). A plain VM is shown as it is. A disk that did not
// open (its Err, with KeepGoing) fails New: a wrong or missing disk key is
// never served around. A data file that did not open is left out with a
// warning. New opens every data file (so a file that cannot be opened
// fails here, not on the first read) and decrypts nothing else.
func New(v *vm.VM, opts *Options) (_ *View, err error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if v.Locked || v.Settings == nil {
		return nil, fmt.Errorf("%s: %w", v.VMXPath, ErrNoKeys)
	}
	w := &View{VM: v}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	names := newClaims()
	snaps := readVMSD(v)
	for _, d := range v.Disks {
		if d.Err != nil || d.OpenedDisk == nil {
			return nil, d.Err
		}
		files, err := diskFiles(d, snaps, names)
		if err != nil {
			return nil, err
		}
		w.Files = append(w.Files, files...)
	}
	vmxFile, err := settingsFile(v, names)
	if err != nil {
		return nil, err
	}
	w.Files = append(w.Files, vmxFile)
	mem, memClosers, err := memoryFiles(v, names)
	w.closers = append(w.closers, memClosers...)
	if err != nil {
		return nil, err
	}
	for _, df := range v.DataFiles {
		if df.Err != nil {
			w.Warnings = append(w.Warnings, fmt.Sprintf("%s is not shown: %v", df.Name, df.Err))
			continue
		}
		if i := slices.IndexFunc(mem, func(f File) bool { return strings.EqualFold(f.Name, sanitize(df.Name)) }); i >= 0 {
			w.Files = append(w.Files, mem[i]) // the flat memory replaces the container payload
			continue
		}
		f, c, err := dataFile(df, names)
		if err != nil {
			return nil, err
		}
		w.closers = append(w.closers, c)
		w.Files = append(w.Files, f)
	}
	if err := names.claim(ReportName, "the report"); err != nil {
		return nil, err
	}
	w.Report = newReport(v, w.Files, w.Warnings, o)
	js, err := json.MarshalIndent(w.Report, "", "  ")
	if err != nil {
		return nil, err
	}
	js = append(js, '\n')
	w.Files = append(w.Files, File{Name: ReportName, Kind: KindReport, Size: int64(len(js)), Data: bytes.NewReader(js), Source: v.VMXPath})
	return w, nil
}

// Close closes the data files the view opened. It does not close the VM.
func (w *View) Close() error {
	var first error
	for _, c := range w.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	w.closers = nil
	return first
}

// Disks returns the disk images of the view (disks and snapshot states),
// in order: what NBD exports.
func (w *View) Disks() []File {
	var out []File
	for _, f := range w.Files {
		if f.IsDisk() {
			out = append(out, f)
		}
	}
	return out
}

// File returns the file named name (nil if none).
func (w *View) File(name string) *File {
	for i := range w.Files {
		if w.Files[i].Name == name {
			return &w.Files[i]
		}
	}
	return nil
}

// diskFiles makes DISK.raw and DISK@N.raw of one disk.
func diskFiles(d *vm.Disk, snaps []vmsdSnapshot, names *claims) ([]File, error) {
	links := d.VMDK.Links()
	stem := sanitize(stemOf(links[len(links)-1].Path))
	name := stem + RawExt
	if names.taken(name) {
		// Two disks share a base name (different folders): the device
		// tells them apart.
		stem = stem + "_" + sanitize(strings.ReplaceAll(d.Device, ":", "-"))
		name = stem + RawExt
	}
	if err := names.claim(name, d.Path); err != nil {
		return nil, err
	}
	out := []File{{
		Name: name, Kind: KindDisk, Size: d.Plain.Size(), Data: d.Plain, Runs: d.Plain.Runs(),
		Source: links[0].Path, Device: d.Device, Links: d.Links, Encrypted: d.Encrypted(),
		ModTime: modTime(links[0].Path),
	}}
	nums := snapshotNumbers(d, links, snaps)
	for level := 1; level < len(links); level++ {
		pd, _, err := d.LinkView(level, 0)
		if err != nil {
			return nil, err
		}
		s := nums[level]
		sname := stem + "@" + strconv.Itoa(s.N) + RawExt
		if err := names.claim(sname, links[level].Path); err != nil {
			return nil, err
		}
		enc := false
		for _, lk := range d.Links[level:] {
			enc = enc || lk.Encrypted
		}
		out = append(out, File{
			Name: sname, Kind: KindSnapshot, Size: pd.Size(), Data: pd, Runs: pd.Runs(),
			Source: links[level].Path, Device: d.Device, Links: d.Links[level:], Snapshot: s,
			Encrypted: enc, ModTime: modTime(links[level].Path),
		})
	}
	return out, nil
}

// snapshotNumbers names the parent links of a chain: by their .vmsd uid
// when the .vmsd names every one of them (distinct uids), else by their
// position counted from the base (1 = the base).
func snapshotNumbers(d *vm.Disk, links []*vmdk.Link, snaps []vmsdSnapshot) map[int]*Snapshot {
	out := map[int]*Snapshot{}
	byUID := true
	seen := map[int]bool{}
	for level := 1; level < len(links); level++ {
		s := &Snapshot{Level: level, N: len(links) - level}
		if sn, ok := findSnapshot(snaps, d.Device, links[level].Path); ok {
			s.UID, s.DisplayName = sn.uid, sn.displayName
			if seen[sn.uid] {
				byUID = false
			}
			seen[sn.uid] = true
		} else {
			byUID = false
		}
		out[level] = s
	}
	if byUID {
		for _, s := range out {
			s.N = s.UID
		}
	}
	return out
}

// settingsFile is NAME.vmx: decrypted, or the VMX as stored for a plain VM.
func settingsFile(v *vm.VM, names *claims) (File, error) {
	name := sanitize(filepath.Base(v.VMXPath))
	if err := names.claim(name, v.VMXPath); err != nil {
		return File{}, err
	}
	var b []byte
	if v.Decrypted != nil {
		b = v.Decrypted.Bytes()
	} else {
		b = v.File.Bytes()
	}
	return File{Name: name, Kind: KindSettings, Size: int64(len(b)), Data: bytes.NewReader(b), Source: v.VMXPath,
		Encrypted: v.Decrypted != nil, ModTime: modTime(v.VMXPath)}, nil
}

// memoryFiles shows each compressed .vmem as the flat memory file a plain
// VM holds (NAME.vmem, decoded on read by memory.RandomFlat: nothing is
// written anywhere), paired with its state file (NAME.vmsn/.vmss, shown
// decrypted as a data file), as `vmcrypt memory` writes them: a
// Volatility-ready pair. A .vmem that is already flat is left to the data
// files. A file it returns replaces the data file of the same name.
func memoryFiles(v *vm.VM, names *claims) ([]File, []io.Closer, error) {
	var files []File
	var closers []io.Closer
	for _, st := range v.MemoryStates() {
		df := st.Memory
		if df == nil || df.Err != nil {
			continue
		}
		r, err := df.Open()
		if err != nil {
			return files, closers, err
		}
		if !memory.IsCompressed(r, r.Size()) {
			r.Close()
			continue
		}
		closers = append(closers, r)
		label := df.Path
		if df.Encrypted {
			label += " (decrypted)"
		}
		flat, err := memory.NewRandomFlat(r, r.Size(), label)
		if err != nil {
			return files, closers, err
		}
		name := sanitize(df.Name)
		if err := names.claim(name, df.Path); err != nil {
			return files, closers, err
		}
		files = append(files, File{Name: name, Kind: KindMemory, Size: flat.Size(), Data: flat, Source: df.Path,
			Encrypted: df.Encrypted, ModTime: modTime(df.Path), MAC: df.MAC})
	}
	return files, closers, nil
}

// dataFile opens one data file, decrypted.
func dataFile(df *vm.DataFile, names *claims) (File, io.Closer, error) {
	name := sanitize(df.Name)
	if err := names.claim(name, df.Path); err != nil {
		return File{}, nil, err
	}
	r, err := df.Open()
	if err != nil {
		return File{}, nil, err
	}
	return File{Name: name, Kind: KindDataFile, Size: r.Size(), Data: r, Source: df.Path,
		Encrypted: df.Encrypted, ModTime: modTime(df.Path), MAC: df.MAC}, r, nil
}

func stemOf(path string) string {
	b := filepath.Base(path)
	return strings.TrimSuffix(b, filepath.Ext(b))
}

func modTime(path string) time.Time {
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

// sanitize makes a VM file name usable as a mount file name and an NBD
// export name: valid UTF-8, no control characters or slashes, at most
// maxBaseName bytes (cut at a character boundary).
func sanitize(s string) string {
	s = strings.ToValidUTF8(s, "_")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == '/' || r == '\\' {
			return '_'
		}
		return r
	}, s)
	if len(s) > maxBaseName {
		cut := maxBaseName
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	if s == "" || s == "." || s == ".." {
		s = "_" + s
	}
	return s
}

// claims hands out names, refusing a name twice (ignoring case: the
// files may be copied to a case-insensitive file system).
type claims struct{ by map[string]string }

func newClaims() *claims { return &claims{by: map[string]string{}} }

func (c *claims) taken(name string) bool {
	_, ok := c.by[strings.ToLower(name)]
	return ok
}

func (c *claims) claim(name, what string) error {
	if prev, ok := c.by[strings.ToLower(name)]; ok {
		return fmt.Errorf("%w: %s and %s would both be shown as %s", ErrNameClash, prev, what, name)
	}
	c.by[strings.ToLower(name)] = what
	return nil
}

// vmsdSnapshot is one disk of one snapshot in the .vmsd.
type vmsdSnapshot struct {
	uid         int
	displayName string
	file        string // base name of the disk file
	node        string // device, e.g. scsi0:0
}

// maxVMSDSnapshots caps the snapshots read from a .vmsd (VMware allows 496
// per VM) and the disks per snapshot.
const (
	maxVMSDSnapshots = 1024
	maxVMSDDisks     = 256
)

// readVMSD reads the VM's .vmsd (a plain file of the folder; the VMX's
// snapshot.fileName names it when it is not NAME.vmsd). A missing or
// unreadable .vmsd gives no snapshots: states are then numbered by
// position.
func readVMSD(v *vm.VM) []vmsdSnapshot {
	var path string
	if name, ok := v.Settings.Get("snapshot.fileName"); ok && name != "" && filepath.Base(name) == name {
		path = filepath.Join(v.Dir, name)
	}
	for _, df := range v.DataFiles {
		if path == "" && df.Kind == vm.KindSnapList {
			path = df.Path
		}
	}
	if path == "" {
		return nil
	}
	f, err := vmx.ReadFile(path)
	if err != nil {
		return nil
	}
	return parseVMSD(f)
}

// parseVMSD lists the disks of every snapshot of a .vmsd dictionary
// (snapshotN.uid, snapshotN.displayName, snapshotN.diskM.fileName,
// snapshotN.diskM.node), in one pass over its lines.
func parseVMSD(f *vmx.File) []vmsdSnapshot {
	type snap struct {
		uid   int
		name  string
		disks map[int]*vmsdSnapshot
	}
	snaps := map[int]*snap{}
	get := func(i int) *snap {
		s := snaps[i]
		if s == nil {
			s = &snap{disks: map[int]*vmsdSnapshot{}}
			snaps[i] = s
		}
		return s
	}
	for _, l := range f.Lines {
		if l.Kind != vmx.Setting {
			continue
		}
		key := strings.ToLower(l.Key)
		rest, ok := strings.CutPrefix(key, "snapshot")
		if !ok {
			continue
		}
		num, field, ok := strings.Cut(rest, ".")
		i, err := strconv.Atoi(num)
		if !ok || err != nil || i < 0 || i >= maxVMSDSnapshots {
			continue
		}
		switch {
		case field == "uid":
			if uid, err := strconv.Atoi(strings.TrimSpace(l.Value)); err == nil && uid > 0 {
				get(i).uid = uid
			}
		case field == "displayname":
			get(i).name = l.Value
		case strings.HasPrefix(field, "disk"):
			dnum, dfield, ok := strings.Cut(strings.TrimPrefix(field, "disk"), ".")
			j, err := strconv.Atoi(dnum)
			if !ok || err != nil || j < 0 || j >= maxVMSDDisks || (dfield != "filename" && dfield != "node") {
				continue
			}
			s := get(i)
			d := s.disks[j]
			if d == nil {
				d = &vmsdSnapshot{}
				s.disks[j] = d
			}
			if dfield == "filename" {
				d.file = filepath.Base(filepath.FromSlash(l.Value))
			} else {
				d.node = l.Value
			}
		}
	}
	var out []vmsdSnapshot
	for _, i := range slices.Sorted(maps.Keys(snaps)) {
		s := snaps[i]
		if s.uid == 0 {
			continue
		}
		for _, j := range slices.Sorted(maps.Keys(s.disks)) {
			if d := s.disks[j]; d.file != "" {
				out = append(out, vmsdSnapshot{uid: s.uid, displayName: s.name, file: d.file, node: d.node})
			}
		}
	}
	return out
}

// findSnapshot finds the snapshot whose disk on device is the file at
// path.
func findSnapshot(snaps []vmsdSnapshot, device, path string) (vmsdSnapshot, bool) {
	base := filepath.Base(path)
	for _, s := range snaps {
		if strings.EqualFold(s.file, base) && (s.node == "" || strings.EqualFold(s.node, device)) {
			return s, true
		}
	}
	return vmsdSnapshot{}, false
}
