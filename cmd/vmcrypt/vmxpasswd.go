package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// vmx passwd: the same config key under a new passphrase. Only the key
// safe changes (and the encryptionKeys of disks locked by the same
// passphrase); encryption.data, the disks' data and the data files are
// not touched.

func vmxPasswdCommand() *cli.Command {
	var passFlag cli.Flag
	for _, f := range keyFlags() {
		if f.Names()[0] == "passphrase-file" {
			passFlag = f
		}
	}
	return &cli.Command{
		Name:      "passwd",
		Usage:     "change the passphrase of a Workstation/Fusion VM (the keys inside stay: encryption.data, disks and data files are not rewritten)",
		ArgsUsage: "VMX|VMFOLDER (-o OUT | --in-place) [--passphrase-file OLD] [--new-passphrase-file NEW]",
		Flags: append(vmxChangeFlags(), passFlag,
			&cli.StringFlag{Name: "new-passphrase-file", Usage: "read the new passphrase from `FILE` (a leading BOM and one trailing newline are dropped); without it, asked twice on the terminal"},
			&cli.BoolFlag{Name: "allow-empty", Usage: "accept an empty new passphrase"},
			&cli.IntFlag{Name: "rounds", Usage: "PBKDF2 `ROUNDS` of the new passphrase (0: keep the VM's)"},
			&cli.BoolFlag{Name: "allow-unsafe-paths", Usage: "follow disk extent and parent paths that leave the VM folder (their descriptors change too)"},
		),
		Action: vmxPasswd,
	}
}

