package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmx"
)

// vmx set and vmx edit: change the encrypted settings of a VM and seal
// them again with the same config key. The key safe, dataFileKey and
// cryptoState stay as they are, so the disks and data files still open.

func vmxSetCommand() *cli.Command {
	return &cli.Command{
		Name:      "set",
		Usage:     "change settings of an encrypted VMX and re-seal it with the same keys",
		ArgsUsage: "VMX|VMFOLDER KEY=VALUE... [--unset KEY] (-o OUT | --in-place)",
		Flags: append(append(vmxChangeFlags(),
			&cli.StringSliceFlag{Name: "unset", Usage: "remove setting `KEY` (repeatable)"}),
			keyFlags()...),
		Action: vmxSet,
	}
}

func vmxEditCommand() *cli.Command {
	return &cli.Command{
		Name:      "edit",
		Usage:     "edit the encrypted settings of a VMX in $VISUAL or $EDITOR and re-seal them with the same keys",
		ArgsUsage: "VMX|VMFOLDER (-o OUT | --in-place)",
		Flags:     append(vmxChangeFlags(), keyFlags()...),
		Action:    vmxEdit,
	}
}

// vmxSetChanges parses KEY=VALUE arguments and --unset keys.
func vmxSetChanges(c *cli.Context, args []string) ([]vmx.Change, error) {
	var ch []vmx.Change
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, usagef("%q is not KEY=VALUE", a)
		}
		ch = append(ch, vmx.Change{Key: k, Value: v})
	}
	for _, k := range c.StringSlice("unset") {
		ch = append(ch, vmx.Change{Key: k, Unset: true})
	}
	if len(ch) == 0 {
		return nil, usagef("%s needs KEY=VALUE or --unset KEY", c.Command.FullName())
	}
	return ch, nil
}

// vmxEditRefusal turns the library's refusals of an edit (syntax, a
// protected setting) into usage errors (exit 2).
func vmxEditRefusal(in string, err error) error {
	if errors.Is(err, vmx.ErrSyntax) || errors.Is(err, vmx.ErrProtected) {
		return usagef("%s: refused, nothing written: %v", in, err)
	}
	return fmt.Errorf("%s: %w", in, err)
}

func vmxSet(c *cli.Context) error {
	pos := c.Args().Slice()
	if len(pos) < 1 {
		return usagef("%s takes a VMX and KEY=VALUE arguments", c.Command.FullName())
	}
	changes, err := vmxSetChanges(c, pos[1:])
	if err != nil {
		return err
	}
	in, err := vm.FindVMX(pos[0])
	if err != nil {
		return err
	}
	vf, err := vmx.ReadFile(in)
	if err != nil {
		return err
	}
	out, inPlace, err := vmxTarget(c, in)
	if err != nil {
		return err
	}
	v, err := vmxOpenForChange(c, in)
	if err != nil {
		return err
	}
	defer v.Close()
	nf, applied, err := vmx.Apply(vf, v.ConfigKey, changes, rand.Reader)
	if err != nil {
		return vmxEditRefusal(in, err)
	}
	w := c.App.Writer
	for _, a := range applied {
		where := "encrypted settings"
		if a.Plain {
			where = "plain lines"
		}
		fmt.Fprintf(w, "  %s: %s (%s)\n", a.Key, a.Action, where)
	}
	return vmxWriteChanged(c, in, out, inPlace, vf, nf)
}

// vmxOpenForChange opens the VM with the user's key options (any source:
// set and edit work on key-provider VMs too).
func vmxOpenForChange(c *cli.Context, in string) (*vm.VM, error) {
	v, err := vmOpen(c, in, vmOpenMode{depth: vm.SettingsOnly, prompt: true})
	if err != nil {
		return nil, err
	}
	if !v.Encrypted() {
		v.Close()
		return nil, fmt.Errorf("%s: edit the plain VMX itself: %w", in, vm.ErrNotEncrypted)
	}
	return v, nil
}

// vmxWriteChanged writes the changed VMX: nothing when it did not change.
func vmxWriteChanged(c *cli.Context, in, out string, inPlace bool, vf, nf *vmx.File) error {
	w := c.App.Writer
	orig, newb := vf.Bytes(), nf.Bytes()
	if bytes.Equal(orig, newb) {
		fmt.Fprintf(w, "%s: nothing changed, nothing written\n", in)
		return nil
	}
	if !inPlace {
		if err := writeNewFile(out, newb, c.Bool("force")); err != nil {
			return err
		}
		fmt.Fprintf(w, "%s: re-sealed with the same keys; wrote %s (the input is unchanged)\n", in, out)
		return nil
	}
	backups, err := vmxCommitInPlace([]vmxWrite{{path: in, old: orig, new: newb}}, c.Bool("force"))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: re-sealed with the same keys, changed in place; original kept as %s\n", in, backups[0])
	return nil
}

