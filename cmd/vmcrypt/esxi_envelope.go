package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vmcrypt/vmcrypt/recover/esxi"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// esxi envelope: decrypt any DataTransformEnvelope with a key found by
// the envelope's key id.

func esxiEnvelopeAction(c *cli.Context) error {
	in, err := vmOneArg(c, "FILE")
	if err != nil {
		return err
	}
	out := c.String("output")
	if out == "" {
		return usagef("esxi envelope: -o OUT is required")
	}
	if err := esxiSameFile(out, in); err != nil {
		return err
	}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.IsDir() {
		return usagef("%s is a folder, not an envelope", in)
	}
	off := c.Int64("offset")
	size := st.Size()
	if off < 0 {
		return usagef("--offset must not be negative")
	}
	if off > 0 {
		if size, err = esxi.FindEnd(in, f, off, st.Size()); err != nil {
			return err
		}
	}
	e, err := esxi.ParseAt(in, f, off, size)
	if err != nil {
		return err
	}
	ctx, stop := esxiSignals(c)
	defer stop()
	key, source, err := esxiEnvelopeKey(ctx, c, e)
	if err != nil {
		return err
	}
	opt := esxi.DecryptOptions{}
	if c.IsSet("context") {
		opt.Contexts = []string{c.String("context")}
	}
	bar := esxiProgressBar(c, e.DataSize)
	if bar != nil {
		var last int64
		opt.Progress = func(done, _ int64) { bar.Add64(done - last); last = done }
	}
	var res *esxi.Result
	sum, n, err := esxiWriteStream(out, c.Bool("force"), func(w io.Writer) error {
		var err error
		res, err = e.Decrypt(key, ctxWriter{ctx, w}, opt)
		return err
	})
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s: envelope at offset %d (%d bytes, key id %s) opened by %s\n", in, off, size, e.KeyID, source)
	fmt.Fprintf(c.App.Writer, "  key hash and GCM tag verified (context %q)\n", res.Context)
	fmt.Fprintf(c.App.Writer, "wrote %s (%d bytes, sha256 %s)\n", out, n, sum)
	return nil
}

// esxiEnvelopeKey finds the key for e: --key-hex-file, else every KEK
// source by the envelope's key id. A key that fails the key hash is
// tried against the next source; if none fits, the wrong-key error (3)
// wins over the missing-key one (4).
func esxiEnvelopeKey(ctx context.Context, c *cli.Context, e *esxi.Envelope) ([]byte, string, error) {
	if p := c.String("key-hex-file"); p != "" {
		key, err := esxiReadHexKey(p)
		if err != nil {
			return nil, "", err
		}
		if err := e.CheckKey(key); err != nil {
			return nil, "", fmt.Errorf("the key in %s: %w", p, err)
		}
		return key, "key file " + p, nil
	}
	srcs, err := keySources(c, false)
	if err != nil {
		return nil, "", err
	}
	provider := c.String("provider")
	var wrong error
	var hints []string
	tried := 0
	for _, src := range srcs {
		s, ok := src.(keys.KEKSource)
		if !ok {
			continue // a passphrase opens VMs, not host keys
		}
		tried++
		kek, err := s.KEK(ctx, provider, e.KeyID)
		var nf *keysafe.KeyNotFoundError
		switch {
		case errors.As(err, &nf):
			if nf.Hint != "" {
				hints = append(hints, nf.Hint)
			}
			continue
		case errors.Is(err, keysafe.ErrKeyNotFound), errors.Is(err, keysafe.ErrWrongKey):
			continue
		case err != nil:
			return nil, "", fmt.Errorf("%s: %w", s.Name(), err)
		}
		if err := e.CheckKey(kek); err != nil {
			wrong = fmt.Errorf("%s holds key id %s, but %w", s.Name(), e.KeyID, err)
			continue
		}
		return kek, s.Name(), nil
	}
	if wrong != nil {
		return nil, "", wrong
	}
	hint := "give the host key: --kek FILE (by key id) or --key-hex-file FILE"
	if tried > 0 {
		hint = fmt.Sprintf("none of the %d key sources holds it", tried)
	}
	if len(hints) > 0 {
		hint += "; " + strings.Join(hints, "; ")
	}
	prov := provider
	if prov == "" {
		prov = "host key (KMS)"
	}
	return nil, "", fmt.Errorf("%s: %w", e.File, &keysafe.KeyNotFoundError{Provider: prov, KeyID: e.KeyID, Hint: hint})
}

// esxiReadHexKey reads a 32-byte key written in hex (white space and a
// trailing newline allowed) from a file (never from argv).
func esxiReadHexKey(p string) ([]byte, error) {
	b, err := readSecretFile(p)
	if err != nil {
		return nil, err
	}
	s := strings.Join(strings.Fields(string(b)), "")
	key, err := hex.DecodeString(s)
	clear(b)
	if err != nil || len(key) != 32 {
		return nil, usagef("%s: want a 32-byte key as 64 hex digits", p)
	}
	return key, nil
}

// esxiProgressBar draws progress on stderr when it is a terminal (or
// --progress).
func esxiProgressBar(c *cli.Context, total int64) *progressbar.ProgressBar {
	f, ok := c.App.ErrWriter.(*os.File)
	if !ok || total == 0 || (!c.Bool("progress") && !term.IsTerminal(int(f.Fd()))) {
		return nil
	}
	return progressbar.NewOptions64(total, progressbar.OptionSetWriter(f), progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription("decrypt"), progressbar.OptionThrottle(200_000_000), progressbar.OptionClearOnFinish())
}
