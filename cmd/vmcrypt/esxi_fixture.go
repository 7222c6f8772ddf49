package main

import (
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/fixtures"
)

// esxiFixtureAction is `vmcrypt fixture --esxi OUTDIR`: the ESXi host
// fixture (package fixtures, esxi.go).
func esxiFixtureAction(c *cli.Context, out string) error {
	for _, f := range []string{"provider", "snapshot", "memory", "vtpm", "partial", "from", "negative", "disk", "size", "layout", "cipher", "name"} {
		if c.IsSet(f) {
			return usagef("fixture --esxi: --%s is for VM fixtures", f)
		}
	}
	fx, err := fixtures.GenerateESXi(out, c.Uint64("seed"))
	if err != nil {
		return err
	}
	m := fx.Manifest
	w := c.App.Writer
	if c.Bool("json") {
		return printJSON(w, m)
	}
	fmt.Fprintf(w, "ESXi fixture %s\n", out)
	fmt.Fprintf(w, "  configuration: key id %s, local.tgz %d bytes, sha256 %s\n", m.Config.KeyID, m.Config.LocalTgzSize, m.Config.LocalTgzSHA256)
	fmt.Fprintf(w, "  core dump:     %s, host key id %s, %d bytes, sha256 %s\n", filepath.Join(out, m.Dump.File), m.Dump.KeyID, m.Dump.PayloadSize, m.Dump.PayloadSHA256)
	fmt.Fprintf(w, "  secrets:       %s, %s\n", filepath.Join(out, m.Secrets.KEKFile), filepath.Join(out, m.HostKey))
	fmt.Fprintf(w, "  cases:\n")
	for _, cs := range m.Cases {
		fmt.Fprintf(w, "    exit %d  %s\n", cs.ExitCode, cs.Command)
	}
	fmt.Fprintf(w, "  recipe:        %s\n", filepath.Join(out, fixtures.ESXiManifestName))
	fmt.Fprintf(c.App.ErrWriter, "note: seeded keys, for tests and demos only\n")
	return nil
}
