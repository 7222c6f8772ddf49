package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"

	"github.com/urfave/cli/v2"
)

// Writing a changed VM: `vmx passwd`, `vmx set` and `vmx edit` write either
// a new VMX (-o OUT, the input untouched) or change the VM in place
// (--in-place): each file is first kept as NAME.vmcrypt-bak, the new
// content goes to a temporary file beside it, synced, and is renamed over
// the original. SIGINT and SIGTERM are held from the first backup to the
// last rename: one that arrives before the renames undoes everything (the
// backups and temporary files are removed, nothing changed); one that
// arrives during the renames is acted on once they are all done, so no
// file is ever half written and the VM is never half changed by a signal.

// vmxChangeCommands are the vmx subcommands that keep a VM encrypted while
// changing it (registered by vmxcmd.go).
func vmxChangeCommands() []*cli.Command {
	return []*cli.Command{vmxPasswdCommand(), vmxSetCommand(), vmxEditCommand()}
}

// vmxChangeFlags are the output flags of passwd, set and edit.
func vmxChangeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the changed VMX to `OUT` (a temp file in its folder, renamed when complete); the input is not written"},
		&cli.BoolFlag{Name: "in-place", Usage: "change the VM itself, keeping each changed file's original as NAME.vmcrypt-bak"},
		&cli.BoolFlag{Name: "force", Usage: "replace OUT, or a NAME.vmcrypt-bak left by an earlier run"},
	}
}

// vmxTarget checks the output flags before any work: exactly one of -o OUT
// and --in-place; OUT as `vmx decrypt` checks it; --in-place refuses a
// VMX that is a symbolic link (the link would be replaced by a file).
func vmxTarget(c *cli.Context, in string) (out string, inPlace bool, err error) {
	switch {
	case c.Bool("in-place") && c.String("output") != "":
		return "", false, usagef("-o OUT and --in-place exclude each other")
	case c.Bool("in-place"):
		if err := vmxRegularTarget(in); err != nil {
			return "", false, err
		}
		// Before any work (the disks' backups are checked when known).
		if w := (vmxWrite{path: in}); !c.Bool("force") {
			if _, err := os.Lstat(w.backup()); err == nil {
				return "", false, usagef("%s exists (a backup of an earlier run?): move it away, or use --force to replace it", w.backup())
			}
		}
		return "", true, nil
	case c.String("output") == "":
		return "", false, usagef("%s needs -o OUT, or --in-place to change the VM itself", c.Command.FullName())
	}
	out, err = vmxCheckOutput(c, in)
	return out, false, err
}

// vmxRegularTarget refuses to change in place a symbolic link, a non-file
// or a read-only file (kept read-only on purpose, a forensic copy say).
func vmxRegularTarget(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSymlink != 0 {
		return usagef("%s is a symbolic link: run --in-place on the file it points to", path)
	}
	if !st.Mode().IsRegular() {
		return usagef("%s is not a regular file", path)
	}
	if st.Mode().Perm()&0o200 == 0 {
		return usagef("%s is read-only: make it writable to change it in place (or use -o OUT)", path)
	}
	return nil
}

// vmxWrite is one change of a file made in place: the whole file, or (an
// embedded disk descriptor) len(new) bytes at offset.
type vmxWrite struct {
	path   string
	old    []byte // what the file (or its area) holds; checked again before writing
	new    []byte
	area   bool
	offset int64
}

// backup is the name of the copy kept of the original.
func (w vmxWrite) backup() string {
	if w.area {
		return w.path + ".descriptor.vmcrypt-bak"
	}
	return w.path + ".vmcrypt-bak"
}

// vmxCommitHook, when set (tests), is called between the steps of an
// in-place change: "backups" (all backups written), "temps" (all new
// contents synced beside their files), "committed N" (file N renamed or
// written). An error it returns fails the change there.
var vmxCommitHook func(stage string) error

// vmxSignals counts the signals held during the last in-place change
// (tests wait on it).
var vmxSignals atomic.Int32

var errVMXInterrupted = fmt.Errorf("%w before any file was changed: nothing was changed (backups and temporary files removed)", errInterrupted)

