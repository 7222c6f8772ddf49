package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The inspect command: what a VM folder holds, what is encrypted and how,
// and its security posture; with a key, also the decrypted settings.

// Limits of inspect's own minimal file checks.
const (
	// vmMaxDescriptorProbe is how much of a .vmdk inspect reads to find
	// encryptionKeys (the descriptor sits in the first 64 KiB).
	vmMaxDescriptorProbe = 64 << 10
	// vmDataFileMagic starts an encrypted .nvram/.vswp/.vmsn/.vmss/.vmem
	// (FORMATS.md section 9), little-endian.
	vmDataFileMagic = 0x8943dd9e
)

func init() {
	register(&cli.Command{
		Name:      "inspect",
		Usage:     "show a VM's key safe, which files are encrypted, and its security posture (no key needed)",
		ArgsUsage: "VMFOLDER|VMX",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		}, keyFlags()...),
		Action: vmInspectAction,
	})
}

// vmInspectReport is what inspect prints (--json prints it as is).
type vmInspectReport struct {
	VMX       string          `json:"vmx"`
	Folder    string          `json:"folder"`
	Encrypted bool            `json:"encrypted"`
	KeySafe   []vmLockerInfo  `json:"keySafe"`
	Files     []vmFileInfo    `json:"files"`
	Posture   vmx.Posture     `json:"posture"`
	Unlocked  *vmUnlockedInfo `json:"unlocked,omitempty"`
	Settings  *vmSettingsInfo `json:"settings,omitempty"`
	Notes     []string        `json:"notes,omitempty"`
}

// vmLockerInfo describes one pair of the key safe.
type vmLockerInfo struct {
	Type        string `json:"type"`               // phrase, fqid, ...
	Provider    string `json:"provider,omitempty"` // fqid: key provider
	KeyID       string `json:"keyId,omitempty"`    // fqid: key id; phrase: unique id
	Cipher      string `json:"cipher,omitempty"`   // phrase: KEK cipher
	Rounds      int    `json:"rounds,omitempty"`   // phrase: PBKDF2 rounds
	MAC         string `json:"mac"`
	LockedBytes int    `json:"lockedBytes"`
	NKPKDKID    string `json:"nkpKdkId,omitempty"` // fqid: the KDK an NKP key id names
	Problem     string `json:"problem,omitempty"`  // why it cannot be opened as is
}

// vmFileInfo is one file of the VM folder.
type vmFileInfo struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Size      int64  `json:"size"`
	Encrypted *bool  `json:"encrypted"` // null: cannot tell (e.g. a flat extent)
	Note      string `json:"note,omitempty"`
}

type vmUnlockedInfo struct {
	Source string `json:"source"`
	Locker string `json:"locker"`
	Cipher string `json:"configKeyCipher"`
}

// vmSettingsInfo holds what inspect reads from the (decrypted) settings.
type vmSettingsInfo struct {
	Firmware    string       `json:"firmware"`
	Disks       []vmDiskInfo `json:"disks"`
	NVRAM       string       `json:"nvram"`
	DataFileKey string       `json:"dataFileKeyCipher,omitempty"`
}

type vmDiskInfo struct {
	vmx.Disk
	Exists bool `json:"exists"`
}

