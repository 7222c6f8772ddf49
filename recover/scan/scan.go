// Package scan surveys a datastore copy, read-only and bounded: it finds
// every VM (each .vmx), and says of each of its files whether it is
// encrypted, plain, or exposed (plain guest data: a plain disk with a
// partition table or file system, plain swap, a plain memory or snapshot
// state file, a plain .nvram), which key provider and key ids would open
// it, and a summary.
//
// # What is read
//
// Never whole files: a .vmx (at most vmx.MaxFileSize), VMDK descriptors and
// sparse headers and grain directories (vmdk.Open), for plain disks the
// first 68 KiB of the virtual disk and of each partition it lists (Detect),
// for encrypted disks the same through the raw (keyless) view to catch a
// disk whose descriptor says encrypted but whose data is not, and the
// 4 KiB header of data files. Everything is opened read-only.
//
// # Grouping
//
// The files of a folder belong to the VM whose .vmx is in that folder
// (with several, the one whose name the file starts with). Files in a
// folder without a .vmx are reported under a VM entry with an empty VMX.
package scan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/recover/esxi"
	"github.com/vmcrypt/vmcrypt/recover/memory"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// errStop ends a walk early.
var errStop = errors.New("stop")

// MaxFiles caps the files a scan looks at.
const MaxFiles = 1_000_000

// Status of a file or VM.
type Status string

// Statuses.
const (
	Encrypted Status = "encrypted" // needs a key to read
	Plain     Status = "plain"     // not encrypted, nothing found that exposes guest data
	Exposed   Status = "exposed"   // guest data readable without a key
	Error     Status = "unreadable"
	// Unknown: not encrypted by VMware, but nothing in it is recognised
	// (random-looking bytes where a plain file would have structure).
	Unknown Status = "unknown"
)

// File kinds.
const (
	KindVMX      = "vmx"
	KindDisk     = "disk"     // a descriptor or monolithic VMDK: one chain link
	KindExtent   = "extent"   // an extent file of a disk (-flat, -s001, -delta)
	KindNVRAM    = "nvram"    // firmware variables, vTPM state
	KindSwap     = "swap"     // .vswp
	KindMemory   = "memory"   // .vmem
	KindSnapshot = "snapshot" // .vmsn, .vmss: snapshot or suspend state
	KindOther    = "other"    // .vmsd, .vmxf
	// KindImage is a file of another name that holds a disk image by its
	// content (a partition table or file system): a recovered .img/.raw.
	KindImage = "disk image"
	// KindStaging is a leftover temporary of an interrupted vmcrypt run
	// (it may hold decrypted data).
	KindStaging = "vmcrypt temporary"
	// KindESXi is an ESXi host file (configuration, key store, core dump).
	KindESXi = "esxi"
)

// minImageSize is the smallest file probed as a disk image by content.
const minImageSize = 64 << 10

// kinds maps file extensions to kinds; other files are not reported.
var kinds = map[string]string{
	".vmx": KindVMX, ".vmdk": KindDisk, ".nvram": KindNVRAM, ".vswp": KindSwap,
	".vmem": KindMemory, ".vmsn": KindSnapshot, ".vmss": KindSnapshot,
	".vmsd": KindOther, ".vmxf": KindOther,
}

// KeyRef names a key that opens something, never the key itself.
type KeyRef struct {
	Locker   string `json:"locker"`          // "phrase" or "fqid"
	Provider string `json:"provider"`        // "passphrase", or the key provider's name
	KeyID    string `json:"keyId,omitempty"` // fqid key id
	KDKID    string `json:"kdkId,omitempty"` // NKP: the KDK the key id names
}

func (k KeyRef) String() string {
	switch {
	case k.Locker == string(keysafe.TypePhrase):
		return "passphrase"
	case k.KDKID != "":
		return fmt.Sprintf("NKP %s, KDK %s", k.Provider, k.KDKID)
	case k.KeyID != "":
		return fmt.Sprintf("KMS %s, key %s", k.Provider, k.KeyID)
	}
	return k.Locker
}

// File is one file of a VM.
type File struct {
	Path       string      `json:"path"` // relative to the scanned root
	Kind       string      `json:"kind"`
	Status     Status      `json:"status"`
	Why        string      `json:"why"` // one sentence
	Size       int64       `json:"size"`
	Signatures []Signature `json:"signatures,omitempty"`
	Keys       []KeyRef    `json:"keys,omitempty"`
	Parent     string      `json:"parent,omitempty"` // a delta disk's parent hint
	Extents    []string    `json:"extents,omitempty"`
	Error      string      `json:"error,omitempty"`
}

