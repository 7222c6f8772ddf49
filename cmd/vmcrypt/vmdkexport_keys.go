package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/vm"
)

// `vmdk export` of encrypted disks: vmdkExport (vmdkcmd.go) hands an
// encrypted disk here, which opens each link's key with the key options
// (never a prompt) through vm.OpenDisk, the per-disk step of the one walk,
// and exports the plaintext through the same exportDisk seam.

// vmdkExportEncrypted exports the encrypted disk named by the command's
// argument to out, decrypted.
func vmdkExportEncrypted(c *cli.Context, out string, o vmdkExportOptions) error {
	vo := vmdkOpenOptions(c)
	vo.Salvage = o.Salvage
	// Keys come only from the key options (no prompt): with none, opening
	// the disk's key fails naming the key it needs (exit 4).
	srcs, err := keySources(c, false)
	if err != nil {
		return err
	}
	od, err := vm.OpenDisk(c.Context, c.Args().First(), keys.NewResolver(srcs...), vo)
	if err != nil {
		return err
	}
	defer od.Close()
	plain := od.Plain
	if err := exportDisk(c, out, plain, plain.Size(), plain.Runs(), o); err != nil {
		return err
	}
	for _, l := range od.Links {
		if l.Encrypted {
			fmt.Fprintf(c.App.ErrWriter, "%s: decrypted with the key from %s (%s); modelled format (XTS-AES-256, tweak = LBA)\n", l.File, l.Source, l.Locker)
		}
	}
	return nil
}