func vmInspectAction(c *cli.Context) error {
	path, vf, err := vmLoadVMX(c, "VM folder or .vmx")
	if err != nil {
		return err
	}
	r := &vmInspectReport{VMX: path, Folder: filepath.Dir(path), KeySafe: []vmLockerInfo{}}
	ks, err := vf.KeySafe()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	r.Encrypted = ks != nil
	if ks != nil {
		for _, p := range ks.Pairs() {
			r.KeySafe = append(r.KeySafe, vmDescribePair(p))
			if p.Locker != nil && p.Locker.Type == keysafe.TypeFQID {
				r.Notes = vmAppendOnce(r.Notes, "key-provider pairs use a modelled format (docs/formats.md §7)")
			}
		}
	}
	if r.Files, err = vmScanFolder(r.Folder); err != nil {
		return err
	}
	memSnap := false
	for _, f := range r.Files {
		if f.Kind == "memory snapshot" || f.Kind == "memory image" {
			memSnap = true
		}
	}
	srcs, err := keySources(c, false)
	if err != nil {
		return err
	}
	var settings *vmx.File
	switch {
	case ks == nil:
		settings = vf // a plain VM: its settings are readable as they are
	case len(srcs) > 0:
		vm, err := vmOpenVMX(path, vf, srcs)
		if err != nil {
			return err
		}
		settings = vm.decrypted.Settings
		r.Unlocked = &vmUnlockedInfo{Source: vm.opened.Source, Locker: vm.opened.Locker, Cipher: vm.key.Cipher}
	}
	r.Posture = vmx.PostureOf(vf, settings, memSnap)
	if settings != nil {
		si := &vmSettingsInfo{Firmware: r.Posture.Firmware, Disks: []vmDiskInfo{}, NVRAM: vmx.NVRAM(settings, filepath.Base(path))}
		for _, d := range vmx.Disks(settings) {
			p := d.FileName
			if !filepath.IsAbs(p) {
				p = filepath.Join(r.Folder, p)
			}
			_, statErr := os.Stat(p)
			si.Disks = append(si.Disks, vmDiskInfo{Disk: d, Exists: statErr == nil})
		}
		if dfk, err := settings.DataFileKey(); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		} else if dfk != nil {
			si.DataFileKey = dfk.Cipher
		}
		r.Settings = si
	} else if ks != nil {
		r.Notes = append(r.Notes, "firmware, disks, Secure Boot and vMotion settings are inside encryption.data: give a key to read them")
	}
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	}
	return printVMInspect(c.App.Writer, r)
}

func vmAppendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// vmDescribePair reports a pair without a key; problems (rounds above the
// cap, unknown cipher, impossible length) are described, not fatal.
func vmDescribePair(p *keysafe.Pair) vmLockerInfo {
	li := vmLockerInfo{MAC: p.MAC, LockedBytes: len(p.Locked)}
	if p.Locker == nil {
		li.Type = "?"
		return li
	}
	li.Type = string(p.Locker.Type)
	switch p.Locker.Type {
	case keysafe.TypeFQID:
		li.Provider, li.KeyID = p.Locker.KeyServerID, p.Locker.KeyID
		if kid, err := nkp.ParseKeyIDString(p.Locker.KeyID); err == nil {
			li.NKPKDKID = kid.KDKID.String()
		}
	case keysafe.TypePhrase:
		li.KeyID = p.Locker.UniqueID
		// Read from the dict itself, so that a pair refused for its
		// rounds still shows them.
		if d, err := keysafe.ParseDict(p.Locker.KeyGenData); err == nil {
			li.Cipher, _ = d.Get("cipher")
			if v, ok := d.Get("rounds"); ok {
				li.Rounds, _ = strconv.Atoi(v)
			}
		}
	}
	if err := p.Validate(); err != nil {
		li.Problem = err.Error()
	}
	return li
}

// vmFileKinds maps extensions to what inspect reports.
var vmFileKinds = map[string]string{
	".vmx": "settings", ".vmxf": "team settings", ".vmsd": "snapshot list",
	".nvram": "NVRAM", ".vswp": "swap", ".vmsn": "memory snapshot", ".vmss": "suspend state",
	".vmem": "memory image", ".vmdk": "disk",
}

// vmDataFileExts are the files that use the encrypted container of
// FORMATS.md section 9.
var vmDataFileExts = map[string]bool{".nvram": true, ".vswp": true, ".vmsn": true, ".vmss": true, ".vmem": true}

