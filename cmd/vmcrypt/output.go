package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"

	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
)

// writeNewFile writes data to a temp file in path's folder (mode 0600: it
// may be a key or decrypted settings), syncs it, and moves it to path: a
// hard link that fails when path exists, or a rename when replace is true.
func writeNewFile(path string, data []byte, replace bool) error {
	_, _, err := writeStream(path, replace, func(w io.Writer) error {
		_, err := io.Copy(w, bytes.NewReader(data))
		return err
	})
	return err
}

// writeStream writes what fill produces to path the same way (package
// outfile: a locked temporary, removed on failure or signal, renamed when
// complete) and returns the sha256 and size of what was written.
func writeStream(path string, replace bool, fill func(io.Writer) error) (string, int64, error) {
	outfile.RemoveStale(filepath.Dir(path)) // a killed run's temporaries may hold secrets
	f, err := outfile.Create(path, 0o600, replace)
	if errors.Is(err, outfile.ErrExists) {
		return "", 0, usagef("%s exists; use --force to replace it", path)
	}
	if err != nil {
		return "", 0, err
	}
	defer f.Abort()
	if err := f.Chmod(0o600); err != nil {
		return "", 0, err
	}
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := fill(cw); err != nil {
		return "", 0, err
	}
	if err := f.Commit(replace); err != nil {
		if errors.Is(err, outfile.ErrExists) {
			return "", 0, usagef("%s exists; use --force to replace it", path)
		}
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}
