package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/esxi"
)

// esxi vmtar: list or extract a visor tar (plain or gzip; any tar works).

type esxiVMTarReport struct {
	File        string            `json:"file"`
	Compression esxi.Compression  `json:"compression"`
	Format      string            `json:"format"`
	Members     []esxiVMTarMember `json:"members,omitempty"`
	Extracted   *esxiExtracted    `json:"extracted,omitempty"`
}

type esxiVMTarMember struct {
	*esxi.Entry
	Unsafe string `json:"unsafe,omitempty"` // why extraction would refuse it
}

func esxiVMTarAction(c *cli.Context) error {
	in, err := vmOneArg(c, "FILE")
	if err != nil {
		return err
	}
	out := c.String("output")
	if out != "" && c.Bool("list") {
		return usagef("esxi vmtar: --list writes nothing: drop -o")
	}
	var src io.Reader
	if in == "-" {
		src = c.App.Reader
		if src == nil {
			src = os.Stdin
		}
	} else {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.IsDir() {
			return usagef("%s is a folder, not an archive", in)
		}
		src = f
	}
	r, comp, err := esxi.Decompress(in, src)
	if err != nil {
		return err
	}
	rep := &esxiVMTarReport{File: in, Compression: comp}
	w := c.App.Writer
	if out != "" {
		if err := esxiEmptyOutdir(out); err != nil {
			return err
		}
		ctx, stop := esxiSignals(c)
		defer stop()
		x, err := esxi.NewExtractor(out, in, esxi.DefaultLimits)
		if err != nil {
			return err
		}
		rep.Format, err = esxi.WalkTar(in, r, func(e *esxi.Entry, d io.Reader) error {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("interrupted: nothing was extracted (%w)", err)
			}
			return x.Add(e, d)
		})
		if err == nil {
			err = x.Commit()
		} else {
			x.Abort()
		}
		if err != nil {
			return err
		}
		rep.Extracted = &esxiExtracted{Folder: out, Members: x.Members, Bytes: x.Written, Skipped: x.Skipped}
		if c.Bool("json") {
			return printJSON(w, rep)
		}
		fmt.Fprintf(w, "%s: %s (%s): extracted %d members (%d bytes of files) into %s (files 0600, folders 0700)\n",
			in, rep.Format, comp, x.Members, x.Written, out)
		for _, s := range x.Skipped {
			fmt.Fprintf(w, "  skipped %s: %s\n", s.Name, s.Reason)
		}
		return nil
	}
	rep.Format, err = esxi.WalkTar(in, r, func(e *esxi.Entry, _ io.Reader) error {
		m := esxiVMTarMember{Entry: e}
		if _, err := esxi.CheckEntry(in, e, esxi.DefaultLimits); err != nil {
			m.Unsafe = err.Error()
		}
		rep.Members = append(rep.Members, m)
		return nil
	})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(w, rep)
	}
	fmt.Fprintf(w, "%s: %s (%s), %d members\n", in, rep.Format, comp, len(rep.Members))
	return esxiTable(w, func(tw io.Writer) {
		esxiVMTarTable(tw, rep.Members)
	})
}

func esxiVMTarTable(tw io.Writer, members []esxiVMTarMember) {
	fmt.Fprintf(tw, "  MODE\tSIZE\tDATA AT\tMTIME\tNAME\tNOTE\n")
	for _, m := range members {
		name := m.Name
		if m.Linkname != "" {
			name += " -> " + m.Linkname
		}
		at := "-"
		if m.DataOffset > 0 {
			at = fmt.Sprint(m.DataOffset)
		}
		note := ""
		if m.Unsafe != "" {
			note = "UNSAFE: extraction refuses it"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\n", esxiMode(m.Type, m.Mode), m.Size, at, m.ModTime.Format("2006-01-02 15:04:05"), name, note)
	}
}