// vmScanFolder lists the VM files of a folder and whether each is encrypted.
func vmScanFolder(dir string) ([]vmFileInfo, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := []vmFileInfo{}
	for _, e := range ents {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		kind, ok := vmFileKinds[ext]
		if !ok || e.IsDir() {
			continue
		}
		p := filepath.Join(dir, e.Name())
		st, err := os.Stat(p) // follows symlinks: report the file's size
		if err != nil {
			out = append(out, vmFileInfo{Name: e.Name(), Kind: kind, Note: err.Error()})
			continue
		}
		if st.IsDir() {
			continue
		}
		fi := vmFileInfo{Name: e.Name(), Kind: kind, Size: st.Size()}
		switch {
		case ext == ".vmx":
			if vf, err := vmReadVMX(p); err != nil {
				fi.Note = err.Error()
			} else {
				_, _, enc, err := vf.Encryption()
				fi.Encrypted = &enc
				if err != nil {
					fi.Note = err.Error()
				}
			}
		case vmDataFileExts[ext]:
			enc, err := vmHasDataFileMagic(p)
			if err != nil {
				fi.Note = err.Error()
			} else {
				fi.Encrypted = &enc
			}
		case ext == ".vmdk":
			fi.Kind, fi.Encrypted, fi.Note, _ = vmProbeVMDK(p)
		}
		out = append(out, fi)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// vmReadHead reads at most n bytes from the start of a file (read-only).
func vmReadHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := io.ReadFull(f, b)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, err
	}
	return b[:m], nil
}

func vmHasDataFileMagic(path string) (bool, error) {
	b, err := vmReadHead(path, 4)
	if err != nil {
		return false, err
	}
	return len(b) == 4 && binary.LittleEndian.Uint32(b) == vmDataFileMagic, nil
}

var vmEncryptionKeysLine = regexp.MustCompile(`(?mi)^[ \t]*encryptionKeys[ \t]*=[ \t]*"?([^"\r\n]*)"?`)

// vmProbeVMDK is inspect's own minimal disk check: it reads at most the first
// 64 KiB and looks for a descriptor (a text file, or embedded after a KDMV
// header) with an encryptionKeys line, whose value it returns.
func vmProbeVMDK(path string) (kind string, encrypted *bool, note, keySafe string) {
	b, err := vmReadHead(path, vmMaxDescriptorProbe)
	if err != nil {
		return "disk", nil, err.Error(), ""
	}
	return vmProbeVMDKHead(b)
}

// vmProbeVMDKHead classifies the first bytes of a .vmdk file (untrusted:
// every header field is checked against len(b) before use).
func vmProbeVMDKHead(b []byte) (kind string, encrypted *bool, note, keySafe string) {
	var desc []byte
	switch {
	case bytes.HasPrefix(b, []byte("KDMV")) && len(b) >= 44:
		off := binary.LittleEndian.Uint64(b[28:])
		size := binary.LittleEndian.Uint64(b[36:])
		if off == 0 || size == 0 {
			return "disk extent", nil, "sparse extent without a descriptor (see the disk's descriptor file)", ""
		}
		if off >= uint64(len(b))/512 {
			return "disk", nil, "descriptor beyond the first 64 KiB", ""
		}
		end := off + min(size, uint64(len(b))/512-off) // off+size may wrap
		desc = b[off*512 : end*512]
	case bytes.Contains(b, []byte("# Disk DescriptorFile")) || bytes.Contains(b, []byte("createType")):
		desc = b
	default:
		return "disk extent", nil, "extent data (encryption is recorded in the disk's descriptor)", ""
	}
	m := vmEncryptionKeysLine.FindSubmatch(desc)
	enc := m != nil
	if m != nil {
		keySafe = string(m[1])
	}
	return "disk", &enc, "", keySafe
}

