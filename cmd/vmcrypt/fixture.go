package main

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/fixtures"
)

// The fixture command builds an encrypted VM folder from a seed, with its
// secrets and recipe beside it (package fixtures).

func init() {
	register(&cli.Command{
		Name:  "fixture",
		Usage: "make an encrypted test VM (seeded keys: for tests and demos only)",
		Description: "Writes OUTDIR/vm/ (the VM folder: .vmx, disks, .nvram, .vswp), OUTDIR/secrets/\n" +
			"(passphrase.txt | kek.json | backup.p12 + nkp-password.txt) and OUTDIR/fixture.json\n" +
			"(recipe, key ids, sha256 of every plaintext, expected outcome). Every key, salt and IV\n" +
			"derives from --seed: anyone with the recipe has the keys. Never use it for real data.",
		ArgsUsage: "OUTDIR",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "provider", Usage: "passphrase | kms | nkp (required)"},
			&cli.StringFlag{Name: "cipher", Value: fixtures.CipherXTSAES256, Usage: "config and data-file key cipher: aes-256 | xts-aes-256 (key providers: xts-aes-256)"},
			&cli.StringFlag{Name: "disk", Value: "monolithicSparse", Usage: "monolithicSparse | monolithicFlat | streamOptimized | twoGbMaxExtentSparse"},
			&cli.StringFlag{Name: "size", Value: "2M", Usage: "virtual disk size (bytes, or with K/M/G/T), a multiple of 64K, at least 1M"},
			&cli.StringFlag{Name: "layout", Value: string(fixtures.LayoutMBRExt4), Usage: "disk content: mbr-ext4 | gpt-ntfs"},
			&cli.BoolFlag{Name: "snapshot", Usage: "add a snapshot delta NAME-000001.vmdk with its own key; the VMX points at it"},
			&cli.BoolFlag{Name: "memory", Usage: "with --snapshot: the snapshot keeps memory (encrypted NAME-Snapshot1.vmsn, plain NAME.vmsd)"},
			&cli.BoolFlag{Name: "vtpm", Usage: "vTPM state in the .nvram, vtpm.present = \"TRUE\""},
			&cli.BoolFlag{Name: "partial", Usage: "Workstation partial encryption: only the VMX and .nvram (vTPM) are encrypted"},
			&cli.StringFlag{Name: "from", Usage: "use the raw image `RAW` as disk content (sparse-aware) instead of generated content"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of every key, salt, IV and content byte"},
			&cli.IntFlag{Name: "bundle", DefaultText: "176, the model's single key dict", Usage: "`BYTES` of locked data of key-provider pairs: 272 or 288 as real vCenter bundles"},
			&cli.StringFlag{Name: "negative", Usage: "break one thing: " + strings.Join(fixtures.Negatives(), " | ")},
			&cli.StringFlag{Name: "name", Value: fixtures.DefaultName, Usage: "file base name of the VM"},
			&cli.BoolFlag{Name: "json", Usage: "print fixture.json instead of a summary"},
			&cli.BoolFlag{Name: "esxi", Usage: "make the ESXi host fixture instead (esxi_fixture.go): encrypted configuration, core dump, negatives"},
		}, kmipFlags()...), // --provider kms --kmip ...: the KEK is made on that KMS
		Action: fixtureAction,
	})
}

func fixtureAction(c *cli.Context) error {
	args := c.Args().Slice() // flags after OUTDIR: main's interspersed moved them
	if len(args) != 1 {
		return usagef("fixture: want one OUTDIR, got %d arguments", len(args))
	}
	out := args[0]
	if c.Bool("esxi") {
		return esxiFixtureAction(c, out)
	}
	r := fixtures.Recipe{
		Name:     c.String("name"),
		Provider: c.String("provider"),
		Cipher:   c.String("cipher"),
		Disk:     c.String("disk"),
		Layout:   fixtures.Layout(c.String("layout")),
		Snapshot: c.Bool("snapshot"),
		Memory:   c.Bool("memory"),
		VTPM:     c.Bool("vtpm"),
		Partial:  c.Bool("partial"),
		From:     c.String("from"),
		Seed:     c.Uint64("seed"),
		Negative: c.String("negative"),
		Bundle:   c.Int("bundle"),
	}
	if r.From == "" {
		n, err := fixtures.ParseSize(c.String("size"))
		if err != nil {
			return usagef("fixture: %v", err)
		}
		r.Size = n
	} else if abs, err := filepath.Abs(r.From); err == nil {
		r.From = abs
	}
	if err := r.Normalize(); err != nil {
		return usagef("fixture: %v", err)
	}
	if err := fixtureKMSKey(c, &r); err != nil {
		return err
	}
	if r.KMS != nil {
		defer clear(r.KMS.Key)
	}
	fx, err := fixtures.GenerateContext(c.Context, out, r)
	if err != nil {
		return err
	}
	defer fx.Close()
	m := fx.Manifest
	w := c.App.Writer
	if c.Bool("json") {
		b, err := json.MarshalIndent(m, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n", b)
		return nil
	}
	fmt.Fprintf(w, "fixture %s\n", out)
	fmt.Fprintf(w, "  VM:       %s\n", filepath.Join(out, m.VMX))
	for _, f := range m.Files {
		if f != m.VMX {
			fmt.Fprintf(w, "            %s\n", filepath.Join(out, f))
		}
	}
	for _, s := range []string{m.Secrets.PassphraseFile, m.Secrets.KEKFile, m.Secrets.NKPBackup, m.Secrets.NKPPasswordFile} {
		if s != "" {
			fmt.Fprintf(w, "  secret:   %s\n", filepath.Join(out, s))
		}
	}
	fmt.Fprintf(w, "  provider: %s", m.Keys.Provider)
	if m.Keys.KeyID != "" {
		fmt.Fprintf(w, ", key id %s", m.Keys.KeyID)
	}
	if m.Keys.KDKID != "" {
		fmt.Fprintf(w, ", KDK %s", m.Keys.KDKID)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  disk:     %s, sha256 %s\n", r.Disk, m.SHA256.Disk)
	fmt.Fprintf(w, "  expect:   %s (exit %d)", m.Expect, m.ExitCode)
	if m.Why != "" {
		fmt.Fprintf(w, ": %s", m.Why)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  recipe:   %s\n", filepath.Join(out, fixtures.ManifestName))
	fmt.Fprintf(c.App.ErrWriter, "note: seeded keys, for tests and demos only\n")
	return nil
}
