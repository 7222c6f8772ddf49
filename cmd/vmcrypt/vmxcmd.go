package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The vmx command: decrypt, encrypt and export password hashes of a VMX.
// Shared VMX helpers (finding, reading, opening) live here too.

func init() {
	outFlags := []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `OUT` (required; a temp file in its folder, renamed when complete)"},
		&cli.BoolFlag{Name: "force", Usage: "replace OUT if it exists"},
	}
	register(&cli.Command{
		Name:  "vmx",
		Usage: "decrypt or encrypt a .vmx file, export its passphrase hash, change its passphrase or settings",
		Subcommands: append([]*cli.Command{
			{
				Name:      "decrypt",
				Usage:     "write the VMX with its encryption.data decrypted (plain header lines, then the settings)",
				ArgsUsage: "VMX -o OUT",
				Flags:     append(append([]cli.Flag{}, outFlags...), keyFlags()...),
				Action:    vmxDecrypt,
			},
			{
				Name:      "encrypt",
				Usage:     "encrypt a plain VMX under a passphrase (the inverse of decrypt)",
				ArgsUsage: "VMX -o OUT --passphrase-file F",
				Flags: append(append([]cli.Flag{}, outFlags...),
					&cli.StringFlag{Name: "passphrase-file", Usage: "read the new passphrase from `FILE`; or set " + envPassphrase},
					&cli.StringFlag{Name: "cipher", Value: "aes-256", Usage: "`CIPHER` of the key safe and config key: aes-256 (Workstation) or xts-aes-256"},
					&cli.IntFlag{Name: "rounds", Value: keysafe.DefaultRounds, Usage: "PBKDF2 `ROUNDS`"},
				),
				Action: vmxEncrypt,
			},
			{
				Name:      "hash",
				Usage:     "print the passphrase hash for hashcat (mode 27400) or John the Ripper",
				ArgsUsage: "VMX",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "format", Value: "hashcat", Usage: "`FORMAT`: hashcat or john"},
				},
				Action: vmxHash,
			},
		}, vmxChangeCommands()...),
	})
}

// vmOneArg returns the single positional argument of a command (flags may
// follow it).
func vmOneArg(c *cli.Context, what string) (string, error) {
	pos := c.Args().Slice()
	if len(pos) != 1 {
		return "", usagef("%s takes one %s (got %d arguments)", c.Command.FullName(), what, len(pos))
	}
	return pos[0], nil
}

// vmLocateVMX resolves PATH (a VM folder or a .vmx file) to the .vmx file. A
// folder must hold exactly one .vmx.
func vmLocateVMX(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return path, nil
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return "", err
	}
	var found []string
	for _, e := range ents {
		if !e.IsDir() && strings.EqualFold(filepath.Ext(e.Name()), ".vmx") {
			found = append(found, e.Name())
		}
	}
	sort.Strings(found)
	switch len(found) {
	case 0:
		return "", usagef("no .vmx file in %s", path)
	case 1:
		return filepath.Join(path, found[0]), nil
	}
	return "", usagef("%s holds %d .vmx files (%s): name one", path, len(found), strings.Join(found, ", "))
}

// vmLoadVMX takes the command's single argument (a VM folder or a .vmx),
// finds the .vmx and reads it.
func vmLoadVMX(c *cli.Context, what string) (string, *vmx.File, error) {
	arg, err := vmOneArg(c, what)
	if err != nil {
		return "", nil, err
	}
	path, err := vmLocateVMX(arg)
	if err != nil {
		return "", nil, err
	}
	vf, err := vmReadVMX(path)
	if err != nil {
		return "", nil, err
	}
	return path, vf, nil
}

// vmReadVMX opens a .vmx read-only and parses it; a folder is a usage
// error.
func vmReadVMX(path string) (*vmx.File, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, usagef("%s is a folder, not a .vmx file", path)
	}
	return vmx.ReadFile(path)
}

// vmOpenedVM is an encrypted VMX opened with the user's keys.
type vmOpenedVM struct {
	key       *keysafe.Key
	opened    keys.Opened
	decrypted *vmx.Decrypted
}

// vmOpenVMX unlocks the key safe of vf with srcs and decrypts its settings.
func vmOpenVMX(path string, vf *vmx.File, srcs []keys.Source) (*vmOpenedVM, error) {
	return vmOpenVMXWith(path, vf, keys.NewResolver(srcs...))
}

// vmOpenVMXWith is vmOpenVMX with a given resolver (shared with the disks,
// so a passphrase is derived once per salt).
func vmOpenVMXWith(path string, vf *vmx.File, res *keys.Resolver) (*vmOpenedVM, error) {
	ks, err := vf.KeySafe()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if ks == nil {
		return nil, fmt.Errorf("%s is not encrypted (no %s)", path, vmx.KeyKeySafe)
	}
	k, op, err := res.Open(ks)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	d, err := vmx.Decrypt(vf, k)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &vmOpenedVM{key: k, opened: op, decrypted: d}, nil
}

