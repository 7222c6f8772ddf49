package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed lets flags follow positional arguments, as the README
// writes them (`vmcrypt vmx decrypt VMX -o OUT`): urfave/cli v2 stops
// reading flags at the first argument, so the arguments after the command
// path are reordered, flags (with their values) first, before the app runs.
// A "--" ends flags; what follows stays positional. Unknown flags are left in
// place for the flag parser to refuse (exit 2).
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	cmds := app.Commands
	var cur *cli.Command
	i := 1
	// Walk the command path: leading non-flag words naming (sub)commands.
	for ; i < len(args); i++ {
		next := findCommand(cmds, args[i])
		if next == nil {
			break
		}
		cur = next
		cmds = cur.Subcommands
		out = append(out, args[i])
	}
	if cur == nil {
		return args
	}
	var flags, pos []string
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, _, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		fl := findFlag(cur.Flags, name)
		flags = append(flags, a)
		if fl == nil || hasVal {
			continue
		}
		if _, isBool := fl.(*cli.BoolFlag); isBool {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	out = append(out, flags...)
	return append(out, pos...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	if name == "help" || name == "h" {
		return cli.HelpFlag
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}
