package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The inspect command: what a VM folder holds, what is encrypted and how,
// and its security posture; with a key, also the decrypted settings.

func init() {
	register(&cli.Command{
		Name:      "inspect",
		Usage:     "show a VM's key safe, which files are encrypted, and its security posture (no key needed)",
		ArgsUsage: "VMFOLDER|VMX",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "format-report", Usage: "print, as JSON, what a maintainer needs to support this VM's real files (shapes, lengths, header fields; never a key, passphrase, salt, plaintext or ciphertext byte): attach it to a report"},
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
	Files     []vm.File       `json:"files"`
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
	arg, err := vmOneArg(c, "VM folder or .vmx")
	if err != nil {
		return err
	}
	if c.Bool("format-report") {
		v, err := vmOpen(c, arg, vmOpenMode{keepGoing: true, optionalKeys: true, ignoreMAC: true})
		if err != nil {
			return err
		}
		defer v.Close()
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(vm.NewFormatReport(v))
	}
	v, err := vmOpen(c, arg, vmOpenMode{depth: vm.SettingsOnly, optionalKeys: true})
	if err != nil {
		return err
	}
	defer v.Close()
	r := &vmInspectReport{VMX: v.VMXPath, Folder: v.Dir, KeySafe: []vmLockerInfo{}, Files: v.Files, Encrypted: v.Encrypted()}
	r.Notes = append(r.Notes, v.Warnings...)
	if v.KeySafe != nil {
		for _, p := range v.KeySafe.Pairs() {
			r.KeySafe = append(r.KeySafe, vmDescribePair(p))
			if p.Locker != nil && p.Locker.Type == keysafe.TypeFQID {
				r.Notes = vmAppendOnce(r.Notes, "key-provider pairs use a modelled format (docs/formats.md §7)")
			}
		}
	}
	if v.Encrypted() && !v.Locked {
		r.Unlocked = &vmUnlockedInfo{Source: v.Opened.Source, Locker: v.Opened.Locker, Cipher: v.ConfigKey.Cipher}
	}
	settings := v.Settings
	r.Posture = vmx.PostureOf(v.File, settings, v.HasMemory())
	if settings != nil {
		si := &vmSettingsInfo{Firmware: r.Posture.Firmware, Disks: []vmDiskInfo{}, NVRAM: vmx.NVRAM(settings, filepath.Base(v.VMXPath))}
		for _, d := range vmx.Disks(settings) {
			p := d.FileName
			if !filepath.IsAbs(p) {
				p = filepath.Join(r.Folder, p)
			}
			_, statErr := os.Stat(p)
			si.Disks = append(si.Disks, vmDiskInfo{Disk: d, Exists: statErr == nil})
		}
		if v.DataFileKey != nil {
			si.DataFileKey = v.DataFileKey.Cipher
		}
		r.Settings = si
	} else if v.Encrypted() {
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
