package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vmcrypt/vmcrypt/recover/keys"
)

// Key options, shared by every command that needs keys. Secrets never come
// from argv: a --*-file, an environment variable, or a no-echo prompt.
const (
	envPassphrase  = "VMCRYPT_PASSPHRASE"
	envNKPPassword = "VMCRYPT_NKP_PASSWORD"
	maxSecretFile  = 64 << 10
)

func keyFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "passphrase-file", Usage: "read the VM passphrase (or a sealed kit's) from `FILE` (a leading BOM and one trailing newline are dropped); or set " + envPassphrase},
		&cli.StringSliceFlag{Name: "kek", Usage: "KEK `FILE` (JSON, or a sealed kit: its passphrase as for --passphrase-file) or folder of raw 32-byte keys named by key id; repeatable"},
		&cli.StringSliceFlag{Name: "nkp-backup", Usage: "Native Key Provider backup `FILE` (.p12); repeatable"},
		&cli.StringSliceFlag{Name: "nkp-password-file", Usage: "read an NKP backup password from `FILE` (repeatable: each backup opens with the first that fits); or set " + envNKPPassword + " (empty password if neither)"},
	}, kmipFlags()...)
}

// readSecretFile reads a secret from a file (or a pipe: `<(...)`), dropping
// one leading UTF-8 byte-order mark (Notepad writes one) and one trailing
// "\n" or "\r\n" (editors add one). The content is otherwise kept byte for
// byte; an empty file is an empty secret.
func readSecretFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading secret file %s: %w", path, err)
	}
	if len(b) > maxSecretFile {
		return nil, usagef("secret file %s is larger than %d bytes", path, maxSecretFile)
	}
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	return b, nil
}

// promptSecret asks on the terminal without echo; it fails when stdin is not
// a terminal.
func promptSecret(c *cli.Context, label string) ([]byte, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, usagef("%s needed: use --passphrase-file, %s, or run on a terminal to be prompted", label, envPassphrase)
	}
	fmt.Fprintf(c.App.ErrWriter, "%s: ", label)
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(c.App.ErrWriter)
	return b, err
}

// promptNewSecret asks for a new secret twice on the terminal, without
// echo, and refuses two answers that differ (a typo would lock the user
// out).
func promptNewSecret(c *cli.Context, label string) ([]byte, error) {
	return askTwice(func(l string) ([]byte, error) { return promptSecret(c, l) }, label)
}

// askTwice asks for a secret twice with ask and refuses two answers that
// differ.
func askTwice(ask func(label string) ([]byte, error), label string) ([]byte, error) {
	a, err := ask(label)
	if err != nil {
		return nil, err
	}
	b, err := ask(label + " (again)")
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(a, b) {
		return nil, usagef("the two %s entries differ: nothing was written", strings.ToLower(label))
	}
	return a, nil
}

// passphraseFromFlags returns the passphrase from --passphrase-file or the
// environment; ok is false when neither was given.
func passphraseFromFlags(c *cli.Context) (p []byte, ok bool, err error) {
	if f := c.String("passphrase-file"); f != "" {
		p, err = readSecretFile(f)
		return p, err == nil, err
	}
	if v, set := os.LookupEnv(envPassphrase); set {
		return []byte(v), true, nil
	}
	return nil, false, nil
}

// keySources builds the key sources the user supplied. When no source at all
// was given, prompt is true and stdin is a terminal, it asks for a
// passphrase; otherwise it returns no source (not an error).
func keySources(c *cli.Context, prompt bool) ([]keys.Source, error) {
	var srcs []keys.Source
	p, ok, err := passphraseFromFlags(c)
	if err != nil {
		return nil, err
	}
	if ok {
		srcs = append(srcs, keys.NewPassphrase(p))
	}
	prov, err := providerSources(c)
	if err != nil {
		return nil, err
	}
	srcs = append(srcs, prov...)
	// Without a terminal there is nobody to ask: no source at all, and the
	// resolver then names the key that is missing (exit 4), as for a
	// key-provider VM without its KEK.
	if len(srcs) == 0 && prompt && term.IsTerminal(int(os.Stdin.Fd())) {
		p, err := promptSecret(c, "Passphrase")
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, keys.NewPassphrase(p))
	}
	return srcs, nil
}

// secretFileFlags are the flags that name key material: files a command
// reads and must never write over.
var secretFileFlags = []string{"passphrase-file", "kek", "nkp-backup", "nkp-password-file", "password-file", "new-passphrase-file", "key-hex-file", "kmip-key", "kmip-cert", "kmip-ca", "kmip-config", "seal-passphrase-file"}

// keyFiles lists the key files the command was given.
func keyFiles(c *cli.Context) []string {
	var out []string
	for _, ctx := range c.Lineage() {
		if ctx.Command == nil {
			continue
		}
		for _, fl := range ctx.Command.Flags {
			name := fl.Names()[0]
			if !slices.Contains(secretFileFlags, name) {
				continue
			}
			switch fl.(type) {
			case *cli.StringFlag:
				if v := ctx.String(name); v != "" {
					out = append(out, v)
				}
			case *cli.StringSliceFlag:
				out = append(out, ctx.StringSlice(name)...)
			}
		}
	}
	return out
}

// refuseInputs refuses (exit 2), --force or not, an output path that is one
// of the inputs: the same path, or the same file through a link. Key files
// given to the command are inputs too.
func refuseInputs(c *cli.Context, out string, inputs ...string) error {
	abs, _ := filepath.Abs(out)
	ost, oerr := os.Stat(out)
	for _, in := range append(inputs, keyFiles(c)...) {
		if in == "" {
			continue
		}
		same := false
		if a, err := filepath.Abs(in); err == nil && a == abs {
			same = true
		}
		if ist, err := os.Stat(in); err == nil && oerr == nil && os.SameFile(ist, ost) {
			same = true
		}
		if same {
			return usagef("output %s is %s, an input of this command: vmcrypt never writes over its inputs (key files included)", out, in)
		}
	}
	return nil
}