// VM is one virtual machine: a .vmx and the files beside it.
type VM struct {
	VMX         string   `json:"vmx"` // relative; "" for files in a folder without a .vmx
	Dir         string   `json:"dir"`
	DisplayName string   `json:"displayName,omitempty"`
	Status      Status   `json:"status"`
	Keys        []KeyRef `json:"keys,omitempty"`    // every key the VM's files need
	Exposed     []string `json:"exposed,omitempty"` // "path: why" of each exposed file
	Files       []File   `json:"files"`
}

// Summary counts VMs and files by status.
type Summary struct {
	VMs        int            `json:"vms"`
	Encrypted  int            `json:"encrypted"`
	Exposed    int            `json:"exposed"`
	Unreadable int            `json:"unreadable"` // VMs with a file that could not be read
	Plain      int            `json:"plain"`
	Files      map[Status]int `json:"files"`
	Keys       []KeyUse       `json:"keys,omitempty"`
	Truncated  bool           `json:"truncated,omitempty"` // MaxFiles reached
	// UnreadableFolders counts the folders that could not be read.
	UnreadableFolders int `json:"unreadableFolders,omitempty"`
}

// KeyUse is a key and how many VMs need it.
type KeyUse struct {
	Key KeyRef `json:"key"`
	VMs int    `json:"vms"`
}

// Report is the result of a scan.
type Report struct {
	Root    string  `json:"root"`
	VMs     []VM    `json:"vms"`
	Summary Summary `json:"summary"`
	// KeyMaterial lists files of the tree that hold keys (NKP backups,
	// KEK files): stored beside the VMs, they undo the encryption.
	KeyMaterial []KeyMaterial `json:"keyMaterial,omitempty"`
	// Unreadable lists the folders that could not be read ("path: why"):
	// what they hold was not scanned.
	Unreadable []string `json:"unreadableFolders,omitempty"`
}

// Scan walks root (a datastore copy, a VM folder, or one file) without
// following symbolic links and reports every VM found. It fails only when
// root cannot be read; problems with single files are reported in them.
func Scan(root string) (*Report, error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a folder or a regular file", root)
	}
	// The root the user names may be a link (ESXi's /vmfs/volumes/NAME
	// is one): walk what it points to. Links inside are not followed.
	walkRoot := root
	if real, err := filepath.EvalSymlinks(root); err == nil {
		walkRoot = real
	}
	rep := &Report{Root: root, Summary: Summary{Files: map[Status]int{}}}
	byDir := map[string][]string{}
	n := 0
	if !st.IsDir() {
		byDir[filepath.Dir(root)] = []string{filepath.Base(root)}
		root = filepath.Dir(root)
	} else {
		root = walkRoot
		err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				// An unreadable folder: say so, keep scanning.
				rep.Unreadable = append(rep.Unreadable, relTo(root, p)+": "+err.Error())
				return nil
			}
			if outfile.IsTemp(d.Name()) || strings.HasPrefix(d.Name(), ".vmcrypt-recover-") {
				// A leftover of an interrupted run: decrypted data, maybe.
				if n++; n > MaxFiles {
					rep.Summary.Truncated = true
					return filepath.SkipAll
				}
				byDir[filepath.Dir(p)] = append(byDir[filepath.Dir(p)], d.Name())
				if d.IsDir() {
					return fs.SkipDir
				}
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			if isSecretCandidate(p) {
				if n++; n > MaxFiles {
					rep.Summary.Truncated = true
					return filepath.SkipAll
				}
				if km, ok := scanSecret(p, relTo(root, p)); ok {
					rep.KeyMaterial = append(rep.KeyMaterial, km)
				}
				return nil
			}
			if _, ok := kinds[strings.ToLower(filepath.Ext(p))]; !ok {
				// Another name: an ESXi host file by its name, a disk
				// image only by its content.
				if !isESXiCandidate(d.Name()) && !maybeImage(p, d) {
					return nil
				}
			}
			if n++; n > MaxFiles {
				rep.Summary.Truncated = true
				return filepath.SkipAll
			}
			byDir[filepath.Dir(p)] = append(byDir[filepath.Dir(p)], filepath.Base(p))
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	dirs := make([]string, 0, len(byDir))
	for d := range byDir {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		names := byDir[d]
		sort.Strings(names)
		for _, vm := range scanDir(root, d, names, !st.IsDir()) {
			if vm.VMX == "" && len(vm.Files) == 0 {
				continue // only files that turned out to be nothing
			}
			rep.VMs = append(rep.VMs, vm)
		}
	}
	rep.Summary.UnreadableFolders = len(rep.Unreadable)
	rep.summarise()
	return rep, nil
}

