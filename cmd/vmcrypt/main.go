// Command vmcrypt is an offline forensic and recovery toolkit for encrypted
// VMware virtual machine files.
//
// This file holds the application, the one exit-code table and the error
// mapping. Each command lives in a file of its own and adds itself with
// register() from an init function.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover"
	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/recover/keys/kmip"
	"github.com/vmcrypt/vmcrypt/recover/mount"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Exit codes: one table, used by every command (README "Exit codes").
const (
	exitOK          = 0   // success
	exitFailure     = 1   // other failure (I/O, ...)
	exitUsage       = 2   // bad command line
	exitWrongKey    = 3   // wrong key, passphrase or password
	exitKeyNotFound = 4   // a locator names a key that no supplied source holds
	exitCorrupt     = 5   // corrupt or unsupported input
	exitInterrupted = 130 // interrupted by SIGINT (Ctrl-C) or SIGTERM: nothing was written
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
	var kc *kmip.ConfigError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errInterrupted):
		return exitInterrupted
	case errors.As(err, &ue), errors.As(err, &kc), errors.Is(err, vm.ErrNoVMX), errors.Is(err, vm.ErrManyVMX),
		errors.Is(err, outfile.ErrExists), errors.Is(err, recover.ErrOutputExists), errors.Is(err, recover.ErrOutputIsInput),
		errors.Is(err, mount.ErrNotDir), errors.Is(err, mount.ErrNotEmpty):
		return exitUsage
	case errors.Is(err, keysafe.ErrWrongKey):
		return exitWrongKey
	case errors.Is(err, keysafe.ErrKeyNotFound):
		return exitKeyNotFound
	case errors.Is(err, keysafe.ErrCorrupt), errors.Is(err, keysafe.ErrUnsupported),
		errors.Is(err, vmdk.ErrCorrupt), errors.Is(err, vmdk.ErrUnsupported),
		errors.Is(err, mount.ErrUnsupported):
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
		Version:              version,
		EnableBashCompletion: false,
		HideHelpCommand:      true,
		// Bare `vmcrypt`: the help, and exit 2 (nothing was asked).
		Action: func(c *cli.Context) error {
			if c.Args().Len() > 0 {
				return usagef("unknown command %s: vmcrypt --help lists the commands", c.Args().First())
			}
			cli.ShowAppHelp(c)
			return usagef("no command given")
		},
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
// urfave/cli adds a help subcommand to commands as they run (and tests
// run many apps over the one command list), so a command met twice is not
// walked again.
func setUsageHandlers(cmds []*cli.Command) {
	seen := map[*cli.Command]bool{}
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			if seen[c] {
				continue
			}
			seen[c] = true
			c.OnUsageError = func(_ *cli.Context, err error, _ bool) error { return &usageError{err.Error()} }
			walk(c.Subcommands)
		}
	}
	walk(cmds)
}

// run is main without the exit, for tests. Commands write to c.App.Writer
// and c.App.ErrWriter, never to os.Stdout/os.Stderr directly.
func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdout, stderr)
}

// errInterrupted marks a run stopped by SIGINT or SIGTERM (exit 130).
var errInterrupted = errors.New("interrupted")

// runContext runs the app with a context that SIGINT and SIGTERM cancel:
// every command stops, removes what it was writing, and exits 130.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := newApp()
	app.Writer, app.ErrWriter = stdout, stderr
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	args = interspersed(app, args)
	if len(args) >= 3 && args[1] == "help" {
		// `vmcrypt help CMD [SUB]` is `vmcrypt CMD [SUB] --help`.
		args = append(append([]string{args[0]}, args[2:]...), "--help")
	}
	err := app.RunContext(ctx, args)
	closeKeySources(app)
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = fmt.Errorf("%w: stopped by a signal, no output was written (%v)", errInterrupted, err)
	}
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
	case errors.Is(err, recover.ErrVTPMNoNVRAM):
		msg += " (--allow-missing-nvram recovers it anyway)"
	case errors.Is(err, recover.ErrOutputExists), errors.Is(err, outfile.ErrExists):
		msg += " (--force replaces it)"
	case errors.Is(err, datafile.ErrMACMismatch):
		msg += " (--ignore-mac reads it anyway)"
	case errors.Is(err, mount.ErrNoFUSE):
		msg += " (FUSE needs /dev/fuse and the fuse3 package; vmcrypt serve with an NBD client needs neither)"
	case errors.Is(err, mount.ErrUnsupported):
		msg += " (vmcrypt serve with an NBD client, or vmcrypt recover, work here)"
	}
	var nf *keysafe.KeyNotFoundError
	if h, ok := kmipHint(err); h != "" || ok {
		msg += h
	} else if errors.As(err, &nf) {
		switch {
		case nf.Provider == "passphrase":
			msg += " (give it with --passphrase-file or " + envPassphrase + ")"
		case strings.Contains(nf.Hint, "NKP backup"):
			msg += " (give it with --nkp-backup)"
		default:
			msg += " (give it with --kek)"
		}
	}
	return msg
}

func main() { os.Exit(run(os.Args, os.Stdout, os.Stderr)) }
