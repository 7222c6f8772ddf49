package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The unlock command proves that the supplied keys open a VM: the key
// safe's MAC, then the MAC of encryption.data, then the encryptionKeys of
// every disk the settings name. It writes nothing.

func init() {
	register(&cli.Command{
		Name:      "unlock",
		Usage:     "prove the keys open a VM (key safe, encryption.data, disk keys); writes nothing",
		ArgsUsage: "VMX|VMFOLDER",
		Flags:     keyFlags(),
		Action:    vmUnlockAction,
	})
}

func vmUnlockAction(c *cli.Context) error {
	path, vf, err := vmLoadVMX(c, "VMX")
	if err != nil {
		return err
	}
	ks, err := vf.KeySafe()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if ks == nil {
		return fmt.Errorf("%s is not encrypted: nothing to unlock", path)
	}
	srcs, err := keySources(c, vmPromptFor(vf))
	if err != nil {
		return err
	}
	res := keys.NewResolver(srcs...)
	vm, err := vmOpenVMXWith(path, vf, res)
	if err != nil {
		return err
	}
	w := c.App.Writer
	pairs := ks.Pairs()
	fmt.Fprintf(w, "%s\n", path)
	fmt.Fprintf(w, "  key safe:        pair %d of %d (%s) opened by %s\n", vm.opened.Pair+1, len(pairs), vm.opened.Locker, vm.opened.Source)
	if pairs[vm.opened.Pair].Locker.Type == keysafe.TypeFQID {
		fmt.Fprintf(w, "                   (key-provider pair: modelled format, docs/formats.md §7)\n")
	}
	fmt.Fprintf(w, "  config key:      %s\n", vm.key.Cipher)
	fmt.Fprintf(w, "  encryption.data: MAC verified, %d bytes of settings\n", len(vm.decrypted.Text))
	if dfk, err := vm.decrypted.Settings.DataFileKey(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	} else if dfk != nil {
		fmt.Fprintf(w, "  dataFileKey:     %s\n", dfk.Cipher)
	}
	return vmUnlockDisks(w, filepath.Dir(path), vm.decrypted.Settings, res)
}

// vmUnlockDisks opens the encryptionKeys of every disk the settings name
// (the first link of each chain, read from its descriptor), with the same
// resolver. A missing disk file is reported, not fatal; a disk key that
// does not open is.
func vmUnlockDisks(w io.Writer, dir string, settings *vmx.File, res *keys.Resolver) error {
	for _, d := range vmx.Disks(settings) {
		p := d.FileName
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		label := fmt.Sprintf("  disk %s:", d.Device)
		if _, err := os.Stat(p); err != nil {
			fmt.Fprintf(w, "%-19s%s: not found, not checked\n", label, d.FileName)
			continue
		}
		// Every link of the chain: a snapshot's base may be locked by
		// another key than its delta, and recover needs them all.
		disk, err := vmdk.Open(p, nil)
		if err != nil {
			return fmt.Errorf("disk %s (%s): %w", d.FileName, d.Device, err)
		}
		enc := false
		for _, l := range disk.Links() {
			if l.EncryptionKeys == "" {
				continue
			}
			enc = true
			ks, err := keysafe.Parse(l.EncryptionKeys)
			if err == nil {
				var k *keysafe.Key
				var op keys.Opened
				if k, op, err = res.Open(ks); err == nil {
					fmt.Fprintf(w, "%-19s%s: %s key opened by %s (%s)\n", label, filepath.Base(l.Path), k.Cipher, op.Source, op.Locker)
					label = ""
					continue
				}
			}
			disk.Close()
			return fmt.Errorf("%s: encryptionKeys: %w", l.Path, err)
		}
		disk.Close()
		if !enc {
			fmt.Fprintf(w, "%-19s%s: not encrypted\n", label, d.FileName)
		}
	}
	return nil
}
