package main

import (
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The unlock command proves that the supplied keys open a VM: the key
// safe's MAC, then the MAC of encryption.data, then the encryptionKeys of
// every link of every disk the settings name, then the header of every
// data file. It writes nothing. Every disk is reported; the exit code is
// that of the worst failure.

func init() {
	register(&cli.Command{
		Name:      "unlock",
		Usage:     "prove the keys open a VM (key safe, encryption.data, every disk link's key, data files); writes nothing",
		ArgsUsage: "VMX|VMFOLDER",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "allow-unsafe-paths", Usage: "follow disk extent paths and parent hints that are absolute or contain \"..\", and symbolic links out of the VM folder"},
			&cli.BoolFlag{Name: "allow-cid-mismatch", Usage: "read a chain whose parentCID differs from the parent's CID"},
		}, keyFlags()...),
		Action: vmUnlockAction,
	})
}

func vmUnlockAction(c *cli.Context) error {
	arg, err := vmOneArg(c, "VMX or VM folder")
	if err != nil {
		return err
	}
	v, err := vmOpen(c, arg, vmOpenMode{keepGoing: true, prompt: true})
	if err != nil {
		return err
	}
	defer v.Close()
	if !v.Encrypted() {
		return fmt.Errorf("%s: nothing to unlock: %w", v.VMXPath, vm.ErrNotEncrypted)
	}
	w := c.App.Writer
	pairs := v.KeySafe.Pairs()
	fmt.Fprintf(w, "%s\n", v.VMXPath)
	fmt.Fprintf(w, "  key safe:        pair %d of %d (%s) opened by %s\n", v.Opened.Pair+1, len(pairs), v.Opened.Locker, v.Opened.Source)
	if pairs[v.Opened.Pair].Locker.Type == keysafe.TypeFQID {
		fmt.Fprintf(w, "                   (key-provider pair: modelled format, docs/formats.md §7)\n")
	}
	fmt.Fprintf(w, "  config key:      %s\n", v.ConfigKey.Cipher)
	fmt.Fprintf(w, "  encryption.data: MAC verified, %d bytes of settings\n", len(v.Decrypted.Text))
	if v.DataFileKey != nil {
		fmt.Fprintf(w, "  dataFileKey:     %s\n", v.DataFileKey.Cipher)
	}
	var worst error
	fail := func(err error) {
		if worst == nil || exitRank(err) > exitRank(worst) {
			worst = err
		}
	}
	for _, d := range v.Disks {
		label := fmt.Sprintf("  disk %s:", d.Device)
		if d.Err != nil {
			fmt.Fprintf(w, "%-19s%s: DOES NOT OPEN: %s\n", label, d.FileName, message(d.Err))
			fail(d.Err)
			continue
		}
		if !d.Encrypted() {
			fmt.Fprintf(w, "%-19s%s: not encrypted (%d link(s))\n", label, d.FileName, len(d.Links))
			continue
		}
		for _, l := range d.Links {
			if !l.Encrypted {
				fmt.Fprintf(w, "%-19s%s: not encrypted\n", label, filepath.Base(l.File))
			} else {
				fmt.Fprintf(w, "%-19s%s: %s key opened by %s (%s)\n", label, filepath.Base(l.File), l.Cipher, l.Source, l.Locker)
			}
			label = ""
		}
	}
	for _, f := range v.DataFiles {
		if !vm.IsDataFileKind(f.Kind) {
			continue
		}
		label := "  " + f.Kind + ":"
		switch {
		case f.Err != nil:
			fmt.Fprintf(w, "%-19s%s: DOES NOT OPEN: %s\n", label, f.Name, message(f.Err))
			fail(f.Err)
		case f.Encrypted:
			fmt.Fprintf(w, "%-19s%s: encrypted, %d bytes of data\n", label, f.Name, f.Size)
		default:
			fmt.Fprintf(w, "%-19s%s: not encrypted\n", label, f.Name)
		}
	}
	for _, wn := range v.Warnings {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", wn)
	}
	if worst != nil {
		return &summaryError{msg: fmt.Sprintf("%s: the VMX opens, but not every disk or data file does (see above)", v.VMXPath), err: worst}
	}
	return nil
}

// exitRank orders failures for commands that report several: a wrong key
// is worse than a missing one, corruption worse than both, any of them
// worse than another failure.
func exitRank(err error) int {
	switch exitCode(err) {
	case exitOK:
		return 0
	case exitKeyNotFound:
		return 2
	case exitWrongKey:
		return 3
	case exitCorrupt:
		return 4
	}
	return 1
}

// summaryError is the one sentence of a command that printed a table of
// results, carrying the worst row's error for the exit code.
type summaryError struct {
	msg string
	err error
}

func (e *summaryError) Error() string { return e.msg }
func (e *summaryError) Unwrap() error { return e.err }
