// Package outfile writes outputs the way every vmcrypt command does: under
// a temporary name in the destination's folder, renamed into place only
// when complete and synced, and removed on failure or cancellation.
//
// # Killed runs
//
// A run killed outright (SIGKILL, a power cut) runs no cleanup, and its
// temporaries may hold decrypted data. Every temporary file and staging
// folder is therefore locked (flock on Unix, LockFileEx on Windows) for as
// long as its run lives; RemoveStale, which every writer calls on the
// folder it writes into, removes the temporaries whose lock is free and
// says which. A running writer's temporaries stay locked and are left
// alone.
//
// Temporary names are "." + the final name + Mark + random hex, so a user
// can tell what they were.
package outfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Mark is in the name of every temporary file and staging folder.
const Mark = ".vmcrypt-tmp-"

// lockName is the lock file inside a staging folder.
const lockName = ".lock"

// ErrExists means the final name exists and replacing it was not asked.
var ErrExists = errors.New("output exists")

// TempName returns a fresh temporary name in dir for the final name base.
func TempName(dir, base string) (string, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	return filepath.Join(dir, "."+base+Mark+hex.EncodeToString(rnd[:])), nil
}

// IsTemp reports whether a folder entry name is a vmcrypt temporary.
func IsTemp(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, Mark)
}

// File is an output being written: an *os.File under a temporary name,
// locked until Commit or Abort.
type File struct {
	*os.File
	final string
	done  bool
}

// Create opens a new temporary file for final (in final's folder) with
// mode perm. Unless replace is set, an existing final is refused now
// (ErrExists), and again at Commit.
func Create(final string, perm os.FileMode, replace bool) (*File, error) {
	if !replace {
		if _, err := os.Lstat(final); err == nil {
			return nil, fmt.Errorf("%s: %w", final, ErrExists)
		}
	}
	dir := filepath.Dir(final)
	if st, err := os.Stat(dir); err != nil {
		return nil, err // "DIR does not exist", not the temporary's name
	} else if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a folder", dir)
	}
	name, err := TempName(dir, filepath.Base(final))
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return nil, err
	}
	if err := lock(f); err != nil {
		f.Close()
		os.Remove(name)
		return nil, fmt.Errorf("locking %s: %w", name, err)
	}
	return &File{File: f, final: final}, nil
}

// Final is the name the file gets at Commit.
func (f *File) Final() string { return f.final }

// Commit syncs and closes the file and moves it to its final name: a hard
// link that fails when the name exists (ErrExists), or a rename when
// replace is set (or the file system has no hard links, after a check).
// On failure the temporary is removed.
func (f *File) Commit(replace bool) (err error) {
	if f.done {
		return errors.New("outfile: commit after commit or abort")
	}
	f.done = true
	name := f.Name()
	defer func() {
		if err != nil {
			os.Remove(name)
		}
	}()
	if err := f.Sync(); err != nil {
		f.File.Close()
		return err
	}
	if err := f.File.Close(); err != nil {
		return err
	}
	if err := Place(name, f.final, replace); err != nil {
		return err
	}
	SyncDir(filepath.Dir(f.final))
	return nil
}

// Place moves the complete file tmp to final: a hard link (refused when
// final exists) and the removal of tmp, or a rename when replace is set.
func Place(tmp, final string, replace bool) error {
	if replace {
		return os.Rename(tmp, final)
	}
	err := os.Link(tmp, final)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s: %w", final, ErrExists)
	}
	if err != nil {
		// A file system without hard links: check, then rename.
		if _, serr := os.Lstat(final); serr == nil {
			return fmt.Errorf("%s: %w", final, ErrExists)
		}
		return os.Rename(tmp, final)
	}
	os.Remove(tmp)
	return nil
}

// Abort closes and removes the temporary file. It is safe to call after
// Commit (it then does nothing).
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.File.Close()
	os.Remove(f.Name())
}

// Dir is a staging folder: outputs are written inside it and moved out
// when complete. It is locked until Remove.
type Dir struct {
	Path string
	lock *os.File
}

// MkdirTemp makes a staging folder in parent named for what (e.g. the
// final folder's name, or "recover"), mode 0700, and locks it.
func MkdirTemp(parent, what string) (*Dir, error) {
	name, err := TempName(parent, what)
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(name, 0o700); err != nil {
		return nil, err
	}
	l, err := os.OpenFile(filepath.Join(name, lockName), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		if err = lock(l); err != nil {
			l.Close()
		}
	}
	if err != nil {
		os.RemoveAll(name)
		return nil, fmt.Errorf("locking %s: %w", name, err)
	}
	return &Dir{Path: name, lock: l}, nil
}

// ReadDir lists the staging folder without its lock file.
func (d *Dir) ReadDir() ([]os.DirEntry, error) {
	ents, err := os.ReadDir(d.Path)
	if err != nil {
		return nil, err
	}
	out := ents[:0]
	for _, e := range ents {
		if e.Name() != lockName {
			out = append(out, e)
		}
	}
	return out, nil
}

// Unlock releases the folder's lock and deletes the lock file, so that the
// folder can be renamed into place holding only the outputs.
func (d *Dir) Unlock() {
	if d.lock != nil {
		d.lock.Close()
		os.Remove(d.lock.Name())
		d.lock = nil
	}
}

// Remove unlocks and removes the staging folder and all it holds.
func (d *Dir) Remove() error {
	d.Unlock()
	return os.RemoveAll(d.Path)
}

// RemoveStale removes the temporaries of killed runs in dir: temporary
// files and staging folders (names with Mark) whose lock is free. It
// returns the paths it removed; errors are ignored (a temporary that
// cannot be examined is left alone).
func RemoveStale(dir string) []string {
	if !lockSupported {
		return nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var removed []string
	for _, e := range ents {
		if !IsTemp(e.Name()) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		lockPath := path
		if e.IsDir() {
			lockPath = filepath.Join(path, lockName)
		} else if !e.Type().IsRegular() {
			continue
		}
		f, err := os.OpenFile(lockPath, os.O_RDWR, 0)
		switch {
		case errors.Is(err, os.ErrNotExist) && e.IsDir():
			// A folder without its lock file: its run unlocked it to
			// publish, then died. Nothing holds it.
		case err != nil:
			continue
		default:
			held := lock(f) != nil
			f.Close()
			if held {
				continue
			}
		}
		if os.RemoveAll(path) == nil {
			removed = append(removed, path)
		}
	}
	return removed
}

// SyncDir syncs a folder so that renames into it are durable (best effort;
// a no-op where folders cannot be opened).
func SyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// ErrNoSpace means a folder lacks the space the outputs need.
var ErrNoSpace = errors.New("not enough free space")

// CheckSpace fails with ErrNoSpace when the file system of dir has less
// than need bytes free. Where free space cannot be read it passes.
func CheckSpace(dir string, need int64) error {
	free, ok := FreeSpace(dir)
	if ok && need > free {
		return fmt.Errorf("%s has %d bytes free, the outputs need up to %d: %w", dir, free, need, ErrNoSpace)
	}
	return nil
}
