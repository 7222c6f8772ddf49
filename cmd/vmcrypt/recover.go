package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vmcrypt/vmcrypt/recover"
)

// The recover command: an encrypted VM folder and its keys in, a plain VM
// out (VMX, disks, nvram, swap, snapshot files, recover-report.json).

func init() {
	register(&cli.Command{
		Name:      "recover",
		Usage:     "write a plain copy of an encrypted VM: VMX, every disk, nvram, swap, snapshot files, and recover-report.json",
		ArgsUsage: "VMPATH -o OUTDIR",
		Description: "VMPATH is the .vmx file or its folder. Nothing is written until every key has opened;\n" +
			"outputs are staged in OUTDIR and renamed into place only when complete and verified.\n" +
			"Inputs are opened read-only. Ctrl-C leaves no partial file.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the plain VM into `OUTDIR` (created if needed)"},
			&cli.StringFlag{Name: "format", Value: recover.FormatVMDK, Usage: "`FORMAT` of disks: vmdk (plain VMDKs) or raw (one sparse .img per disk)"},
			&cli.BoolFlag{Name: "flatten", Usage: "write one image per disk instead of keeping the snapshot chain"},
			&cli.IntFlag{Name: "jobs", DefaultText: "all cores", Usage: "`N` parallel workers per disk"},
			&cli.BoolFlag{Name: "force", Usage: "replace existing outputs"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bars, no summary (warnings still go to stderr)"},
			&cli.BoolFlag{Name: "progress", Usage: "draw progress bars on stderr even when it is not a terminal"},
			&cli.BoolFlag{Name: "strict-mac", Usage: "refuse data files whose page MACs match no known scheme (VMware's is not public) instead of decrypting them unauthenticated"},
			&cli.BoolFlag{Name: "ignore-mac", Usage: "switch the page-MAC rule off: read a data file whose pages partly fail their MAC (damaged) as far as it goes"},
			&cli.BoolFlag{Name: "allow-unsafe-paths", Usage: "follow disk extent paths and parent hints that are absolute or contain \"..\", and symbolic links out of the VM folder"},
			&cli.BoolFlag{Name: "allow-cid-mismatch", Usage: "read a chain whose parentCID differs from the parent's CID"},
			&cli.BoolFlag{Name: "drop-vtpm", Usage: "remove the vTPM from the plain VMX (it then powers on unencrypted, but secrets sealed to the vTPM, e.g. BitLocker keys, are lost for this copy)"},
			&cli.BoolFlag{Name: "allow-missing-nvram", Usage: "recover a vTPM VM whose .nvram (the vTPM state) is missing or unreadable"},
		}, keyFlags()...),
		Action: recoverAction,
	})
}

func recoverAction(c *cli.Context) error {
	pos := c.Args().Slice()
	if len(pos) != 1 {
		return usagef("recover takes one VMPATH (got %d arguments)", len(pos))
	}
	out := c.String("output")
	if out == "" {
		return usagef("recover needs -o OUTDIR")
	}
	format := c.String("format")
	if format != recover.FormatVMDK && format != recover.FormatRaw {
		return usagef("--format %q: want vmdk or raw", format)
	}
	jobs := c.Int("jobs")
	if jobs < 0 || jobs > recover.MaxJobs {
		return usagef("--jobs %d: want 0 (all cores) to %d", jobs, recover.MaxJobs)
	}
	v, err := vmOpen(c, pos[0], vmOpenMode{prompt: true})
	if err != nil {
		return err
	}
	defer v.Close()
	opts := &recover.Options{
		Format:            format,
		Flatten:           c.Bool("flatten"),
		Jobs:              jobs,
		Force:             c.Bool("force"),
		DropVTPM:          c.Bool("drop-vtpm"),
		AllowMissingNVRAM: c.Bool("allow-missing-nvram"),
	}
	plan, err := recover.NewPlan(v, opts)
	if err != nil {
		return err
	}
	for _, o := range plan.Outputs() {
		if err := refuseInputs(c, filepath.Join(out, o)); err != nil {
			return err
		}
	}
	bars := newRecoverBars(c)
	if bars != nil {
		plan.SetProgress(bars.update)
	}
	rep, err := recoverRun(c.Context, plan, out)
	if bars != nil {
		bars.finish()
	}
	if err != nil {
		return err
	}
	if !c.Bool("quiet") {
		w := c.App.Writer
		fmt.Fprintf(w, "recovered %s into %s (%.1fs)\n", rep.VMX, rep.OutDir, rep.Seconds)
		fmt.Fprintf(w, "key safe opened by %s (%s)\n", rep.KeySafe.Source, rep.KeySafe.Locker)
		for _, o := range rep.Outputs {
			fmt.Fprintf(w, "  %s  %s\n", o.SHA256, o.File)
		}
		for _, d := range rep.Disks {
			fmt.Fprintf(w, "  disk %s: content sha256 %s (the plain virtual disk, as qemu-img convert -O raw reads it)\n", d.Device, d.ContentSHA256)
		}
		if rep.VTPM != nil {
			fmt.Fprintf(w, "vTPM: %s\n", rep.VTPM.Note)
		}
		for _, n := range rep.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
		for _, wn := range rep.Warnings {
			fmt.Fprintf(w, "warning: %s\n", wn)
		}
		fmt.Fprintf(w, "report: %s\n", filepath.Join(rep.OutDir, recover.ReportName))
	} else {
		// Quiet is no bars and no summary; what was left behind or
		// removed, and the vTPM, are still said, on stderr.
		for _, wn := range rep.Warnings {
			fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", wn)
		}
		if rep.VTPM != nil {
			fmt.Fprintf(c.App.ErrWriter, "warning: vTPM: %s\n", rep.VTPM.Note)
		}
	}
	return nil
}

// recoverRun runs a plan; tests replace it to cancel half-way.
var recoverRun = func(ctx context.Context, p *recover.Plan, out string) (*recover.Report, error) {
	return p.Run(ctx, out)
}

// recoverBars draws one progress bar per output and phase on stderr.
type recoverBars struct {
	w    *os.File
	mu   sync.Mutex
	cur  *progressbar.ProgressBar
	key  string
	last int64
}

// newRecoverBars returns nil unless bars are wanted: stderr is a terminal
// or --progress is set, and --quiet is not.
func newRecoverBars(c *cli.Context) *recoverBars {
	if c.Bool("quiet") {
		return nil
	}
	f, ok := c.App.ErrWriter.(*os.File)
	if !ok {
		return nil
	}
	if !c.Bool("progress") && !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &recoverBars{w: f}
}

func (b *recoverBars) update(p recover.Progress) {
	b.mu.Lock()
	defer b.mu.Unlock()
	key := p.Phase + " " + p.File
	if key != b.key {
		if b.cur != nil {
			b.cur.Finish()
			fmt.Fprintln(b.w)
		}
		b.key, b.last = key, 0
		b.cur = progressbar.NewOptions64(max(p.Total, 1), progressbar.OptionSetWriter(b.w), progressbar.OptionShowBytes(true),
			progressbar.OptionSetDescription(key), progressbar.OptionThrottle(100_000_000), progressbar.OptionSetWidth(30))
	}
	if p.Done > b.last {
		b.cur.Add64(p.Done - b.last)
		b.last = p.Done
	}
}

func (b *recoverBars) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != nil {
		b.cur.Finish()
		fmt.Fprintln(b.w)
	}
}
