package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// providerSources builds the KEK-file, NKP-backup and KMIP sources from --kek
// (repeatable: a JSON file, a sealed kit or a folder of raw keys), --nkp-backup
// (repeatable) and --nkp-password-file (repeatable), else
// VMCRYPT_NKP_PASSWORD, else the empty password, and the KMIP options
// (keyopts_kmip.go; last, so that a key a file holds is not asked of the
// KMS). Every backup is opened here, so a wrong
// password (exit 3) or a damaged file (exit 5) stops before any work.
func providerSources(c *cli.Context) ([]keys.Source, error) {
	var srcs []keys.Source
	for _, p := range c.StringSlice("kek") {
		kf, err := openKEK(c, p)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, kf)
	}
	backups := c.StringSlice("nkp-backup")
	files := c.StringSlice("nkp-password-file")
	if len(backups) == 0 {
		if len(files) > 0 {
			return nil, usagef("--nkp-password-file needs --nkp-backup")
		}
		return appendKMIP(c, srcs)
	}
	// Backups of different providers may have different passwords: each
	// opens with the first password given that fits it.
	var pws [][]byte
	for _, f := range files {
		pw, err := readSecretFile(f)
		if err != nil {
			return nil, err
		}
		pws = append(pws, pw)
	}
	if v, ok := os.LookupEnv(envNKPPassword); ok && len(files) == 0 {
		pws = append(pws, []byte(v))
	}
	noPassword := len(pws) == 0
	if noPassword {
		pws = [][]byte{nil} // the empty password
	}
	for _, p := range backups {
		var s *keys.NKPBackup
		var err error
		for _, pw := range pws {
			if s, err = keys.OpenNKPBackup(p, pw); err == nil || !errors.Is(err, keysafe.ErrWrongKey) {
				break
			}
		}
		if err != nil {
			switch {
			case errors.Is(err, keysafe.ErrWrongKey) && noPassword:
				err = fmt.Errorf("no password was given (--nkp-password-file or %s) and the backup is not password-less: %w", envNKPPassword, err)
			case errors.Is(err, keysafe.ErrWrongKey) && len(pws) > 1:
				err = fmt.Errorf("none of the %d passwords given opens it: %w", len(pws), err)
			}
			return nil, err
		}
		srcs = append(srcs, s)
	}
	return appendKMIP(c, srcs)
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
