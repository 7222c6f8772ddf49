package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/keys/kit"
)

// --kek FILE also opens a sealed kit (`kms export --seal-passphrase-file`,
// recover/keys/kit): its passphrase comes from --passphrase-file or
// VMCRYPT_PASSPHRASE, else a no-echo prompt on a terminal. A wrong
// passphrase is exit 3, a damaged kit exit 5.

// openKEK opens a --kek argument: a KEK JSON file, a folder of raw keys,
// or a sealed kit.
func openKEK(c *cli.Context, path string) (keys.Source, error) {
	data, sealed, err := readIfSealed(path)
	if err != nil {
		return nil, err
	}
	if !sealed {
		return keys.OpenKEKFile(path)
	}
	pass, ok, err := passphraseFromFlags(c)
	if err != nil {
		return nil, err
	}
	if !ok {
		if !term.IsTerminal(int(os.Stdin.Fd())) {
			return nil, usagef("%s is a sealed key kit: give its passphrase with --passphrase-file or %s", path, envPassphrase)
		}
		if pass, err = promptSecret(c, "Passphrase of the sealed kit "+path); err != nil {
			return nil, err
		}
	}
	defer clear(pass)
	plain, err := kit.Open(data, pass, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	defer clear(plain)
	return keys.ParseKEKJSON(path, plain)
}

// readIfSealed reads path whole when it is a regular file that starts
// like a sealed kit (at most kit.MaxSealedSize bytes are read).
func readIfSealed(path string) ([]byte, bool, error) {
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() {
		return nil, false, nil // keys.OpenKEKFile says what is wrong
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, false, nil
	}
	defer f.Close()
	head := make([]byte, len(kit.Magic))
	n, _ := io.ReadFull(f, head)
	if !kit.IsSealed(head[:n]) {
		return nil, false, nil
	}
	rest, err := io.ReadAll(io.LimitReader(f, kit.MaxSealedSize+1-int64(n)))
	if err != nil {
		return nil, true, fmt.Errorf("sealed kit %s: %w", path, err)
	}
	return append(head[:n], rest...), true, nil
}
