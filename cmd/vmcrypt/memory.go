package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover"
	"github.com/vmcrypt/vmcrypt/recover/vm"
)

// The memory command: every memory state of a VM (suspend, snapshots) as
// the pair Volatility opens, flat NAME.vmem + plain NAME.vmsn/NAME.vmss,
// optionally the guest-physical image NAME.raw, and memory-report.json.

func init() {
	register(&cli.Command{
		Name:      "memory",
		Usage:     "write each memory state (suspend, snapshot) as a Volatility-ready pair: flat NAME.vmem + plain NAME.vmsn/.vmss",
		ArgsUsage: "VMPATH -o OUTDIR",
		Description: "VMPATH is the .vmx file or its folder; disks are not needed. Each .vmem is decrypted and\n" +
			"decompressed (docs/formats.md §13) and written flat beside its plain state file, with the same\n" +
			"base name, as Volatility 3 pairs them. --physical also writes NAME.raw, laid out at guest-physical\n" +
			"addresses (holes sparse). Plain VMs work too (decompression only). Outputs are staged in OUTDIR\n" +
			"and renamed into place only when complete; Ctrl-C leaves no partial file.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the pairs into `OUTDIR` (created if needed)"},
			&cli.StringFlag{Name: "snapshot", Usage: "only the state `NAME`: its base name (VM-Snapshot1), file name, or snapshot display name"},
			&cli.BoolFlag{Name: "physical", Usage: "also write NAME.raw, the guest-physical image (regions at their addresses, holes as sparse zeros)"},
			&cli.BoolFlag{Name: "force", Usage: "replace existing outputs"},
			&cli.IntFlag{Name: "jobs", DefaultText: "all cores", Usage: "`N` parallel workers copying state files"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bars, no summary (warnings still go to stderr)"},
			&cli.BoolFlag{Name: "progress", Usage: "draw progress bars on stderr even when it is not a terminal"},
			&cli.BoolFlag{Name: "strict-mac", Usage: "refuse data files whose page MACs match no known scheme (VMware's is not public) instead of decrypting them unauthenticated"},
			&cli.BoolFlag{Name: "allow-unsafe-paths", Usage: "follow symbolic links out of the VM folder"},
		}, keyFlags()...),
		Action: memoryAction,
	})
}

func memoryAction(c *cli.Context) error {
	pos := c.Args().Slice()
	if len(pos) != 1 {
		return usagef("memory takes one VMPATH (got %d arguments)", len(pos))
	}
	out := c.String("output")
	if out == "" {
		return usagef("memory needs -o OUTDIR")
	}
	jobs := c.Int("jobs")
	if jobs < 0 || jobs > recover.MaxJobs {
		return usagef("--jobs %d: want 0 (all cores) to %d", jobs, recover.MaxJobs)
	}
	// KeepGoing: a damaged file the states do not use does not stop them.
	v, err := vmOpen(c, pos[0], vmOpenMode{depth: vm.DataFilesOnly, keepGoing: true, prompt: true})
	if err != nil {
		return err
	}
	defer v.Close()
	opts := &recover.MemoryOptions{
		State:       c.String("snapshot"),
		Physical:    c.Bool("physical"),
		Force:       c.Bool("force"),
		Jobs:        jobs,
		CheckOutput: func(p string) error { return refuseInputs(c, p) },
	}
	bars := newRecoverBars(c)
	if bars != nil {
		opts.Progress = bars.update
	}
	rep, err := memoryRun(c, v, out, opts)
	if bars != nil {
		bars.finish()
	}
	if errors.Is(err, recover.ErrNoMemoryState) {
		return usagef("%v", err)
	}
	if err != nil {
		return err
	}
	if c.Bool("quiet") {
		for _, wn := range rep.Warnings {
			fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", wn)
		}
		return nil
	}
	w := c.App.Writer
	fmt.Fprintf(w, "memory of %s written into %s (%.1fs)\n", rep.VMX, rep.OutDir, rep.Seconds)
	if rep.KeySafe != nil {
		fmt.Fprintf(w, "key safe opened by %s (%s)\n", rep.KeySafe.Source, rep.KeySafe.Locker)
	}
	for _, s := range rep.States {
		name := s.Kind
		if s.DisplayName != "" {
			name += fmt.Sprintf(" %q", s.DisplayName)
		}
		how := "flat already"
		switch {
		case s.Embedded:
			how = "inside the state file"
		case s.Compressed:
			how = fmt.Sprintf("decompressed from %d bytes in %d blocks", s.MemoryBytes, s.Blocks)
		}
		fmt.Fprintf(w, "%s (%s): %d bytes of memory, %s; %d regions, guest-physical size %d\n", s.Name, name, s.FlatSize, how, len(s.Regions), s.PhysicalSize)
		for _, r := range s.Regions {
			fmt.Fprintf(w, "  region %d: guest-physical %#x..%#x  flat %#x  (%d pages)\n", r.Index, r.PhysStart, r.PhysEnd, r.FlatOffset, r.Pages)
		}
		if s.State != nil {
			fmt.Fprintf(w, "  %s  %s (MAC: %s)\n", s.State.SHA256, s.State.Output, vmDash(s.State.MAC))
		}
		fmt.Fprintf(w, "  %s  %s (MAC: %s)\n", s.Memory.SHA256, s.Memory.Output, vmDash(s.Memory.MAC))
		if s.Physical != nil {
			fmt.Fprintf(w, "  %s  %s (%d bytes written, the rest sparse)\n", s.Physical.SHA256, s.Physical.Output, s.Physical.Written)
		}
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, wn := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", wn)
	}
	if len(rep.States) > 0 {
		fmt.Fprintf(w, "Volatility 3: vol -f %s windows.info\n", filepath.Join(rep.OutDir, rep.States[0].Memory.Output))
	}
	fmt.Fprintf(w, "report: %s\n", filepath.Join(rep.OutDir, recover.MemoryReportName))
	return nil
}

// memoryRun runs WriteMemory; tests replace it to cancel half-way.
var memoryRun = func(c *cli.Context, v *vm.VM, out string, o *recover.MemoryOptions) (*recover.MemoryReport, error) {
	return recover.WriteMemory(c.Context, v, out, o)
}
