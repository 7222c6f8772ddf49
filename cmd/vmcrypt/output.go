package main

import (
	"errors"
	"os"
	"path/filepath"
)

// writeNewFile writes data to a temp file in path's folder (mode 0600: it
// may be a key or decrypted settings), syncs it, and moves it to path: a
// hard link that fails when path exists, or a rename when replace is true.
func writeNewFile(path string, data []byte, replace bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name)
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if replace {
		return os.Rename(name, path)
	}
	err = os.Link(name, path)
	if errors.Is(err, os.ErrExist) {
		return usagef("%s exists; use --force to replace it", path)
	}
	if err != nil {
		// A file system without hard links: check, then rename.
		if _, serr := os.Lstat(path); serr == nil {
			return usagef("%s exists; use --force to replace it", path)
		}
		return os.Rename(name, path)
	}
	return nil
}