// printVMInspect writes the readable report.
func printVMInspect(w io.Writer, r *vmInspectReport) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	yn := func(b *bool) string {
		switch {
		case b == nil:
			return "?"
		case *b:
			return "yes"
		}
		return "no"
	}
	fmt.Fprintf(tw, "VMX:\t%s\n", r.VMX)
	fmt.Fprintf(tw, "Encrypted:\t%s\n", yn(&r.Encrypted))
	if r.Unlocked != nil {
		fmt.Fprintf(tw, "Opened:\tby %s (%s), config key %s\n", r.Unlocked.Source, r.Unlocked.Locker, r.Unlocked.Cipher)
	}
	tw.Flush()
	if len(r.KeySafe) > 0 {
		fmt.Fprintf(w, "\nKey safe:\n")
		fmt.Fprintf(tw, "  #\tTYPE\tPROVIDER\tKEY ID\tCIPHER\tROUNDS\tMAC\tLOCKED\n")
		for i, l := range r.KeySafe {
			rounds := ""
			if l.Rounds > 0 {
				rounds = fmt.Sprint(l.Rounds)
			}
			kid := l.KeyID
			if len(kid) > 48 {
				kid = kid[:45] + "..."
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\t%d bytes\n", i+1, l.Type, vmDash(l.Provider), vmDash(kid), vmDash(l.Cipher), vmDash(rounds), l.MAC, l.LockedBytes)
		}
		tw.Flush()
		for i, l := range r.KeySafe {
			if l.NKPKDKID != "" {
				fmt.Fprintf(w, "  pair %d: Native Key Provider key id; KDK %s\n", i+1, l.NKPKDKID)
			}
			if l.Problem != "" {
				fmt.Fprintf(w, "  pair %d: %s\n", i+1, l.Problem)
			}
		}
	}
	fmt.Fprintf(w, "\nFiles in %s:\n", r.Folder)
	fmt.Fprintf(tw, "  NAME\tKIND\tSIZE\tENCRYPTED\tNOTE\n")
	for _, f := range r.Files {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", f.Name, f.Kind, f.Size, yn(f.Encrypted), f.Note)
	}
	tw.Flush()
	p := r.Posture
	fmt.Fprintf(w, "\nPosture:\n")
	fmt.Fprintf(tw, "  vTPM:\t%s\n", yn(&p.VTPM))
	fmt.Fprintf(tw, "  Firmware:\t%s\n", vmUnknown(p.Firmware))
	fmt.Fprintf(tw, "  Secure Boot:\t%s\n", yn(p.SecureBoot))
	fmt.Fprintf(tw, "  vMotion encryption:\t%s\n", vmUnknown(p.VMotionEncryption))
	fmt.Fprintf(tw, "  Fault Tolerance:\t%s\n", yn(p.FaultTolerance))
	fmt.Fprintf(tw, "  Memory snapshots:\t%s\n", yn(&p.MemorySnapshots))
	if p.EncryptionType != "" {
		fmt.Fprintf(tw, "  vmx.encryptionType:\t%s\n", p.EncryptionType)
	}
	tw.Flush()
	if len(p.Conflicts) > 0 {
		fmt.Fprintf(w, "\nConflicts:\n")
		for _, c := range p.Conflicts {
			fmt.Fprintf(w, "  - %s\n", c)
		}
	}
	if s := r.Settings; s != nil {
		fmt.Fprintf(w, "\nSettings:\n")
		fmt.Fprintf(tw, "  Firmware:\t%s\n", s.Firmware)
		fmt.Fprintf(tw, "  NVRAM:\t%s\n", s.NVRAM)
		if s.DataFileKey != "" {
			fmt.Fprintf(tw, "  dataFileKey:\t%s\n", s.DataFileKey)
		}
		for _, d := range s.Disks {
			missing := ""
			if !d.Exists {
				missing = "  (missing)"
			}
			fmt.Fprintf(tw, "  Disk %s:\t%s%s\n", d.Device, d.FileName, missing)
		}
		tw.Flush()
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\nNote: %s\n", n)
	}
	return nil
}

func vmDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func vmUnknown(s string) string {
	if s == "" {
		return "unknown (encrypted)"
	}
	return s
}