func vmxPasswd(c *cli.Context) error {
	in, vf, err := vmLoadVMX(c, "VMX")
	if err != nil {
		return err
	}
	out, inPlace, err := vmxTarget(c, in)
	if err != nil {
		return err
	}
	rounds := c.Int("rounds")
	if rounds < 0 || rounds > keysafe.MaxRounds {
		return usagef("--rounds must be 0 (keep) or 1..%d", keysafe.MaxRounds)
	}
	// A VM that no passphrase locks is refused before asking for one.
	ks, err := vf.KeySafe()
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if ks == nil {
		return fmt.Errorf("%s has no passphrase: %w", in, vm.ErrNotEncrypted)
	}
	if !vmxHasPhrase(ks) {
		return vmxNotPassphrase(in, ks)
	}
	old, ok, err := passphraseFromFlags(c)
	if err != nil {
		return err
	}
	if !ok {
		if old, err = promptSecret(c, "Passphrase"); err != nil {
			return err
		}
	}
	newPass, err := vmxNewPassphrase(c)
	if err != nil {
		return err
	}
	opt := keysafe.RelockOptions{Rounds: rounds}
	r, err := vmx.ChangePassphrase(vf, old, newPass, opt, rand.Reader)
	if errors.Is(err, keysafe.ErrNotPhrase) {
		return vmxNotPassphrase(in, ks)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	// Only the descriptors are read and changed, never the data: a chain
	// whose content ids disagree is rewrapped like any other.
	vopt := &vmdk.OpenOptions{AllowUnsafePaths: c.Bool("allow-unsafe-paths"), AllowCIDMismatch: true}
	links, err := vmx.ChangeDiskPassphrases(filepath.Dir(in), r.Settings, old, newPass, opt, vopt, rand.Reader)
	if err != nil {
		return fmt.Errorf("%s: no file was changed: %w", in, err)
	}
	var writes []vmxWrite
	var rewrapped []string
	for _, l := range links {
		if l.Status == vmx.DiskRewrapped {
			writes = append(writes, vmxWrite{path: l.Path, old: l.Old, new: l.New, area: l.Embedded, offset: l.Offset})
			rewrapped = append(rewrapped, l.Path)
		}
	}
	w := c.App.Writer
	var backups []string
	if inPlace {
		orig, err := os.ReadFile(in)
		if err != nil {
			return err
		}
		if !bytes.Equal(orig, vf.Bytes()) {
			return fmt.Errorf("%s changed while vmcrypt was working on it: nothing was changed", in)
		}
		writes = append(writes, vmxWrite{path: in, old: orig, new: r.File.Bytes()})
		if backups, err = vmxCommitInPlace(writes, c.Bool("force")); err != nil {
			return err
		}
	} else {
		if len(rewrapped) > 0 {
			return usagef("%s: %d disk descriptor(s) are locked by the same passphrase and must change with the VMX (%s): use --in-place (each original is kept as NAME.vmcrypt-bak), or run it on a copy of the VM folder",
				in, len(rewrapped), strings.Join(rewrapped, ", "))
		}
		if err := writeNewFile(out, r.File.Bytes(), c.Bool("force")); err != nil {
			return err
		}
	}

	pairs := "pair"
	if r.Relocked > 1 {
		pairs = "pairs"
	}
	fmt.Fprintf(w, "%s: passphrase changed (%d passphrase %s relocked, fresh salt", in, r.Relocked, pairs)
	if rounds != 0 {
		fmt.Fprintf(w, ", PBKDF2 %d rounds", rounds)
	}
	fmt.Fprintf(w, "); encryption.data unchanged\n")
	if r.Kept > 0 {
		fmt.Fprintf(w, "  key safe: %d other pair(s) kept as they were (a key provider, or another passphrase)\n", r.Kept)
	}
	for _, l := range links {
		fmt.Fprintf(w, "  disk %s %s: %s\n", l.Device, l.Path, vmxLinkStatus(l))
	}
	if inPlace {
		fmt.Fprintf(w, "changed %d file(s) in place; originals kept as:\n", len(backups))
		for _, b := range backups {
			fmt.Fprintf(w, "  %s\n", b)
		}
	} else {
		fmt.Fprintf(w, "wrote %s (the input is unchanged)\n", out)
	}
	fmt.Fprintf(w, "note: the keys inside did not change: anyone with the old passphrase and a copy of the old .vmx (or a backup) can still open this VM\n")
	return nil
}

func vmxLinkStatus(l vmx.DiskLink) string {
	switch l.Status {
	case vmx.DiskRewrapped:
		if l.Embedded {
			return "encryptionKeys rewrapped (descriptor inside the disk file, at offset " + fmt.Sprint(l.Offset) + ")"
		}
		return "encryptionKeys rewrapped"
	case vmx.DiskMissing:
		return "not found: NOT changed (if it turns up, it still opens with the old passphrase only)"
	case vmx.DiskPlain:
		return "not encrypted: nothing to change"
	case vmx.DiskKeyProvider:
		return "locked by a key provider: not changed"
	case vmx.DiskOtherPassphrase:
		return "locked by another passphrase: not changed"
	}
	return l.Status
}

// vmxHasPhrase says whether a key safe holds a passphrase pair.
func vmxHasPhrase(ks *keysafe.Locator) bool {
	for _, p := range ks.Pairs() {
		if p.Locker != nil && p.Locker.Type == keysafe.TypePhrase {
			return true
		}
	}
	return false
}

// vmxNotPassphrase is the refusal of passwd for a VM no passphrase locks
// (a usage error: exit 2).
func vmxNotPassphrase(in string, ks *keysafe.Locator) error {
	var lockers []string
	for _, p := range ks.Pairs() {
		if p.Locker != nil {
			lockers = append(lockers, p.Locker.Describe())
		}
	}
	return usagef("%s is not a passphrase VM (locked by %s): there is no passphrase to change; a key provider's keys are managed on the key provider",
		in, strings.Join(lockers, ", "))
}

// vmxNewPassphrase reads the new passphrase from --new-passphrase-file or
// asks twice on the terminal; an empty one is refused unless
// --allow-empty.
func vmxNewPassphrase(c *cli.Context) ([]byte, error) {
	var p []byte
	if f := c.String("new-passphrase-file"); f != "" {
		var err error
		if p, err = readSecretFile(f); err != nil {
			return nil, err
		}
	} else {
		fd := int(os.Stdin.Fd())
		if !term.IsTerminal(fd) {
			return nil, usagef("new passphrase needed: use --new-passphrase-file, or run on a terminal to be asked")
		}
		ask := func(label string) ([]byte, error) {
			fmt.Fprintf(c.App.ErrWriter, "%s: ", label)
			b, err := term.ReadPassword(fd)
			fmt.Fprintln(c.App.ErrWriter)
			return b, err
		}
		a, err := ask("New passphrase")
		if err != nil {
			return nil, err
		}
		b, err := ask("New passphrase again")
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(a, b) {
			return nil, usagef("the two new passphrases differ: nothing was changed")
		}
		p = a
	}
	if len(p) == 0 && !c.Bool("allow-empty") {
		return nil, usagef("the new passphrase is empty: refused (--allow-empty accepts it)")
	}
	return p, nil
}