// vmxCommitInPlace makes the writes in order (put the VMX last: a VMX that
// opens with the new passphrase means every disk before it is done). It
// returns the backups it kept. On any failure or signal before the first
// rename nothing has changed and nothing is left behind; a failure during
// the renames puts back what was already changed, from memory.
func vmxCommitInPlace(ws []vmxWrite, force bool) (backups []string, err error) {
	for _, w := range ws {
		if err := vmxRegularTarget(w.path); err != nil {
			return nil, err
		}
		if _, err := os.Lstat(w.backup()); err == nil && !force {
			return nil, usagef("%s exists (a backup of an earlier run?): move it away, or use --force to replace it", w.backup())
		}
	}
	sig := make(chan os.Signal, 4)
	done := make(chan struct{})
	vmxSignals.Store(0)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		for {
			select {
			case <-sig:
				vmxSignals.Add(1)
			case <-done:
				return
			}
		}
	}()
	defer func() {
		signal.Stop(sig)
		close(done)
	}()
	hook := func(stage string) error {
		if vmxCommitHook != nil {
			return vmxCommitHook(stage)
		}
		return nil
	}

	var made []string // backups and temporary files to remove on failure
	temps := make([]string, len(ws))
	undo := func(err error) ([]string, error) {
		for _, p := range made {
			os.Remove(p)
		}
		return nil, err
	}
	check := func() error {
		if vmxSignals.Load() > 0 {
			return errVMXInterrupted
		}
		return nil
	}
	for _, w := range ws {
		if err := vmxSameContent(w); err != nil {
			return undo(err)
		}
		if err := writeNewFile(w.backup(), w.old, force); err != nil {
			return undo(err)
		}
		made = append(made, w.backup())
		if err := check(); err != nil {
			return undo(err)
		}
	}
	if err := hook("backups"); err != nil {
		return undo(err)
	}
	for i, w := range ws {
		if w.area {
			continue
		}
		t, err := vmxTempBeside(w.path, w.new)
		if err != nil {
			return undo(err)
		}
		temps[i] = t
		made = append(made, t)
		if err := check(); err != nil {
			return undo(err)
		}
	}
	if err := hook("temps"); err != nil {
		return undo(err)
	}
	if err := check(); err != nil {
		return undo(err)
	}
	// The renames: signals are held until all are done.
	for i, w := range ws {
		if w.area {
			err = vmxWriteArea(w.path, w.new, w.offset)
		} else {
			err = os.Rename(temps[i], w.path)
		}
		if err == nil {
			err = hook(fmt.Sprintf("committed %d", i))
		}
		if err != nil {
			return nil, vmxPutBack(ws[:i+1], made, err)
		}
	}
	for _, w := range ws {
		vmxSyncDir(filepath.Dir(w.path))
		backups = append(backups, w.backup())
	}
	return backups, nil
}

// vmxPutBack undoes the writes of a failed commit (the last may or may not
// have happened) from the originals in memory; the backups stay unless all
// is put back.
func vmxPutBack(ws []vmxWrite, made []string, cause error) error {
	var failed []string
	for _, w := range ws {
		var err error
		if w.area {
			err = vmxWriteArea(w.path, w.old, w.offset)
		} else if cur, rerr := os.ReadFile(w.path); rerr == nil && bytes.Equal(cur, w.old) {
			continue
		} else {
			var t string
			if t, err = vmxTempBeside(w.path, w.old); err == nil {
				err = os.Rename(t, w.path)
			}
		}
		if err != nil {
			failed = append(failed, w.path)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w; putting back the originals failed for %v: restore them from their .vmcrypt-bak copies", cause, failed)
	}
	for _, p := range made {
		os.Remove(p)
	}
	return fmt.Errorf("%w (nothing was changed: the originals were put back)", cause)
}

// vmxSameContent refuses a file that changed since it was read.
func vmxSameContent(w vmxWrite) error {
	f, err := os.Open(w.path)
	if err != nil {
		return err
	}
	defer f.Close()
	var cur []byte
	if w.area {
		cur = make([]byte, len(w.old))
		_, err = f.ReadAt(cur, w.offset)
	} else {
		cur, err = io.ReadAll(io.LimitReader(f, int64(len(w.old))+1))
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if !bytes.Equal(cur, w.old) {
		return fmt.Errorf("%s changed while vmcrypt was working on it: nothing was changed", w.path)
	}
	return nil
}

// vmxTempBeside writes data to a synced temporary file beside path, with
// path's permissions, and returns its name.
func vmxTempBeside(path string, data []byte) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return "", err
	}
	name := tmp.Name()
	err = tmp.Chmod(st.Mode().Perm())
	if err == nil {
		_, err = tmp.Write(data)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

// vmxWriteArea writes data at off inside path (an embedded descriptor:
// one write of a few KiB, synced).
func vmxWriteArea(path string, data []byte, off int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, off)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// vmxSyncDir makes renames in dir durable where the OS allows it (Windows
// cannot sync a folder; its renames are durable on their own).
func vmxSyncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
