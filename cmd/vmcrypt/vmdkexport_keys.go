package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

// `vmdk export` of encrypted disks: vmdkExport (vmdkcmd.go) hands an
// encrypted disk here, which opens each link's key with the key options
// (never a prompt) through recover.OpenDisk and exports the plaintext
// through the same exportDisk seam.

// vmdkExportEncrypted exports the encrypted disk named by the command's
// argument to out, decrypted.
func vmdkExportEncrypted(c *cli.Context, out string, o vmdkExportOptions) error {
	vo := &vmdk.OpenOptions{AllowUnsafePaths: c.Bool("allow-unsafe-paths"), AllowCIDMismatch: c.Bool("allow-cid-mismatch"), ScanTruncatedStreams: c.Bool("scan-truncated-stream")}
	// Keys come only from the key options (no prompt): with none, opening
	// the disk's key fails naming the key it needs (exit 4).
	srcs, err := keySources(c, false)
	if err != nil {
		return err
	}
	od, err := recover.OpenDisk(c.Args().First(), keys.NewResolver(srcs...), vo)
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
