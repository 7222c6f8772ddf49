package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
)

// The vmdk command: info and export of one virtual disk with its chain.

func init() {
	openFlags := []cli.Flag{
		&cli.BoolFlag{Name: "allow-unsafe-paths", Usage: "follow extent paths and parent hints that are absolute or contain \"..\""},
		&cli.BoolFlag{Name: "allow-cid-mismatch", Usage: "read a chain whose parentCID differs from the parent's CID"},
		&cli.BoolFlag{Name: "scan-truncated-stream", Usage: "read a streamOptimized disk without its footer by scanning its grains (what was cut off reads as zeros)"},
	}
	register(&cli.Command{
		Name:  "vmdk",
		Usage: "inspect or export a VMDK virtual disk (with its snapshot chain)",
		Subcommands: []*cli.Command{
			{
				Name:      "info",
				Usage:     "print the disk's type, extents, chain, sizes and encryption marks",
				ArgsUsage: "DISK [--json]",
				Flags:     append([]cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}}, openFlags...),
				Action:    vmdkInfo,
			},
			{
				Name:      "export",
				Usage:     "write the whole virtual disk (chain applied) as a sparse raw file or a new VMDK; encrypted disks are decrypted with the key options",
				ArgsUsage: "DISK -o OUT",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write to `OUT` (a temp file in its folder, renamed when complete)"},
					&cli.StringFlag{Name: "format", Value: "raw", Usage: "`FORMAT` of OUT: raw (sparse) or vmdk"},
					&cli.StringFlag{Name: "subformat", Value: vmdk.SubformatMonolithicSparse, Usage: "`SUBFORMAT` for --format vmdk: monolithicSparse, monolithicFlat, twoGbMaxExtentSparse or streamOptimized"},
					&cli.BoolFlag{Name: "force", Usage: "replace OUT if it exists"},
					&cli.IntFlag{Name: "jobs", DefaultText: "all cores", Usage: "`N` parallel workers"},
					&cli.BoolFlag{Name: "salvage", Usage: "write what can be read of a damaged or truncated disk (zeros for the rest) and list the missing ranges, instead of failing"},
				}, append(openFlags, keyFlags()...)...),
				Action: vmdkExport,
			},
		},
	})
}

func vmdkOpen(c *cli.Context) (*vmdk.Disk, error) {
	pos := c.Args().Slice()
	if len(pos) != 1 {
		return nil, usagef("%s takes one DISK (got %d arguments)", c.Command.FullName(), len(pos))
	}
	o := vmdkOpenOptions(c)
	o.Salvage = c.Bool("salvage")
	return vmdk.Open(pos[0], o)
}

// vmdkInfoReport is what `vmdk info --json` prints.
type vmdkInfoReport struct {
	Path       string         `json:"path"`
	CreateType string         `json:"createType"`
	Capacity   int64          `json:"capacity"` // bytes
	Encrypted  bool           `json:"encrypted"`
	Chain      []vmdkLinkInfo `json:"chain"` // top (the opened disk) first
	Warnings   []string       `json:"warnings,omitempty"`
	// Error is set when the disk could not be opened whole (a missing
	// extent or parent): the report then comes from the descriptor alone.
	Error string `json:"error,omitempty"`
}

type vmdkLinkInfo struct {
	Level              int              `json:"level"`
	Path               string           `json:"path"`
	CreateType         string           `json:"createType"`
	CID                string           `json:"cid"`
	ParentCID          string           `json:"parentCID"`
	ParentFileNameHint string           `json:"parentFileNameHint,omitempty"`
	Capacity           int64            `json:"capacity"`
	AllocatedBytes     int64            `json:"allocatedBytes"` // -1: unknown (extents not opened)
	GrainSize          int64            `json:"grainSize,omitempty"`
	EncryptionKeys     bool             `json:"encryptionKeys"` // an encryptionKeys locator line is present
	IOFilters          []string         `json:"ioFilters,omitempty"`
	VMCryptFilter      bool             `json:"vmcryptFilter"` // vmwarevmcrypt in ddb.iofilters
	Extents            []vmdkExtentInfo `json:"extents"`
	Warnings           []string         `json:"warnings,omitempty"`
}

type vmdkExtentInfo struct {
	Access    string `json:"access"`
	Type      string `json:"type"`
	File      string `json:"file,omitempty"`
	Start     int64  `json:"start"` // virtual byte offset
	Size      int64  `json:"size"`  // bytes
	Format    string `json:"format"`
	GrainSize int64  `json:"grainSize,omitempty"`
}

