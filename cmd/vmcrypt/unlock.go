package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The unlock command proves that the supplied keys open a VM: the key
// safe's MAC and then the MAC of encryption.data. It writes nothing.

func init() {
	register(&cli.Command{
		Name:      "unlock",
		Usage:     "prove the keys open a VM (key safe and encryption.data); writes nothing",
		ArgsUsage: "VMX|VMFOLDER",
		Flags:     keyFlags(),
		Action:    vmUnlockAction,
	})
}

func vmUnlockAction(c *cli.Context) error {
	arg, err := vmOneArg(c, "VMX")
	if err != nil {
		return err
	}
	path, err := vmLocateVMX(arg)
	if err != nil {
		return err
	}
	vf, err := vmReadVMX(path)
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
	vm, err := vmOpenVMX(path, vf, srcs)
	if err != nil {
		return err
	}
	w := c.App.Writer
	pairs := ks.Pairs()
	fmt.Fprintf(w, "%s\n", path)
	fmt.Fprintf(w, "  key safe:        pair %d of %d (%s) opened by %s\n", vm.opened.Pair+1, len(pairs), vm.opened.Locker, vm.opened.Source)
	if pairs[vm.opened.Pair].Locker.Type == keysafe.TypeFQID {
		fmt.Fprintf(w, "                   (key-provider pair: modelled format, FORMATS.md section 7)\n")
	}
	fmt.Fprintf(w, "  config key:      %s\n", vm.key.Cipher)
	fmt.Fprintf(w, "  encryption.data: MAC verified, %d bytes of settings\n", len(vm.decrypted.Text))
	if dfk, err := vm.decrypted.Settings.DataFileKey(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	} else if dfk != nil {
		fmt.Fprintf(w, "  dataFileKey:     %s\n", dfk.Cipher)
	}
	return nil
}