// maybeImage says whether a file of another name is worth probing as a
// disk image: large enough, a whole number of sectors.
func maybeImage(path string, d fs.DirEntry) bool {
	fi, err := d.Info()
	return err == nil && fi.Size() >= minImageSize && fi.Size()%512 == 0
}

func relTo(root, p string) string {
	r, err := filepath.Rel(root, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(r)
}

// scanDir reports the VMs of one folder.
func scanDir(root, dir string, names []string, single bool) []VM {
	rel := func(n string) string {
		r, err := filepath.Rel(root, filepath.Join(dir, n))
		if err != nil {
			return filepath.Join(dir, n)
		}
		return filepath.ToSlash(r)
	}
	var vms []VM
	for _, n := range names {
		if strings.EqualFold(filepath.Ext(n), ".vmx") {
			vms = append(vms, VM{VMX: rel(n), Dir: rel("")})
		}
	}
	if len(vms) == 0 {
		vms = append(vms, VM{Dir: rel("")})
	}
	// Disks first, so their extent files are known.
	extents := map[string]File{} // extent file name -> its disk
	var files []File
	for _, n := range names {
		if strings.EqualFold(filepath.Ext(n), ".vmdk") {
			f, ok := scanDisk(dir, n, rel(n))
			if ok {
				for _, e := range f.Extents {
					extents[e] = f
				}
				files = append(files, f)
			}
		}
	}
	for _, n := range names {
		ext := strings.ToLower(filepath.Ext(n))
		switch {
		case outfile.IsTemp(n) || strings.HasPrefix(n, ".vmcrypt-recover-"):
			files = append(files, File{Path: rel(n), Kind: KindStaging, Status: Exposed,
				Why: "left by an interrupted vmcrypt run: it may hold decrypted data; delete it (vmcrypt removes it on its next run into this folder)"})
		case kinds[ext] == "" && isESXiCandidate(n):
			files = append(files, scanESXi(filepath.Join(dir, n), rel(n)))
		case kinds[ext] == "":
			if f, ok := scanImage(filepath.Join(dir, n), rel(n)); ok {
				files = append(files, f)
			} else if single {
				// The one file the user named: say what it is not.
				f := File{Path: rel(n), Kind: "other", Status: Unknown, Why: "not a VM file, and no partition table or file system at its start"}
				if fi, err := os.Stat(filepath.Join(dir, n)); err == nil {
					f.Size = fi.Size()
				}
				files = append(files, f)
			}
		case ext == ".vmdk":
			if isDiskFile(files, rel(n)) {
				continue
			}
			disk, owned := extents[n]
			files = append(files, scanExtent(dir, n, rel(n), owned, disk))
		case ext == ".vmx":
			f, name := scanVMX(filepath.Join(dir, n), rel(n))
			for i := range vms {
				if vms[i].VMX == f.Path {
					vms[i].DisplayName = name
				}
			}
			files = append(files, f)
		default:
			files = append(files, scanDataFile(filepath.Join(dir, n), rel(n), kinds[ext]))
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	for _, f := range files {
		i := owner(vms, f.Path)
		vms[i].Files = append(vms[i].Files, f)
	}
	for i := range vms {
		vms[i].finish()
	}
	return vms
}

func isDiskFile(files []File, path string) bool {
	for _, f := range files {
		if f.Path == path {
			return true
		}
	}
	return false
}

// owner picks the VM a file belongs to: its own .vmx, the VM whose base
// name the file starts with, else the first.
func owner(vms []VM, path string) int {
	best, bestLen := 0, -1
	base := filepath.Base(path)
	for i, vm := range vms {
		if vm.VMX == path {
			return i
		}
		stem := strings.TrimSuffix(filepath.Base(vm.VMX), filepath.Ext(vm.VMX))
		if vm.VMX != "" && strings.HasPrefix(base, stem) && len(stem) > bestLen {
			best, bestLen = i, len(stem)
		}
	}
	return best
}

// finish sets the VM's status, keys and exposed list.
func (vm *VM) finish() {
	seen := map[KeyRef]bool{}
	allEnc, vmxEnc, unreadable := true, false, false
	for _, f := range vm.Files {
		for _, k := range f.Keys {
			if !seen[k] {
				seen[k] = true
				vm.Keys = append(vm.Keys, k)
			}
		}
		switch f.Status {
		case Exposed:
			if f.Kind != KindExtent || !strings.HasPrefix(f.Why, "extent of ") {
				vm.Exposed = append(vm.Exposed, f.Path+": "+f.Why)
			}
		case Encrypted:
			if f.Kind == KindVMX {
				vmxEnc = true
			}
		case Error:
			// Neither plain nor encrypted can be claimed for it.
			unreadable = unreadable || f.Kind != KindOther
		default:
			if f.Kind != KindOther && f.Kind != KindExtent {
				allEnc = false
			}
		}
	}
	switch {
	case len(vm.Exposed) > 0:
		vm.Status = Exposed
	case unreadable:
		vm.Status = Error // what it holds cannot be told
	case vmxEnc && allEnc, vm.VMX == "" && allEnc && len(vm.Files) > 0:
		vm.Status = Encrypted
	default:
		vm.Status = Plain
	}
}

func (r *Report) summarise() {
	s := &r.Summary
	uses := map[KeyRef]int{}
	var order []KeyRef
	for _, vm := range r.VMs {
		s.VMs++
		switch vm.Status {
		case Encrypted:
			s.Encrypted++
		case Exposed:
			s.Exposed++
		case Error:
			s.Unreadable++
		default:
			s.Plain++
		}
		for _, f := range vm.Files {
			s.Files[f.Status]++
		}
		for _, k := range vm.Keys {
			if uses[k] == 0 {
				order = append(order, k)
			}
			uses[k]++
		}
	}
	for _, k := range order {
		s.Keys = append(s.Keys, KeyUse{k, uses[k]})
	}
}

// keyRefs lists the lockers of a key safe.
func keyRefs(ks string) ([]KeyRef, error) {
	l, err := keysafe.Parse(ks)
	if err != nil {
		return nil, err
	}
	return keyRefsOf(l), nil
}

// keyRefsOf lists the lockers of a parsed key safe.
func keyRefsOf(l *keysafe.Locator) []KeyRef {
	var out []KeyRef
	for _, p := range l.Pairs() {
		if p.Locker == nil {
			continue
		}
		k := KeyRef{Locker: string(p.Locker.Type)}
		switch p.Locker.Type {
		case keysafe.TypePhrase:
			k.Provider = "passphrase"
		case keysafe.TypeFQID:
			k.Provider, k.KeyID = p.Locker.KeyServerID, p.Locker.KeyID
			if id, err := nkp.ParseKeyIDString(k.KeyID); err == nil {
				k.KDKID = id.KDKID.String()
			}
		}
		out = append(out, k)
	}
	return out
}

// scanVMX reads a .vmx (vm.OpenVM without keys): encrypted (key safe)
// or plain.
func scanVMX(path, rel string) (File, string) {
	f := File{Path: rel, Kind: KindVMX}
	if fi, err := os.Stat(path); err == nil {
		f.Size = fi.Size()
	}
	v, err := vm.OpenVM(context.Background(), path, &vm.Options{Depth: vm.SettingsOnly})
	if err != nil {
		return errFile(f, err), ""
	}
	defer v.Close()
	name, _ := v.File.Get("displayName")
	if !v.Encrypted() {
		f.Status, f.Why = Plain, "plain configuration (no key safe)"
		return f, name
	}
	f.Keys = keyRefsOf(v.KeySafe)
	f.Status = Encrypted
	f.Why = "key safe + encryption.data; opens with " + describe(f.Keys)
	if v.VTPM() {
		f.Why += "; vTPM present"
	}
	return f, name
}

func describe(ks []KeyRef) string {
	var s []string
	for _, k := range ks {
		s = append(s, k.String())
	}
	if len(s) == 0 {
		return "no known locker"
	}
	return strings.Join(s, " or ")
}

// isDescriptorOrMonolithic reports whether a .vmdk file is a disk (a text
// descriptor, or a sparse/stream file with an embedded descriptor) rather
// than an extent file (vmdk.Probe).
func isDescriptorOrMonolithic(path string) bool {
	p, err := probePath(path)
	if err != nil {
		// A damaged header or descriptor: still a disk for the report,
		// whose open fails with the reason.
		return true
	}
	return p.Disk()
}

// probePath runs vmdk.Probe on a file (never a FIFO or device).
func probePath(path string) (*vmdk.Probed, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: %w", path, vmdk.ErrUnsupported)
	}
	return vmdk.Probe(fh, fi.Size(), path)
}

// scanDisk reports one disk link (a descriptor or monolithic file). ok is
// false for extent files.
func scanDisk(dir, name, rel string) (File, bool) {
	path := filepath.Join(dir, name)
	if !isDescriptorOrMonolithic(path) {
		return File{}, false
	}
	f := File{Path: rel, Kind: KindDisk}
	if fi, err := os.Stat(path); err == nil {
		f.Size = fi.Size()
	}
	d, err := vmdk.Open(path, nil)
	if err != nil {
		// A chain that does not open (a missing parent, a CID mismatch) may
		// still say from its descriptor whether this link is encrypted.
		if d2, err2 := vmdk.Open(path, &vmdk.OpenOptions{AllowCIDMismatch: true}); err2 == nil {
			d, err = d2, nil
		} else {
			return descriptorOnly(f, path, err), true
		}
	}
	defer d.Close()
	l := d.Links()[0]
	for _, e := range l.Extents {
		if e.Path != "" && filepath.Clean(e.Path) != filepath.Clean(path) {
			f.Extents = append(f.Extents, filepath.Base(e.Path))
		}
	}
	if l.ParentCID != vmdk.NoParentCID {
		f.Parent = l.Descriptor.ParentFileNameHint
	}
	defer func() {
		if f.Parent != "" && f.Status != Error {
			f.Why += "; snapshot delta of " + f.Parent
		}
	}()
	chainPlain := true
	for _, x := range d.Links() {
		chainPlain = chainPlain && x.EncryptionKeys == ""
	}
	if l.EncryptionKeys != "" {
		if f.Keys, err = keyRefs(l.EncryptionKeys); err != nil {
			return errFile(f, err), true
		}
		f.Status = Encrypted
		f.Why = "encryptionKeys present; opens with " + describe(f.Keys)
		if flt := l.Descriptor.IOFilters(); !containsFold(flt, "vmwarevmcrypt") {
			f.Why += " (but ddb.iofilters lacks vmwarevmcrypt)"
		}
		// The raw bytes must not show structure: a disk whose descriptor
		// says encrypted but whose data is plain is exposed.
		sigs, err := Detect(l, l.Size())
		if err == nil {
			sigs = strong(sigs)
		}
		if err == nil && len(sigs) > 0 {
			f.Signatures = sigs
			f.Status = Exposed
			f.Why = "descriptor says encrypted but the data holds " + sigNames(sigs) + " in clear"
			return f, true
		}
		// No signature: is the stored data random, as ciphertext is?
		if h, n := sampleEntropy(l, 256<<10); n >= 4096 && h < 7.5 {
			f.Status = Exposed
			f.Why = fmt.Sprintf("descriptor says encrypted but its data is not random (%.2f bits per byte over %d bytes sampled): it reads as plain", h, n)
		}
		return f, true
	}
	// A plain link: probe the chain when the whole chain is plain, else
	// this link alone.
	var r io.ReaderAt = d
	if !chainPlain {
		r = l
	}
	sigs, err := Detect(r, l.Size())
	if err != nil {
		return errFile(f, err), true
	}
	f.Signatures = sigs
	var data int64
	if len(sigs) == 0 {
		// Does the link hold any data? Stop at the first data run: the
		// grain tables of a large disk are not read further.
		err := l.WalkAllocated(func(r vmdk.Run) error {
			if r.State == vmdk.Data {
				data = r.Len
				return errStop
			}
			return nil
		})
		if err != nil && !errors.Is(err, errStop) {
			return errFile(f, err), true
		}
	}
	switch {
	case len(sigs) > 0 && allGuestEncrypted(sigs):
		f.Status, f.Why = Plain, "plain disk, but its content is encrypted inside the guest ("+sigNames(sigs)+")"
	case len(sigs) > 0:
		f.Status, f.Why = Exposed, "plain disk: "+sigNames(sigs)+" readable without a key"
	case data > 0:
		f.Status, f.Why = Exposed, "plain disk holding data (no known partition table or file system at its start)"
	default:
		f.Status, f.Why = Plain, "plain disk with no data"
	}
	return f, true
}

// strong keeps the signatures that cannot appear in ciphertext by chance.
// Every one Detect reports is: its MBR needs the boot signature and four
// entries with valid boot flags and non-empty extents (about 1 in 2^44 for
// random bytes), not the bare 0x55AA.
func strong(s []Signature) []Signature { return s }

// sampleEntropy reads up to max bytes of l's stored data (raw, no key),
// skipping all-zero sectors, and returns the Shannon entropy in bits per
// byte of what it read and how many bytes that was. Ciphertext is close
// to 8. It stops walking the grain tables once it has enough.
func sampleEntropy(l *vmdk.Link, max int64) (float64, int64) {
	var counts [256]int64
	var n int64
	sec := make([]byte, 512)
	err := l.WalkAllocated(func(run vmdk.Run) error {
		if run.State != vmdk.Data {
			return nil
		}
		for off := run.Off; off+512 <= run.Off+run.Len; off += 512 {
			if n >= max {
				return errStop
			}
			if _, err := l.ReadAt(sec, off); err != nil {
				return err
			}
			if bytes.Count(sec, []byte{0}) == len(sec) {
				continue
			}
			for _, c := range sec {
				counts[c]++
			}
			n += 512
		}
		return nil
	})
	if (err != nil && !errors.Is(err, errStop)) || n == 0 {
		return 0, 0
	}
	return entropy(&counts, n), n
}

func allGuestEncrypted(s []Signature) bool {
	enc := false
	for _, x := range s {
		switch {
		case x.GuestEncrypted:
			enc = true
		case x.Name == "MBR partition table" || x.Name == "protective MBR" || x.Name == "GPT":
		default:
			return false
		}
	}
	return enc
}

func sigNames(s []Signature) string {
	var n []string
	for _, x := range s {
		n = append(n, x.Name)
	}
	return strings.Join(n, ", ")
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(strings.TrimSpace(x), s) {
			return true
		}
	}
	return false
}

// scanExtent reports a .vmdk that is not a disk of its own: an extent of a
// disk in the folder (reported through that disk), or an orphan extent,
// probed for signatures as raw data.
func scanExtent(dir, name, rel string, owned bool, disk File) File {
	f := File{Path: rel, Kind: KindExtent}
	fh, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return errFile(f, err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return errFile(f, err)
	}
	f.Size = fi.Size()
	if owned {
		f.Status, f.Why = disk.Status, "extent of "+disk.Path+" ("+string(disk.Status)+")"
		return f
	}
	if pr, err := vmdk.Probe(fh, fi.Size(), name); err == nil && (pr.Kind == vmdk.ProbeSparseExtent || pr.Kind == vmdk.ProbeCOWD || pr.Kind == vmdk.ProbeSESparse) {
		// A sparse extent alone opens as a disk of its own: look at its
		// data as at a plain disk's.
		d, err := vmdk.Open(filepath.Join(dir, name), nil)
		if err != nil {
			f.Status, f.Why = Plain, "sparse extent file without a descriptor in this folder (its data could not be read: "+err.Error()+")"
			return f
		}
		defer d.Close()
		sigs, err := Detect(d, d.Size())
		if err != nil {
			return errFile(f, err)
		}
		f.Signatures = sigs
		switch h, n := sampleEntropy(d.Links()[0], 256<<10); {
		case len(sigs) > 0 && !allGuestEncrypted(sigs):
			f.Status, f.Why = Exposed, "sparse extent without a descriptor holding "+sigNames(sigs)+" in clear"
		case n >= 4096 && h < 7.5:
			f.Status, f.Why = Exposed, fmt.Sprintf("sparse extent without a descriptor holding data that is not random (%.2f bits per byte): plain guest data", h)
		default:
			f.Status, f.Why = Plain, "sparse extent without a descriptor; no known structure, its data random or absent"
		}
		return f
	}
	sigs, err := Detect(fh, fi.Size())
	if err != nil {
		return errFile(f, err)
	}
	f.Signatures = sigs
	if len(sigs) > 0 && !allGuestEncrypted(sigs) {
		f.Status, f.Why = Exposed, "extent without a descriptor holding "+sigNames(sigs)+" in clear"
	} else {
		f.Status, f.Why = Plain, "extent without a descriptor; no known structure at its start"
	}
	return f
}

// scanDataFile reports a .nvram, .vswp, .vmem, .vmsn, .vmss or other file
// from its first 4 KiB.
func scanDataFile(path, rel, kind string) File {
	f := File{Path: rel, Kind: kind}
	fh, err := os.Open(path)
	if err != nil {
		return errFile(f, err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return errFile(f, err)
	}
	f.Size = fi.Size()
	if kind == KindOther {
		f.Status, f.Why = Plain, "VM metadata"
		return f
	}
	h := make([]byte, datafile.HeaderSize)
	n, err := fh.ReadAt(h, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return errFile(f, err)
	}
	h = h[:n]
	if datafile.IsDataFile(h) {
		hdr, err := datafile.ParseHeader(fh, fi.Size(), rel)
		if err != nil {
			return errFile(f, err)
		}
		f.Status = Encrypted
		f.Why = fmt.Sprintf("encrypted data file (version %d, %d bytes); opens with the VM's dataFileKey", hdr.Version, hdr.LogicalSize)
		return f
	}
	if fi.Size() == 0 || allZero(h) && fi.Size() <= int64(len(h)) {
		f.Status, f.Why = Plain, "empty"
		return f
	}
	magic := knownMagic(kind, h)
	if magic == "" {
		// No structure of its kind: random bytes are not guest data we
		// can vouch for; low-entropy bytes are plain content.
		if e, n := fileEntropy(fh, fi.Size(), 256<<10); n >= 4096 && e >= 7.5 {
			f.Status, f.Why = Unknown, fmt.Sprintf("not VMware's encrypted container, and no %s structure: random-looking bytes (%.2f bits per byte); not claimed exposed", kindName(kind), e)
			return f
		}
	}
	f.Status = Exposed
	switch kind {
	case KindNVRAM:
		f.Why = "plain NVRAM: firmware variables (and vTPM state, if any) readable without a key"
	case KindSwap:
		f.Why = "plain swap file: guest memory pages readable without a key"
	case KindMemory:
		f.Why = "plain memory image: guest RAM readable without a key"
	case KindSnapshot:
		f.Why = "plain snapshot state: guest memory and device state readable without a key"
	default:
		f.Why = "plain data readable without a key"
	}
	if magic != "" {
		f.Why += " (" + magic + ")"
	}
	return f
}

// knownMagic names the structure a plain data file of kind starts with,
// or "" (docs/formats.md §9, §13).
func knownMagic(kind string, h []byte) string {
	switch kind {
	case KindSnapshot:
		if memory.IsCheckpointMagic(h) {
			return fmt.Sprintf("checkpoint magic %x", h[:4])
		}
	case KindNVRAM:
		if bytes.HasPrefix(h, []byte("MRVN")) {
			return "NVRAM magic MRVN"
		}
	case KindMemory:
		if memory.LooksCompressed(h) {
			return "compressed memory block header"
		}
	}
	return ""
}

func kindName(kind string) string {
	if kind == "" {
		return "known"
	}
	return kind
}

// fileEntropy samples up to max bytes of f (skipping all-zero sectors) and
// returns the Shannon entropy in bits per byte and the bytes sampled.
func fileEntropy(f io.ReaderAt, size, max int64) (float64, int64) {
	var counts [256]int64
	var n int64
	sec := make([]byte, 4096)
	for off := int64(0); off < size && n < max; off += int64(len(sec)) {
		k, _ := f.ReadAt(sec, off)
		if k == 0 {
			break
		}
		b := sec[:k]
		if allZero(b) {
			continue
		}
		for _, c := range b {
			counts[c]++
		}
		n += int64(k)
	}
	return entropy(&counts, n), n
}

// entropy is the Shannon entropy of a byte histogram.
func entropy(counts *[256]int64, n int64) float64 {
	if n == 0 {
		return 0
	}
	h := 0.0
	for _, c := range counts {
		if c > 0 {
			p := float64(c) / float64(n)
			h -= p * math.Log2(p)
		}
	}
	return h
}

// scanImage reports a file of another name (.img, .raw, anything) that
// holds a disk image by content: a partition table or a file system at its
// start. ok is false for everything else (it is not reported).
func scanImage(path, rel string) (File, bool) {
	fh, err := os.Open(path)
	if err != nil {
		return File{}, false
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < minImageSize {
		return File{}, false
	}
	sigs, err := Detect(fh, fi.Size())
	if err != nil || len(sigs) == 0 {
		return File{}, false
	}
	f := File{Path: rel, Kind: KindImage, Size: fi.Size(), Signatures: sigs}
	if allGuestEncrypted(sigs) {
		f.Status, f.Why = Plain, "a disk image whose content is encrypted inside the guest ("+sigNames(sigs)+")"
	} else {
		f.Status, f.Why = Exposed, "a plain disk image (a recovered copy?): "+sigNames(sigs)+" readable without a key"
	}
	return f, true
}

// descriptorOnly reports a disk whose chain does not open from its
// descriptor alone: encrypted or not, and by which keys.
func descriptorOnly(f File, path string, openErr error) File {
	desc, err := readDescriptor(path)
	if err != nil {
		return errFile(f, openErr)
	}
	f.Error = openErr.Error()
	f.Parent = desc.ParentFileNameHint
	if desc.EncryptionKeys == "" { // plain, but its data cannot be examined
		f = errFile(f, openErr)
		f.Why = "plain disk (no encryptionKeys) whose data cannot be read: " + openErr.Error()
		return f
	}
	keys, err := keyRefs(desc.EncryptionKeys)
	if err != nil {
		return errFile(f, err)
	}
	f.Keys = keys
	f.Status, f.Why = Encrypted, "encryptionKeys present; opens with "+describe(keys)+"; the chain does not open ("+openErr.Error()+")"
	return f
}

// readDescriptor reads the descriptor of a text descriptor file or of a
// sparse file with an embedded one (vmdk.ReadDescriptor).
func readDescriptor(path string) (*vmdk.Descriptor, error) { return vmdk.ReadDescriptor(path) }

func errFile(f File, err error) File {
	f.Status, f.Error = Error, err.Error()
	f.Why = "could not be read: " + err.Error()
	return f
}

// isESXiCandidate says whether a file name may be an ESXi host file: a
// host configuration (state.tgz, local.tgz, local.tgz.ve, a configBundle),
// its key store, an encrypted core dump.
func isESXiCandidate(name string) bool {
	n := strings.ToLower(name)
	switch {
	case n == "state.tgz", n == "local.tgz", n == "encryption.info", strings.HasSuffix(n, ".ve"),
		strings.HasPrefix(n, "configbundle") && strings.HasSuffix(n, ".tgz"),
		strings.HasPrefix(n, "vmkernel-zdump"):
		return true
	}
	return false
}

// scanESXi reports an ESXi host file (recover/esxi.Detect): an encrypted
// host configuration or core dump is encrypted; a plain configuration, or
// one whose mode NONE key store travels with it, is exposed, naming the
// secrets it holds (SSH host keys, rui.key).
func scanESXi(path, rel string) File {
	f := File{Path: rel, Kind: KindESXi}
	fh, err := os.Open(path)
	if err != nil {
		return errFile(f, err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return errFile(f, err)
	}
	f.Size = fi.Size()
	d, err := esxi.Detect(fh, fi.Size())
	if d != nil && d.Kind != esxi.KindUnknown {
		f.Kind = KindESXi + " " + string(d.Kind)
	}
	switch {
	case err != nil:
		return errFile(f, err)
	case d == nil || d.Kind == esxi.KindUnknown:
		f.Status, f.Why = Unknown, "named like an ESXi host file, but not one"
	case d.Exposed():
		var names []string
		for _, s := range d.Secrets {
			names = append(names, s.Name)
		}
		f.Status = Exposed
		f.Why = "ESXi host configuration readable without a key"
		if d.KeyBeside {
			f.Why = "ESXi host configuration encrypted under a key store (mode NONE) that travels with it: anyone can derive the key"
		}
		if len(names) > 0 {
			f.Why += "; it holds " + strings.Join(names, ", ")
		}
	case d.Sealed:
		f.Status, f.Why = Encrypted, "ESXi host configuration sealed to the host's TPM"
	case d.Encrypted:
		f.Status, f.Why = Encrypted, "ESXi envelope (key id "+d.KeyID+"); opens with the host key"
	default:
		f.Status, f.Why = Plain, "ESXi "+string(d.Kind)+" holding no host configuration"
	}
	return f
}
