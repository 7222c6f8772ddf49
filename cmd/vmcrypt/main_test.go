package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// runCLI runs vmcrypt in-process and returns the exit code and outputs.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(append([]string{"vmcrypt"}, args...), &o, &e)
	return code, o.String(), e.String()
}

func TestExitCodeTable(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{fmt.Errorf("open x: no such file"), 1},
		{usagef("bad"), 2},
		{fmt.Errorf("unlock: %w", keysafe.ErrWrongKey), 3},
		{fmt.Errorf("x: %w", &keysafe.KeyNotFoundError{Provider: "KMS", KeyID: "k"}), 4},
		{fmt.Errorf("x: %w", keysafe.ErrCorrupt), 5},
		{fmt.Errorf("x: %w", keysafe.ErrUnsupported), 5},
		{fmt.Errorf("x: %w", vmdk.ErrCorrupt), 5},
		{fmt.Errorf("x: %w", vmdk.ErrUnsupported), 5},
	}
	for _, c := range cases {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

func TestUnknownFlagIsUsage(t *testing.T) {
	if code, _, _ := runCLI(t, "version", "--no-such-flag"); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
	for _, args := range [][]string{{"no-such-command"}, {"vmx", "bogus"}, {"nkp", "bogus"}} {
		if code, _, stderr := runCLI(t, args...); code != exitUsage || !strings.Contains(stderr, "unknown command") {
			t.Fatalf("%v: exit %d, %q; want %d", args, code, stderr, exitUsage)
		}
	}
}

func TestMissingInputSentence(t *testing.T) {
	missing := t.TempDir() + "/no-such-vm"
	for _, args := range [][]string{{"inspect", missing}, {"vmdk", "info", missing + ".vmdk"}, {"scan", missing}} {
		code, _, stderr := runCLI(t, args...)
		want := args[len(args)-1] + " does not exist\n"
		if !strings.HasPrefix(stderr, "vmcrypt: ") || !strings.HasSuffix(stderr, want) || strings.Count(stderr, "\n") != 1 || code != exitFailure {
			t.Errorf("%v: exit %d, stderr %q; want exit %d, %q", args, code, stderr, exitFailure, want)
		}
	}
}

// A refusal that a flag gets past names the flag.
func TestMessageNamesTheFlag(t *testing.T) {
	for err, want := range map[error]string{
		fmt.Errorf("vmdk: top.vmdk has parentCID 1: %w", vmdk.ErrCIDMismatch):                                                  "--allow-cid-mismatch",
		fmt.Errorf("disk: %w", &vmdk.TruncatedStreamError{Err: vmdk.ErrCorrupt}):                                               "--scan-truncated-stream",
		fmt.Errorf("open x: %w", &fs.PathError{Op: "open", Path: "x", Err: fs.ErrNotExist}):                                    "x does not exist",
		fmt.Errorf("vmdk: d.vmdk: extent 1: \"/etc/x\" is absolute: %w (allow unsafe paths to follow it)", vmdk.ErrUnsafePath): "(--allow-unsafe-paths follows it)",
	} {
		if m := message(err); !strings.Contains(m, want) {
			t.Errorf("%v: message %q lacks %q", err, m, want)
		}
	}
	if m := message(fmt.Errorf("x: %w", vmdk.ErrCorrupt)); strings.Contains(m, "--") {
		t.Errorf("a plain corruption names a flag: %q", m)
	}
}

// Every flag's help gives its default once (urfave adds "(default: X)";
// a usage text that says it too would print it twice).
func TestHelpDefaultsOnce(t *testing.T) {
	var walk func(prefix []string, cmds []*cli.Command)
	walk = func(prefix []string, cmds []*cli.Command) {
		for _, c := range cmds {
			if c.Name == "help" {
				continue
			}
			args := append(append([]string(nil), prefix...), c.Name)
			if len(c.Subcommands) > 0 {
				walk(args, c.Subcommands)
				continue
			}
			_, out, _ := runCLI(t, append(args, "--help")...)
			for _, l := range strings.Split(out, "\n") {
				if strings.Count(l, "(default") > 1 {
					t.Errorf("vmcrypt %s: %q", strings.Join(args, " "), strings.TrimSpace(l))
				}
			}
		}
	}
	walk(nil, newApp().Commands)
}
