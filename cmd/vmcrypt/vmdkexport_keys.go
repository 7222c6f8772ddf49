package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

// `vmdk export` of encrypted disks. vmdkcmd.go (the VMDK-reader engineer's)
// refuses encrypted disks; this file adds the key options to `vmdk export`
// and, when the disk is encrypted, decrypts it through recover.OpenDisk and
// hands the plaintext to the same exportDisk seam. It hooks in from its own
// init, which runs after vmdkcmd.go's (files initialise in name order), so
// vmdkcmd.go needs no change.

func init() {
	for _, c := range commands {
		if c.Name != "vmdk" {
			continue
		}
		for _, sc := range c.Subcommands {
			if sc.Name == "export" && sc.Action != nil {
				sc.Flags = append(sc.Flags, keyFlags()...)
				sc.Usage += "; encrypted disks are decrypted with the key options"
				plainExport := sc.Action
				sc.Action = func(c *cli.Context) error { return vmdkExportKeys(c, plainExport) }
			}
		}
	}
}

// vmdkExportKeys exports an encrypted disk with its keys; anything else
// goes to the plain export.
func vmdkExportKeys(c *cli.Context, plainExport cli.ActionFunc) error {
	pos, err := vmdkArgs(c)
	if err != nil || len(pos) != 1 || c.String("output") == "" {
		return plainExport(c) // it reports the usage error
	}
	vo := &vmdk.OpenOptions{AllowUnsafePaths: c.Bool("allow-unsafe-paths"), AllowCIDMismatch: c.Bool("allow-cid-mismatch")}
	d, err := vmdk.Open(pos[0], vo)
	if err != nil {
		return err
	}
	enc := d.Encrypted()
	d.Close()
	if !enc {
		return plainExport(c)
	}
	o := vmdkExportOptions{Format: c.String("format"), Subformat: c.String("subformat"), Force: c.Bool("force"), Jobs: c.Int("jobs")}
	if err := o.check(); err != nil {
		return err
	}
	out := c.String("output")
	// Keys come only from the key options (no prompt): with none, opening
	// the disk's key fails naming the key it needs (exit 4).
	srcs, err := keySources(c, false)
	if err != nil {
		return err
	}
	od, err := recover.OpenDisk(pos[0], keys.NewResolver(srcs...), vo)
	if err != nil {
		return err
	}
	defer od.Close()
	plain := od.Plain
	total := plain.DataBytes()
	if o.Format == "vmdk" {
		total = plain.Size()
	}
	if bar := vmdkProgressBar(c, total); bar != nil {
		o.Progress = func(n int64) { bar.Add64(n) }
		defer bar.Finish()
	}
	if err := exportDisk(out, plain, plain.Size(), plain.Runs(), o); err != nil {
		return err
	}
	for _, l := range od.Links {
		if l.Encrypted {
			fmt.Fprintf(c.App.ErrWriter, "%s: decrypted with the key from %s (%s); modelled format (XTS-AES-256, tweak = LBA)\n", l.File, l.Source, l.Locker)
		}
	}
	return nil
}
