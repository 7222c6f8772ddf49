// Command vmcrypt is an offline forensic and recovery toolkit for encrypted
// VMware virtual machine files.
//
// This file holds the application, the one exit-code table and the error
// mapping. Each command lives in a file of its own and adds itself with
// register() from an init function.
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Exit codes: one table, used by every command (README "Exit codes").
const (
	exitOK          = 0 // success
	exitFailure     = 1 // other failure (I/O, ...)
	exitUsage       = 2 // bad command line
	exitWrongKey    = 3 // wrong key, passphrase or password
	exitKeyNotFound = 4 // a locator names a key that no supplied source holds
	exitCorrupt     = 5 // corrupt or unsupported input
)

var commands []*cli.Command

// register adds a top-level command; called from each command file's init.
func register(c *cli.Command) { commands = append(commands, c) }

// usageError marks a command-line mistake (exit code 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// exitCode maps an error to the exit-code table.
func exitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, keysafe.ErrWrongKey):
		return exitWrongKey
	case errors.Is(err, keysafe.ErrKeyNotFound):
		return exitKeyNotFound
	case errors.Is(err, keysafe.ErrCorrupt), errors.Is(err, keysafe.ErrUnsupported),
		errors.Is(err, vmdk.ErrCorrupt), errors.Is(err, vmdk.ErrUnsupported):
		return exitCorrupt
	}
	return exitFailure
}

func newApp() *cli.App {
	sort.Slice(commands, func(i, j int) bool { return commands[i].Name < commands[j].Name })
	app := &cli.App{
		Name:                 "vmcrypt",
		Usage:                "offline forensics and recovery of encrypted VMware VM files",
		Commands:             commands,
		EnableBashCompletion: false,
		HideHelpCommand:      true,
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return &usageError{err.Error()}
		},
		// Errors are printed and mapped to exit codes in main, once.
		ExitErrHandler: func(*cli.Context, error) {},
	}
	setUsageHandlers(app.Commands)
	return app
}

// setUsageHandlers makes flag errors of every (sub)command usage errors.
func setUsageHandlers(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return &usageError{err.Error()} }
		setUsageHandlers(c.Subcommands)
	}
}

// run is main without the exit, for tests. Commands write to c.App.Writer
// and c.App.ErrWriter, never to os.Stdout/os.Stderr directly.
func run(args []string, stdout, stderr io.Writer) int {
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	err := app.Run(interspersed(app, args))
	if err != nil && strings.HasPrefix(err.Error(), "No help topic for ") {
		// urfave/cli's answer to an unknown (sub)command: a usage error.
		err = usagef("unknown command %s: vmcrypt --help lists the commands", strings.TrimPrefix(err.Error(), "No help topic for "))
	}
	if err != nil {
		fmt.Fprintf(stderr, "vmcrypt: %s\n", message(err))
	}
	return exitCode(err)
}

// message is the one sentence printed for err: the standard library's
// "open PATH: no such file or directory" reads "PATH does not exist"
// (whatever context wraps it); every other error is printed as it is.
func message(err error) string {
	msg := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.Is(pe.Err, fs.ErrNotExist) {
		msg = strings.Replace(msg, pe.Error(), pe.Path+" does not exist", 1)
	}
	// The flag that gets past a refusal, where one exists.
	var ts *vmdk.TruncatedStreamError
	switch {
	case errors.Is(err, vmdk.ErrCIDMismatch):
		msg += " (--allow-cid-mismatch reads the chain anyway)"
	case errors.As(err, &ts):
		msg += " (vmcrypt vmdk export --scan-truncated-stream does)"
	case errors.Is(err, vmdk.ErrUnsafePath):
		msg = strings.Replace(msg, "(allow unsafe paths to follow it)", "(--allow-unsafe-paths follows it)", 1)
	}
	return msg
}

func main() { os.Exit(run(os.Args, os.Stdout, os.Stderr)) }