// vmPromptFor says whether to prompt for a passphrase when no key source
// was given: only when the key safe has a passphrase pair (a VM locked by a
// key provider then fails with "key not supplied", naming the key).
func vmPromptFor(vf *vmx.File) bool {
	ks, err := vf.KeySafe()
	if err != nil || ks == nil {
		return true
	}
	for _, p := range ks.Pairs() {
		if p.Locker != nil && p.Locker.Type == keysafe.TypePhrase {
			return true
		}
	}
	return false
}

// vmxCheckOutput refuses, before any work, an OUT that exists without
// --force or that is the input itself.
func vmxCheckOutput(c *cli.Context, in string) (string, error) {
	out := c.String("output")
	if out == "" {
		return "", usagef("%s needs -o OUT", c.Command.FullName())
	}
	if _, err := os.Stat(out); err == nil && !c.Bool("force") {
		return "", usagef("%s exists; use --force to replace it", out)
	}
	same := false
	if a, err := filepath.Abs(in); err == nil {
		if b, err := filepath.Abs(out); err == nil && a == b {
			same = true
		}
	}
	if ist, err := os.Stat(in); err == nil {
		if ost, err := os.Stat(out); err == nil && os.SameFile(ist, ost) {
			same = true // a link to the input
		}
	}
	if same {
		return "", usagef("output %s is the input: vmcrypt never writes over its inputs", out)
	}
	return out, nil
}

func vmxDecrypt(c *cli.Context) error {
	in, vf, err := vmLoadVMX(c, "VMX")
	if err != nil {
		return err
	}
	out, err := vmxCheckOutput(c, in)
	if err != nil {
		return err
	}
	srcs, err := keySources(c, vmPromptFor(vf))
	if err != nil {
		return err
	}
	vm, err := vmOpenVMX(in, vf, srcs)
	if err != nil {
		return err
	}
	if err := writeNewFile(out, vm.decrypted.Bytes(), c.Bool("force")); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s: opened by %s (%s); wrote %s (%d bytes of settings)\n",
		in, vm.opened.Source, vm.opened.Locker, out, len(vm.decrypted.Text))
	return nil
}

func vmxEncrypt(c *cli.Context) error {
	in, err := vmOneArg(c, "VMX")
	if err != nil {
		return err
	}
	out, err := vmxCheckOutput(c, in)
	if err != nil {
		return err
	}
	var cipherName string
	switch strings.ToLower(c.String("cipher")) {
	case "aes-256":
		cipherName = keysafe.CipherAES256
	case "xts-aes-256":
		cipherName = keysafe.CipherXTSAES256
	default:
		return usagef("--cipher must be aes-256 or xts-aes-256, not %q", c.String("cipher"))
	}
	rounds := c.Int("rounds")
	if rounds < 1 || rounds > keysafe.MaxRounds {
		return usagef("--rounds must be 1..%d", keysafe.MaxRounds)
	}
	vf, err := vmReadVMX(in)
	if err != nil {
		return err
	}
	pass, ok, err := passphraseFromFlags(c)
	if err != nil {
		return err
	}
	if !ok {
		if pass, err = promptSecret(c, "New passphrase"); err != nil {
			return err
		}
	}
	if len(pass) == 0 {
		return usagef("the passphrase is empty")
	}
	lock := func(k *keysafe.Key) (*keysafe.Locator, error) {
		p, err := keysafe.LockPhrase(k, pass, cipherName, rounds, rand.Reader)
		if err != nil {
			return nil, err
		}
		return keysafe.NewList(p), nil
	}
	enc, _, err := vmx.Encrypt(vf, lock, vmx.EncryptOptions{Cipher: cipherName}, rand.Reader)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	// Verify before writing: the result must open with the passphrase
	// and give back the body.
	if _, err := vmOpenVMX(out, enc, []keys.Source{keys.NewPassphrase(pass)}); err != nil {
		return fmt.Errorf("internal check of the encrypted VMX failed: %w", err)
	}
	if err := writeNewFile(out, enc.Bytes(), c.Bool("force")); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s: encrypted (%s, PBKDF2 %d rounds) to %s\n", in, cipherName, rounds, out)
	return nil
}

func vmxHash(c *cli.Context) error {
	format := strings.ToLower(c.String("format"))
	if format != "hashcat" && format != "john" {
		return usagef("--format must be hashcat or john, not %q", c.String("format"))
	}
	in, vf, err := vmLoadVMX(c, "VMX")
	if err != nil {
		return err
	}
	ks, err := vf.KeySafe()
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if ks == nil {
		return fmt.Errorf("%s is not encrypted: there is no passphrase hash", in)
	}
	n := 0
	for _, p := range ks.Pairs() {
		if p.Locker == nil || p.Locker.Type != keysafe.TypePhrase {
			continue
		}
		var line string
		if format == "john" {
			line, err = keysafe.JohnLine(p)
		} else {
			line, err = keysafe.HashcatLine(p)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", in, err)
		}
		fmt.Fprintln(c.App.Writer, line)
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s: the key safe has no passphrase pair (it is locked by a key provider; nothing to crack offline): %w", in, keysafe.ErrUnsupported)
	}
	return nil
}
