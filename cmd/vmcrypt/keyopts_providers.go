package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/keys"
)

// providerSources builds the KEK-file and NKP-backup sources from --kek
// (repeatable: a JSON file or a folder of raw keys), --nkp-backup
// (repeatable) and --nkp-password-file / VMCRYPT_NKP_PASSWORD (the empty
// password when neither is set). Every backup is opened here, so a wrong
// password (exit 3) or a damaged file (exit 5) stops before any work.
func providerSources(c *cli.Context) ([]keys.Source, error) {
	var srcs []keys.Source
	for _, p := range c.StringSlice("kek") {
		kf, err := keys.OpenKEKFile(p)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, kf)
	}
	backups := c.StringSlice("nkp-backup")
	if len(backups) == 0 {
		if c.String("nkp-password-file") != "" {
			return nil, usagef("--nkp-password-file needs --nkp-backup")
		}
		return srcs, nil
	}
	pw, err := nkpPassword(c, "nkp-password-file")
	if err != nil {
		return nil, err
	}
	for _, p := range backups {
		s, err := keys.OpenNKPBackup(p, pw)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, s)
	}
	return srcs, nil
}

// nkpPassword returns the NKP backup password from the named --*-file flag,
// else VMCRYPT_NKP_PASSWORD, else the empty password (vCenter's export makes
// it optional).
func nkpPassword(c *cli.Context, flag string) ([]byte, error) {
	pw, _, err := nkpPasswordGiven(c, flag)
	return pw, err
}

// nkpPasswordGiven is nkpPassword that also says whether the flag or the
// environment variable was set.
func nkpPasswordGiven(c *cli.Context, flag string) (pw []byte, given bool, err error) {
	if f := c.String(flag); f != "" {
		pw, err = readSecretFile(f)
		return pw, err == nil, err
	}
	if v, ok := os.LookupEnv(envNKPPassword); ok {
		return []byte(v), true, nil
	}
	return nil, false, nil
}
