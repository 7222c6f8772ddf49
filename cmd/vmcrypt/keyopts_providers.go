package main

import (
	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/keys"
)

// providerSources builds the KEK-file and NKP-backup sources from --kek,
// --nkp-backup and --nkp-password-file.
// TODO(key providers issue): KEK files and NKP backups.
func providerSources(c *cli.Context) ([]keys.Source, error) {
	if len(c.StringSlice("kek")) > 0 || len(c.StringSlice("nkp-backup")) > 0 {
		return nil, usagef("--kek and --nkp-backup are not wired yet")
	}
	return nil, nil
}