func vmdkBuildInfo(d *vmdk.Disk) (*vmdkInfoReport, error) {
	top := d.Links()[0]
	r := &vmdkInfoReport{Path: top.Path, CreateType: top.Descriptor.CreateType, Capacity: d.Size(), Encrypted: d.Encrypted(), Warnings: d.Warnings()}
	for _, l := range d.Links() {
		alloc, err := l.AllocatedBytes()
		if err != nil {
			return nil, err
		}
		li := vmdkLinkInfo{
			Level: l.Level, Path: l.Path, CreateType: l.Descriptor.CreateType,
			CID: fmt.Sprintf("%08x", l.CID), ParentCID: fmt.Sprintf("%08x", l.ParentCID),
			ParentFileNameHint: l.Descriptor.ParentFileNameHint,
			Capacity:           l.Size(), AllocatedBytes: alloc, GrainSize: l.GrainSize,
			EncryptionKeys: l.EncryptionKeys != "", IOFilters: l.Descriptor.IOFilters(),
			Warnings: l.Warnings(),
		}
		for _, f := range li.IOFilters {
			li.VMCryptFilter = li.VMCryptFilter || f == "vmwarevmcrypt"
		}
		for _, x := range l.Extents {
			li.Extents = append(li.Extents, vmdkExtentInfo{Access: x.Line.Access, Type: x.Line.Type, File: x.Path,
				Start: x.Start, Size: x.Size, Format: x.Format, GrainSize: x.GrainSize})
		}
		r.Chain = append(r.Chain, li)
	}
	return r, nil
}

func vmdkInfo(c *cli.Context) error {
	d, err := vmdkOpen(c)
	var r *vmdkInfoReport
	if err != nil {
		// A missing extent or parent file: describe what the descriptor
		// says, then fail with the error.
		pos := c.Args().Slice()
		if !errors.Is(err, fs.ErrNotExist) || len(pos) != 1 {
			return err
		}
		desc, derr := vmdk.ReadDescriptor(pos[0])
		if derr != nil {
			return err
		}
		r = vmdkDescriptorInfo(pos[0], desc, err)
	} else {
		defer d.Close()
		if r, err = vmdkBuildInfo(d); err != nil {
			return err
		}
	}
	w := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if e := enc.Encode(r); e != nil {
			return e
		}
	} else if e := vmdkPrintInfo(w, r); e != nil {
		return e
	}
	if r.Error != "" {
		return err
	}
	return nil
}

// vmdkDescriptorInfo describes a disk from its descriptor alone, when its
// extents or parents could not be opened (openErr).
func vmdkDescriptorInfo(path string, d *vmdk.Descriptor, openErr error) *vmdkInfoReport {
	li := vmdkLinkInfo{
		Path: path, CreateType: d.CreateType, CID: fmt.Sprintf("%08x", d.CID), ParentCID: fmt.Sprintf("%08x", d.ParentCID),
		ParentFileNameHint: d.ParentFileNameHint, Capacity: d.Sectors() * vmdk.SectorSize, AllocatedBytes: -1,
		EncryptionKeys: d.EncryptionKeys != "", IOFilters: d.IOFilters(),
	}
	for _, f := range li.IOFilters {
		li.VMCryptFilter = li.VMCryptFilter || f == "vmwarevmcrypt"
	}
	var start int64
	for _, e := range d.Extents {
		li.Extents = append(li.Extents, vmdkExtentInfo{Access: e.Access, Type: e.Type, File: e.File, Start: start, Size: e.Sectors * vmdk.SectorSize, Format: "not opened"})
		start += e.Sectors * vmdk.SectorSize
	}
	return &vmdkInfoReport{Path: path, CreateType: d.CreateType, Capacity: li.Capacity, Encrypted: d.Encrypted(),
		Chain: []vmdkLinkInfo{li}, Error: openErr.Error()}
}

