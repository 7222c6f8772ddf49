package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/vm"
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

// vmLoadVMX takes the command's single argument (a VM folder or a .vmx),
// finds the .vmx (vm.FindVMX) and reads it, for commands that change the
// VMX file itself.
func vmLoadVMX(c *cli.Context, what string) (string, *vmx.File, error) {
	arg, err := vmOneArg(c, what)
	if err != nil {
		return "", nil, err
	}
	path, err := vm.FindVMX(arg)
	if err != nil {
		return "", nil, err
	}
	vf, err := vmx.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	return path, vf, nil
}

// vmxCheckOutput refuses, before any work, an OUT that exists without
// --force or that is the input itself.
func vmxCheckOutput(c *cli.Context, in string) (string, error) {
	out := c.String("output")
	if out == "" {
		return "", usagef("%s needs -o OUT", c.Command.FullName())
	}
	if err := refuseInputs(c, out, in); err != nil {
		return "", err
	}
	if _, err := os.Stat(out); err == nil && !c.Bool("force") {
		return "", usagef("%s exists; use --force to replace it", out)
	}
	return out, nil
}

func vmxDecrypt(c *cli.Context) error {
	arg, err := vmOneArg(c, "VMX")
	if err != nil {
		return err
	}
	in, err := vm.FindVMX(arg)
	if err != nil {
		return err
	}
	out, err := vmxCheckOutput(c, in)
	if err != nil {
		return err
	}
	v, err := vmOpen(c, in, vmOpenMode{depth: vm.SettingsOnly, prompt: true})
	if err != nil {
		return err
	}
	defer v.Close()
	if !v.Encrypted() {
		return fmt.Errorf("%s: nothing to decrypt: %w", in, vm.ErrNotEncrypted)
	}
	if err := writeNewFile(out, v.Decrypted.Bytes(), c.Bool("force")); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s: opened by %s (%s); wrote %s (%d bytes of settings)\n",
		in, v.Opened.Source, v.Opened.Locker, out, len(v.Decrypted.Text))
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
	vf, err := vmx.ReadFile(in)
	if err != nil {
		return err
	}
	if ks, err := vf.KeySafe(); err != nil || ks != nil {
		if err == nil {
			err = fmt.Errorf("%s is already encrypted: %w", in, keysafe.ErrUnsupported)
		}
		return err
	}
	pass, ok, err := passphraseFromFlags(c)
	if err != nil {
		return err
	}
	if !ok {
		if pass, err = promptNewSecret(c, "New passphrase"); err != nil {
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
	if err := vmxCheckOpens(c, enc, pass); err != nil {
		return fmt.Errorf("internal check of the encrypted VMX failed: %w", err)
	}
	if err := writeNewFile(out, enc.Bytes(), c.Bool("force")); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s: encrypted (%s, PBKDF2 %d rounds) to %s\n", in, cipherName, rounds, out)
	return nil
}

// vmxCheckOpens proves that an encrypted VMX (in memory) opens with pass.
func vmxCheckOpens(c *cli.Context, f *vmx.File, pass []byte) error {
	ks, err := f.KeySafe()
	if err != nil {
		return err
	}
	k, _, err := keys.NewResolver(keys.NewPassphrase(pass)).Open(c.Context, ks)
	if err != nil {
		return err
	}
	_, err = vmx.Decrypt(f, k)
	return err
}

func vmxHash(c *cli.Context) error {
	format := strings.ToLower(c.String("format"))
	if format != "hashcat" && format != "john" {
		return usagef("--format must be hashcat or john, not %q", c.String("format"))
	}
	arg, err := vmOneArg(c, "VMX")
	if err != nil {
		return err
	}
	v, err := vm.OpenVM(c.Context, arg, &vm.Options{Depth: vm.SettingsOnly})
	if err != nil {
		return err
	}
	defer v.Close()
	in, ks := v.VMXPath, v.KeySafe
	if ks == nil {
		return fmt.Errorf("%s: there is no passphrase hash: %w", in, vm.ErrNotEncrypted)
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