func vmxEdit(c *cli.Context) error {
	in, vf, err := vmLoadVMX(c, "VMX")
	if err != nil {
		return err
	}
	out, inPlace, err := vmxTarget(c, in)
	if err != nil {
		return err
	}
	v, err := vmxOpenForChange(c, in)
	if err != nil {
		return err
	}
	defer v.Close()
	nf, err := vmxEditLoop(c, in, vf, v)
	if err != nil || nf == nil {
		return err
	}
	return vmxWriteChanged(c, in, out, inPlace, vf, nf)
}

// vmxEditLoop runs the editor on the decrypted settings until they are
// accepted (re-sealed), left unchanged (nil, nil) or abandoned. A refused
// edit reopens the editor on a terminal, and is a usage error (exit 2)
// otherwise. The plaintext lives in a private folder (0700) that is removed
// on every way out, signals included.
func vmxEditLoop(c *cli.Context, in string, vf *vmx.File, v *vm.VM) (*vmx.File, error) {
	dir, err := os.MkdirTemp(vmxPrivateTempRoot(), "vmcrypt-edit-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	name := filepath.Join(dir, filepath.Base(in))
	text := v.Decrypted.Text
	if err := os.WriteFile(name, text, 0o600); err != nil {
		return nil, err
	}
	tty := term.IsTerminal(int(os.Stdin.Fd()))
	var stdin *bufio.Reader
	for {
		if err := vmxRunEditor(name); err != nil {
			return nil, err
		}
		edited, err := vmxReadEdited(name)
		if err != nil {
			return nil, err
		}
		// An editor that saves UTF-8 with a byte-order mark (Notepad did)
		// added it: encryption.data does not hold one.
		if !bytes.HasPrefix(text, []byte("\xef\xbb\xbf")) {
			edited = bytes.TrimPrefix(edited, []byte("\xef\xbb\xbf"))
		}
		if bytes.Equal(edited, text) {
			fmt.Fprintf(c.App.Writer, "%s: the settings were not changed; nothing written\n", in)
			return nil, nil
		}
		nf, err := vmx.Reseal(vf, v.ConfigKey, edited, rand.Reader)
		if err == nil {
			return nf, nil
		}
		if !tty || !(errors.Is(err, vmx.ErrSyntax) || errors.Is(err, vmx.ErrProtected)) {
			return nil, vmxEditRefusal(in, err)
		}
		fmt.Fprintf(c.App.ErrWriter, "vmcrypt: %v\nPress Enter to edit again, or q and Enter to give up (nothing is written): ", err)
		if stdin == nil {
			stdin = bufio.NewReader(os.Stdin)
		}
		answer, rerr := stdin.ReadString('\n')
		if rerr != nil || strings.EqualFold(strings.TrimSpace(answer), "q") {
			return nil, usagef("%s: edit abandoned, nothing written", in)
		}
	}
}

// vmxReadEdited reads the edited file, capped at vmx.MaxFileSize.
func vmxReadEdited(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("the edited settings are gone (%w): nothing written", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, vmx.MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > vmx.MaxFileSize {
		return nil, usagef("the edited settings are larger than %d bytes: nothing written", vmx.MaxFileSize)
	}
	return b, nil
}

// vmxPrivateTempRoot is where the decrypted settings wait for the editor:
// $XDG_RUNTIME_DIR (a per-user tmpfs on most Linux systems) when set, else
// the system temp folder.
func vmxPrivateTempRoot() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			return d
		}
	}
	return os.TempDir()
}

// vmxEditorCommand is $VISUAL, else $EDITOR, else vi (notepad on Windows).
func vmxEditorCommand() string {
	for _, v := range []string{"VISUAL", "EDITOR"} {
		if e := strings.TrimSpace(os.Getenv(v)); e != "" {
			return e
		}
	}
	if runtime.GOOS == "windows" {
		return "notepad"
	}
	return "vi"
}

// vmxRunEditor runs the editor on file with the terminal. While it runs,
// SIGINT is left to the editor (vmcrypt ignores it, as git does); SIGTERM
// or SIGHUP stop the editor and vmcrypt, and the caller removes the file.
func vmxRunEditor(file string) error {
	ed := vmxEditorCommand()
	var cmd *exec.Cmd
	if runtime.GOOS == "windows" {
		f := strings.Fields(ed)
		cmd = exec.Command(f[0], append(f[1:], file)...)
	} else {
		// Through the shell, so EDITOR may hold arguments ("code --wait").
		cmd = exec.Command("/bin/sh", "-c", ed+` "$1"`, "vmcrypt-edit", file)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting the editor %q (set VISUAL or EDITOR): %w", ed, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case err := <-waited:
			if err != nil {
				return fmt.Errorf("the editor %q failed (%v): nothing written", ed, err)
			}
			return nil
		case s := <-sig:
			if s == os.Interrupt {
				continue
			}
			cmd.Process.Kill()
			<-waited
			return fmt.Errorf("stopped by %v while editing: nothing written, the decrypted settings removed", s)
		}
	}
}