func vmdkPrintInfo(out io.Writer, r *vmdkInfoReport) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "disk:\t%s\n", r.Path)
	fmt.Fprintf(w, "createType:\t%s\n", r.CreateType)
	fmt.Fprintf(w, "capacity:\t%d bytes (%s)\n", r.Capacity, humanBytes(r.Capacity))
	enc := "no"
	if r.Encrypted {
		enc = "yes (VM encryption: export and recover need the VM's keys)"
	}
	fmt.Fprintf(w, "encrypted:\t%s\n", enc)
	fmt.Fprintf(w, "chain:\t%d link(s)\n", len(r.Chain))
	for _, l := range r.Chain {
		fmt.Fprintf(w, "\n[%d]\t%s\n", l.Level, l.Path)
		fmt.Fprintf(w, "  createType:\t%s\n", l.CreateType)
		fmt.Fprintf(w, "  CID:\t%s\n", l.CID)
		parent := l.ParentCID
		if l.ParentCID == fmt.Sprintf("%08x", vmdk.NoParentCID) {
			parent += " (no parent)"
		}
		fmt.Fprintf(w, "  parentCID:\t%s\n", parent)
		if l.ParentFileNameHint != "" {
			fmt.Fprintf(w, "  parentFileNameHint:\t%s\n", l.ParentFileNameHint)
		}
		fmt.Fprintf(w, "  capacity:\t%d bytes (%s)\n", l.Capacity, humanBytes(l.Capacity))
		if l.AllocatedBytes >= 0 {
			fmt.Fprintf(w, "  allocated:\t%d bytes (%s)\n", l.AllocatedBytes, humanBytes(l.AllocatedBytes))
		} else {
			fmt.Fprintf(w, "  allocated:\tunknown (extents not opened)\n")
		}
		if l.GrainSize > 0 {
			fmt.Fprintf(w, "  grain size:\t%d bytes\n", l.GrainSize)
		}
		fmt.Fprintf(w, "  encryptionKeys:\t%s\n", yesNo(l.EncryptionKeys))
		filters := strings.Join(l.IOFilters, ",")
		if filters == "" {
			filters = "-"
		}
		fmt.Fprintf(w, "  ddb.iofilters:\t%s\n", filters)
		for i, x := range l.Extents {
			name := x.File
			if name == "" {
				name = "-"
			}
			fmt.Fprintf(w, "  extent %d:\t%s %s %s at %d, %d bytes, %s\n", i+1, x.Access, x.Type, name, x.Start, x.Size, x.Format)
		}
		for _, s := range l.Warnings {
			fmt.Fprintf(w, "  warning:\t%s\n", s)
		}
	}
	return w.Flush()
}

