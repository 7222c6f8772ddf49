package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/scan"
)

// The scan command surveys a datastore copy (package recover/scan) and
// reports per VM and per file: encrypted, plain, or exposed.

func init() {
	register(&cli.Command{
		Name:  "scan",
		Usage: "survey a datastore copy: which VMs and files are encrypted, plain or exposed, and which keys they need",
		Description: "Reads only headers, descriptors and the first KiBs of plain disks (never whole files),\n" +
			"opens everything read-only, and exits 0 whenever the scan ran, whatever it found.",
		ArgsUsage: "DIR",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
		},
		Action: scanAction,
	})
}

func scanAction(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) != 1 {
		return usagef("scan: want one DIR, got %d arguments", len(args))
	}
	rep, err := scan.Scan(args[0])
	if err != nil {
		return err
	}
	w := c.App.Writer
	if c.Bool("json") {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\n", b)
		return nil
	}
	printScan(w, rep)
	return nil
}

func printScan(w io.Writer, rep *scan.Report) {
	s := rep.Summary
	unreadable := ""
	if s.Unreadable > 0 {
		unreadable = fmt.Sprintf(", %d unreadable", s.Unreadable)
	}
	fmt.Fprintf(w, "scan of %s: %s (%d encrypted, %d exposed, %d plain%s)\n", rep.Root, scanPlural(s.VMs, "VM"), s.Encrypted, s.Exposed, s.Plain, unreadable)
	for _, vm := range rep.VMs {
		fmt.Fprintln(w)
		title := vm.VMX
		if title == "" {
			title = vm.Dir + "/ (no .vmx)"
		}
		fmt.Fprintf(w, "VM %s", title)
		if vm.DisplayName != "" {
			fmt.Fprintf(w, " %q", vm.DisplayName)
		}
		fmt.Fprintf(w, ": %s", strings.ToUpper(string(vm.Status)))
		if n := len(vm.Exposed); n > 0 {
			fmt.Fprintf(w, " (%s readable without a key)", scanPlural(n, "file"))
		}
		fmt.Fprintln(w)
		if len(vm.Keys) > 0 {
			fmt.Fprintf(w, "  keys needed: %s\n", keyList(vm.Keys))
		}
		// One line per file; an exposed one says so in capitals (once).
		tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  FILE\tKIND\tSTATUS\tDETAIL")
		for _, f := range vm.Files {
			st := string(f.Status)
			if f.Status == scan.Exposed {
				st = "EXPOSED"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", f.Path, f.Kind, st, f.Why)
		}
		tw.Flush()
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "SUMMARY")
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  VM\tSTATUS\tKEYS NEEDED")
	for _, vm := range rep.VMs {
		name := vm.VMX
		if name == "" {
			name = vm.Dir + "/ (no .vmx)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", name, vm.Status, keyList(vm.Keys))
	}
	tw.Flush()
	fmt.Fprintf(w, "  files: %d encrypted, %d exposed, %d plain, %d unknown, %d unreadable; %s unreadable\n",
		s.Files[scan.Encrypted], s.Files[scan.Exposed], s.Files[scan.Plain], s.Files[scan.Unknown], s.Files[scan.Error], scanPlural(s.UnreadableFolders, "folder"))
	for _, k := range s.Keys {
		fmt.Fprintf(w, "  key: %s (%s)\n", k.Key, scanPlural(k.VMs, "VM"))
	}
	for _, k := range rep.KeyMaterial {
		ids := append(append([]string(nil), k.KDKIDs...), k.KeyIDs...)
		fmt.Fprintf(w, "  KEY MATERIAL  %s: %s (%s)", k.Path, k.Kind, k.Why)
		if len(ids) > 0 {
			fmt.Fprintf(w, "; ids %s", strings.Join(ids, ", "))
		}
		fmt.Fprintln(w)
	}
	for _, u := range rep.Unreadable {
		fmt.Fprintf(w, "  UNREADABLE FOLDER  %s (not scanned)\n", u)
	}
	if s.Truncated {
		fmt.Fprintf(w, "  (stopped after %d files)\n", scan.MaxFiles)
	}
}

func keyList(ks []scan.KeyRef) string {
	if len(ks) == 0 {
		return "-"
	}
	var s []string
	for _, k := range ks {
		s = append(s, k.String())
	}
	return strings.Join(s, "; ")
}

func scanPlural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