func yesNo(b bool) string {
	if b {
		return "present"
	}
	return "absent"
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// vmdkExportOptions are the output settings of an export.
type vmdkExportOptions struct {
	Format    string // "raw" or "vmdk"
	Subformat string // for "vmdk"
	Force     bool
	Jobs      int
	Salvage   bool
	Progress  vmdk.Progress // may be nil; raw counts Data bytes, vmdk every virtual byte
}

func vmdkExport(c *cli.Context) error {
	d, err := vmdkOpen(c)
	if err != nil {
		return err
	}
	defer d.Close()
	out := c.String("output")
	if out == "" {
		return usagef("vmdk export needs -o OUT")
	}
	o := vmdkExportOptions{Format: c.String("format"), Subformat: c.String("subformat"), Force: c.Bool("force"), Jobs: c.Int("jobs"), Salvage: c.Bool("salvage")}
	if err := o.check(); err != nil {
		return err
	}
	if _, err := os.Lstat(out); err == nil && !o.Force {
		return usagef("%s exists; use --force to replace it", out)
	}
	if err := refuseInputs(c, out); err != nil {
		return err
	}
	if err := vmdkCheckNotInput(out, d, o.Format); err != nil {
		return err
	}
	if d.Encrypted() {
		// Decrypted with the key options (vmdkexport_keys.go); never
		// exported as ciphertext.
		d.Close()
		return vmdkExportEncrypted(c, out, o)
	}
	runs, err := d.Allocated()
	if err != nil {
		return err
	}
	return exportDisk(c, out, d, d.Size(), runs, o)
}

func (o *vmdkExportOptions) check() error {
	switch o.Format {
	case "raw":
	case "vmdk":
		switch o.Subformat {
		case vmdk.SubformatMonolithicSparse, vmdk.SubformatMonolithicFlat, vmdk.SubformatTwoGbMaxExtentSparse, vmdk.SubformatStreamOptimized:
		default:
			return usagef("--subformat %q: want monolithicSparse, monolithicFlat, twoGbMaxExtentSparse or streamOptimized", o.Subformat)
		}
	default:
		return usagef("--format %q: want raw or vmdk", o.Format)
	}
	if o.Jobs < 0 || o.Jobs > 256 {
		return usagef("--jobs %d: want 0 (all cores) to 256", o.Jobs)
	}
	return nil
}

// vmdkCheckNotInput refuses, --force or not, an output that would replace a
// file of the disk being read: OUT itself, or for a VMDK the extent files
// named after it (OUT-flat.vmdk, OUT-s001.vmdk...).
func vmdkCheckNotInput(out string, d *vmdk.Disk, format string) error {
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	dir, base := filepath.Dir(abs), filepath.Base(abs)
	stem := strings.TrimSuffix(base, filepath.Ext(base)) + "-"
	ost, _ := os.Stat(out)
	var inputs []string
	for _, l := range d.Links() {
		inputs = append(inputs, l.Path)
		for _, e := range l.Extents {
			if e.Path != "" {
				inputs = append(inputs, e.Path)
			}
		}
	}
	for _, in := range inputs {
		ia, err := filepath.Abs(in)
		if err != nil {
			continue
		}
		same := ia == abs
		if st, err := os.Stat(in); err == nil && ost != nil && os.SameFile(st, ost) {
			same = true
		}
		if format == "vmdk" && filepath.Dir(ia) == dir && strings.HasPrefix(filepath.Base(ia), stem) {
			same = true
		}
		if same {
			return usagef("%s would replace %s, a file of the disk being read: vmcrypt never writes over its inputs", out, in)
		}
	}
	return nil
}

// exportDisk writes the virtual disk src (size bytes, allocation map runs)
// to out as a sparse raw file or a VMDK: a temp file
// renamed when complete, after a free-space check. It takes any
// io.ReaderAt so that a decrypting reader can be passed. With Salvage,
// unreadable ranges are written as zeros and listed on stderr; without
// it they fail the export (exit 5).
func exportDisk(c *cli.Context, out string, src io.ReaderAt, size int64, runs []vmdk.Run, o vmdkExportOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	var data int64 // what the output stores at most
	for _, r := range runs {
		if r.State == vmdk.Data {
			data += r.Len
		}
	}
	if err := outfile.CheckSpace(filepath.Dir(out), data); err != nil {
		return err
	}
	if o.Format == "vmdk" {
		data = size // vmdk.Write reports every virtual byte
	}
	for _, s := range outfile.RemoveStale(filepath.Dir(out)) {
		fmt.Fprintf(c.App.ErrWriter, "vmcrypt: removed %s, left by an interrupted run (it may have held decrypted data)\n", s)
	}
	if bar := vmdkProgressBar(c, data); bar != nil {
		o.Progress = func(done, _ int64) { bar.Set64(done) }
		defer bar.Finish()
	}
	var salvage *vmdk.SalvageReader
	if o.Salvage {
		salvage = vmdk.NewSalvageReader(src)
		src = salvage
	}
	var err error
	if o.Format == "vmdk" {
		err = vmdk.Write(c.Context, out, src, size, runs, &vmdk.WriteOptions{Subformat: o.Subformat, Jobs: o.Jobs, Progress: o.Progress, Overwrite: o.Force})
	} else {
		err = vmdk.ExportRaw(c.Context, out, src, size, runs, &vmdk.CopyOptions{Jobs: o.Jobs, Progress: o.Progress, Overwrite: o.Force})
	}
	if errors.Is(err, os.ErrExist) {
		return usagef("%s exists; use --force to replace it", out)
	}
	if err != nil {
		return err
	}
	if salvage != nil {
		missing := salvage.Missing()
		var n int64
		for _, m := range missing {
			n += m.Len
			fmt.Fprintf(c.App.ErrWriter, "vmcrypt: salvage: bytes %d-%d (%d) could not be read and were written as zeros\n", m.Off, m.Off+m.Len-1, m.Len)
		}
		if len(missing) > 0 {
			fmt.Fprintf(c.App.ErrWriter, "vmcrypt: salvage: %s written with %d missing bytes in %d range(s)\n", out, n, len(missing))
		}
	}
	return nil
}

// vmdkProgressBar draws progress on stderr when it is a terminal.
func vmdkProgressBar(c *cli.Context, total int64) *progressbar.ProgressBar {
	f, ok := c.App.ErrWriter.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) || total == 0 {
		return nil
	}
	return progressbar.NewOptions64(total, progressbar.OptionSetWriter(f), progressbar.OptionShowBytes(true),
		progressbar.OptionSetDescription("export"), progressbar.OptionThrottle(200_000_000), progressbar.OptionClearOnFinish())
}
