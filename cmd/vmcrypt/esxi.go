package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/esxi"
)

// The esxi command: the host side of ESXi encryption (package
// recover/esxi): the host's secure configuration (config, inspect), any
// DataTransformEnvelope such as an encrypted core dump (envelope), and
// visor tar archives (vmtar).

func init() {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON"}
	ksFlag := &cli.StringFlag{Name: "keystore", Usage: "the host's key store `FILE` (encryption.info), when it is not beside or inside PATH"}
	forceFlag := &cli.BoolFlag{Name: "force", Usage: "replace an existing output file"}
	register(&cli.Command{
		Name:  "esxi",
		Usage: "ESXi host files: the encrypted host configuration, encrypted core dumps, visor tar archives",
		Subcommands: []*cli.Command{
			{
				Name:  "config",
				Usage: "decrypt a host's configuration (configBundle-*.tgz, state.tgz, local.tgz.ve, or a boot-bank folder) to local.tgz or its files",
				Description: "Finds local.tgz.ve and its key store encryption.info, derives the key (mode NONE),\n" +
					"checks the key hash and the GCM tag, and writes OUTDIR/local.tgz (a temp file renamed\n" +
					"when verified), or with --extract its files under OUTDIR (safe extraction: no absolute\n" +
					"paths, no \"..\", no links out, no devices; files 0600). A key store sealed to the host's\n" +
					"TPM exits 4. A plain pre-7.0 U2 local.tgz is copied as is.",
				ArgsUsage: "PATH -o OUTDIR",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write into `OUTDIR` (created if missing)"},
					&cli.BoolFlag{Name: "list", Usage: "list the configuration's files; write nothing"},
					&cli.BoolFlag{Name: "extract", Usage: "extract the files under OUTDIR (which must be empty or new) instead of writing local.tgz"},
					ksFlag, forceFlag, jsonFlag,
				},
				Action: esxiConfigAction,
			},
			{
				Name:      "inspect",
				Usage:     "show a host configuration: key store, envelope, ESXi version, host name, registered VMs, secrets (writes nothing)",
				ArgsUsage: "PATH",
				Flags:     []cli.Flag{ksFlag, jsonFlag},
				Action:    esxiInspectAction,
			},
			{
				Name:  "envelope",
				Usage: "decrypt any DataTransformEnvelope (an encrypted core dump, local.tgz.ve) with a key found by its key id",
				Description: "The key comes from --key-hex-file (a raw 32-byte host key in hex) or the key options\n" +
					"(--kek, --nkp-backup), looked up by the envelope's vmware.keyInfo id. A key that does not\n" +
					"match the envelope's key hash exits 3 before anything is decrypted; no key for the id\n" +
					"exits 4. The output is written to a temp file and renamed only after the GCM tag verified.",
				ArgsUsage: "FILE -o OUT",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the plaintext to `OUT` (required)"},
					&cli.Int64Flag{Name: "offset", Usage: "the envelope starts at byte `N` of FILE (its end is found by its footer)"},
					&cli.StringFlag{Name: "context", Usage: "the `CONTEXT` string after the header in the additional data (default: try none, then \"ESXConfiguration\")"},
					&cli.StringFlag{Name: "provider", Usage: "key provider `NAME` to match in KEK files (entries without a provider match any)"},
					&cli.StringFlag{Name: "key-hex-file", Usage: "read a raw 32-byte host key, in hex, from `FILE`"},
					&cli.BoolFlag{Name: "progress", Usage: "draw a progress bar even when stderr is not a terminal"},
					forceFlag,
				}, keyFlags()...),
				Action: esxiEnvelopeAction,
			},
			{
				Name:      "vmtar",
				Usage:     "list or extract a visor tar (ESXi vmtar: *.v00, *.vgz, *.tgz; plain or gzip; FILE - reads stdin)",
				ArgsUsage: "FILE [--list | -o OUTDIR]",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "list", Usage: "list the members (the default without -o)"},
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "extract into `OUTDIR` (empty or new)"},
					jsonFlag,
				},
				Action: esxiVMTarAction,
			},
		},
	})
}

// esxiSignals returns a context canceled by Ctrl-C or SIGTERM, so that a
// long decryption stops and removes its temp file.
func esxiSignals(c *cli.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
}

// ctxWriter fails writes once ctx is done.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, fmt.Errorf("interrupted: no output was written (%w)", err)
	}
	return c.w.Write(p)
}

// esxiWriteStream is writeNewFile (output.go) for output made by a
// stream: fill writes to a temp file in path's folder (0600), which is
// synced and moved to path only when fill returns nil (for a decryption,
// after the tag verified); any failure removes it. It returns the sha256
// and size of what was written.
func esxiWriteStream(path string, replace bool, fill func(io.Writer) error) (string, int64, error) {
	return writeStream(path, replace, fill)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// esxiSameFile refuses an output that is one of the inputs.
func esxiSameFile(out string, ins ...string) error {
	o, err := os.Stat(out)
	if err != nil {
		return nil
	}
	for _, in := range ins {
		if i, err := os.Stat(in); err == nil && os.SameFile(i, o) {
			return usagef("the output %s is the input %s", out, in)
		}
	}
	return nil
}

// esxiConfigReport is what config and inspect print with --json.
type esxiConfigReport struct {
	Path         string            `json:"path"`
	Kind         string            `json:"kind"`
	EnvelopeFrom string            `json:"envelopeFrom,omitempty"`
	Envelope     *esxiEnvelopeInfo `json:"envelope,omitempty"`
	KeyStoreFrom string            `json:"keyStoreFrom,omitempty"`
	KeyStore     *esxi.KeyStore    `json:"keyStore,omitempty"`
	PlainFrom    string            `json:"plainFrom,omitempty"`
	BootCfg      map[string]string `json:"bootCfg,omitempty"`
	Containers   []esxi.Container  `json:"containers,omitempty"`
	Notes        []string          `json:"notes,omitempty"`
	// Opened: the configuration was read (the tag verified, or plain).
	Opened    bool            `json:"opened"`
	OpenError string          `json:"openError,omitempty"`
	Host      *esxi.HostInfo  `json:"host,omitempty"`
	Output    *esxiOutputInfo `json:"output,omitempty"`
	Extracted *esxiExtracted  `json:"extracted,omitempty"`
}

// esxiEnvelopeInfo describes an envelope (no secret: the key hash is a
// hash, the IV public).
type esxiEnvelopeInfo struct {
	Size       int64               `json:"size"`
	Offset     int64               `json:"offset"`
	Version    uint32              `json:"version"`
	HeaderSize uint32              `json:"headerSize"`
	KeyID      string              `json:"keyId"`
	Cipher     string              `json:"cipher"`
	IV         string              `json:"iv"`
	KeyHash    string              `json:"keyHash"`
	DataSize   int64               `json:"dataSize"`
	Attributes []esxiAttributeInfo `json:"attributes"`
}

type esxiAttributeInfo struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Flag  uint8  `json:"flag"`
	Value string `json:"value"`
}

func esxiEnvelopeOf(e *esxi.Envelope) *esxiEnvelopeInfo {
	if e == nil {
		return nil
	}
	info := &esxiEnvelopeInfo{Size: e.Size, Offset: e.Offset, Version: e.Version, HeaderSize: e.HeaderSize, KeyID: e.KeyID,
		Cipher: e.CipherName, IV: hex.EncodeToString(e.IV), KeyHash: hex.EncodeToString(e.KeyHash), DataSize: e.DataSize}
	for _, a := range e.Attributes {
		info.Attributes = append(info.Attributes, esxiAttributeInfo{a.Name, a.Type.String(), a.Flag, a.Text()})
	}
	return info
}

// esxiOutputInfo is a file written.
type esxiOutputInfo struct {
	File    string `json:"file"`
	Bytes   int64  `json:"bytes"`
	SHA256  string `json:"sha256"`
	Context string `json:"context,omitempty"` // the envelope context the tag verified under
	Source  string `json:"source,omitempty"`  // where the key came from
}

// esxiExtracted is an extraction's outcome.
type esxiExtracted struct {
	Folder  string         `json:"folder"`
	Members int            `json:"members"`
	Bytes   int64          `json:"bytes"`
	Skipped []esxi.Skipped `json:"skipped,omitempty"`
}

func esxiReportOf(h *esxi.HostConfig) *esxiConfigReport {
	return &esxiConfigReport{Path: h.Path, Kind: h.Kind, EnvelopeFrom: h.EnvelopeFrom, Envelope: esxiEnvelopeOf(h.Envelope),
		KeyStoreFrom: h.KeyStoreFrom, KeyStore: h.KeyStore, PlainFrom: h.PlainFrom, BootCfg: h.BootCfg, Containers: h.Containers, Notes: h.Notes}
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// esxiPrintSource prints where the configuration and its key store are.
func esxiPrintSource(w io.Writer, r *esxiConfigReport, h *esxi.HostConfig) {
	fmt.Fprintf(w, "%s: %s\n", r.Path, r.Kind)
	if h.Envelope != nil {
		e := h.Envelope
		fmt.Fprintf(w, "  envelope:   %s (%d bytes, version %d, %s, key id %s)\n", h.EnvelopeFrom, e.Size, e.Version, e.CipherName, e.KeyID)
	} else {
		fmt.Fprintf(w, "  plain:      %s (%d bytes): a configuration from before 7.0 U2, not encrypted\n", h.PlainFrom, h.PlainSize)
	}
	if ks := h.KeyStore; ks != nil {
		how := "key derived offline from the file itself (obfuscation, not encryption)"
		if ks.Sealed() {
			how = "sealed to the host's TPM"
		}
		kc := "not set"
		if ks.IncludeKeyCacheSet {
			kc = "FALSE (no Key Persistence)"
			if ks.IncludeKeyCache {
				kc = "TRUE (Key Persistence: the host keeps VM keys in its configuration)"
			}
		}
		fmt.Fprintf(w, "  key store:  %s: mode %s, %s\n", h.KeyStoreFrom, ks.Mode, how)
		if ks.KeyID != "" {
			fmt.Fprintf(w, "              key id %s\n", ks.KeyID)
		}
		fmt.Fprintf(w, "              includeKeyCache %s\n", kc)
	} else if h.Envelope != nil {
		fmt.Fprintf(w, "  key store:  not found (%s beside the envelope, or --keystore FILE)\n", esxi.NameKeyStore)
	}
	for _, n := range h.Notes {
		fmt.Fprintf(w, "  note:       %s\n", n)
	}
}

func esxiConfigAction(c *cli.Context) error {
	in, err := vmOneArg(c, "PATH")
	if err != nil {
		return err
	}
	out, list, extract := c.String("output"), c.Bool("list"), c.Bool("extract")
	switch {
	case list && (out != "" || extract):
		return usagef("esxi config: --list writes nothing: drop -o and --extract")
	case !list && out == "":
		return usagef("esxi config: -o OUTDIR is required (or --list)")
	}
	h, err := esxi.FindConfig(in, c.String("keystore"))
	if err != nil {
		return err
	}
	defer h.Close()
	ctx, stop := esxiSignals(c)
	defer stop()
	rep := esxiReportOf(h)
	w := c.App.Writer
	if !c.Bool("json") {
		esxiPrintSource(w, rep, h)
	}
	switch {
	case list:
		hi, err := h.Inspect()
		if err != nil {
			return err
		}
		rep.Opened, rep.Host = true, hi
		if c.Bool("json") {
			return printJSON(w, rep)
		}
		esxiPrintFiles(w, hi.Files)
		return nil
	case extract:
		if err := esxiEmptyOutdir(out); err != nil {
			return err
		}
		x, err := esxi.NewExtractor(out, h.Path, esxi.DefaultLimits)
		if err != nil {
			return err
		}
		err = h.Walk(func(e *esxi.Entry, r io.Reader) error {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("interrupted: nothing was extracted (%w)", err)
			}
			return x.Add(e, r)
		})
		if err == nil {
			err = x.Commit()
		} else {
			x.Abort()
		}
		if err != nil {
			return err
		}
		rep.Opened = true
		rep.Extracted = &esxiExtracted{Folder: out, Members: x.Members, Bytes: x.Written, Skipped: x.Skipped}
		if c.Bool("json") {
			return printJSON(w, rep)
		}
		esxiPrintOpened(w, h)
		fmt.Fprintf(w, "extracted %d members (%d bytes of files) into %s (files 0600, folders 0700)\n", x.Members, x.Written, out)
		for _, s := range x.Skipped {
			fmt.Fprintf(w, "  skipped %s: %s\n", s.Name, s.Reason)
		}
		return nil
	}
	if h.Encrypted() {
		if _, err := h.Key(); err != nil { // sealed, missing or wrong: before making anything
			return err
		}
	}
	_, statErr := os.Stat(out)
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		defer func() {
			if rep.Output == nil {
				os.Remove(out) // made here, left empty by a failure
			}
		}()
	}
	dst := filepath.Join(out, esxi.NamePlain)
	if err := esxiSameFile(dst, in); err != nil {
		return err
	}
	var res *esxi.Result
	sum, n, err := esxiWriteStream(dst, c.Bool("force"), func(fw io.Writer) error {
		var err error
		res, err = h.WriteLocalTgz(ctxWriter{ctx, fw}, nil)
		return err
	})
	if err != nil {
		return err
	}
	rep.Opened = true
	rep.Output = &esxiOutputInfo{File: dst, Bytes: n, SHA256: sum}
	if res != nil {
		rep.Output.Context = res.Context
	}
	if c.Bool("json") {
		return printJSON(w, rep)
	}
	esxiPrintOpened(w, h)
	fmt.Fprintf(w, "wrote %s (%d bytes, sha256 %s)\n", dst, n, sum)
	return nil
}

func esxiPrintOpened(w io.Writer, h *esxi.HostConfig) {
	if h.Envelope != nil {
		fmt.Fprintf(w, "  opened:     key hash and GCM tag verified\n")
	} else {
		fmt.Fprintf(w, "  copied:     as is (nothing to decrypt)\n")
	}
}

// esxiEmptyOutdir: an extraction goes into a new or empty folder.
func esxiEmptyOutdir(out string) error {
	st, err := os.Stat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return usagef("%s is not a folder", out)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return usagef("%s is not empty: extract into a new or empty folder", out)
	}
	return nil
}

// esxiTable draws a table with tabwriter, without trailing blanks.
func esxiTable(w io.Writer, draw func(tw io.Writer)) error {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	draw(tw)
	tw.Flush()
	for _, l := range strings.SplitAfter(b.String(), "\n") {
		if l == "" {
			continue
		}
		if _, err := io.WriteString(w, strings.TrimRight(l, " \n")+"\n"); err != nil {
			return err
		}
	}
	return nil
}

func esxiPrintFiles(w io.Writer, files []esxi.HostFile) {
	esxiTable(w, func(tw io.Writer) { esxiFilesTable(tw, files) })
}

func esxiFilesTable(tw io.Writer, files []esxi.HostFile) {
	fmt.Fprintf(tw, "  MODE\tSIZE\tMTIME\tNAME\tNOTE\n")
	for _, f := range files {
		name := f.Name
		if f.Linkname != "" {
			name += " -> " + f.Linkname
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\n", esxiMode(f.Type, f.Mode), f.Size, f.ModTime.Format("2006-01-02 15:04:05"), name, f.Secret)
	}
}

// esxiMode is ls-style: type letter and permission bits.
func esxiMode(t esxi.EntryType, mode int64) string {
	c := map[esxi.EntryType]byte{esxi.TypeDir: 'd', esxi.TypeSymlink: 'l', esxi.TypeHardlink: 'h', esxi.TypeDevice: 'c', esxi.TypeFIFO: 'p', esxi.TypeOther: '?'}[t]
	if c == 0 {
		c = '-'
	}
	b := []byte{c}
	for i := 8; i >= 0; i-- {
		if mode&(1<<i) != 0 {
			b = append(b, "rwxrwxrwx"[8-i])
		} else {
			b = append(b, '-')
		}
	}
	return string(b)
}

func esxiInspectAction(c *cli.Context) error {
	in, err := vmOneArg(c, "PATH")
	if err != nil {
		return err
	}
	h, err := esxi.FindConfig(in, c.String("keystore"))
	if err != nil {
		return err
	}
	defer h.Close()
	rep := esxiReportOf(h)
	hi, openErr := h.Inspect()
	if openErr == nil {
		rep.Opened, rep.Host = true, hi
	} else {
		rep.OpenError = message(openErr)
	}
	w := c.App.Writer
	if c.Bool("json") {
		if err := printJSON(w, rep); err != nil {
			return err
		}
		return openErr
	}
	esxiPrintSource(w, rep, h)
	if e := h.Envelope; e != nil {
		fmt.Fprintf(w, "  attributes:\n")
		for _, a := range e.Attributes {
			fmt.Fprintf(w, "    %-18s %-6s %s\n", a.Name, a.Type, a.Text())
		}
	}
	if openErr != nil {
		fmt.Fprintf(w, "configuration: not opened (see below)\n")
		return openErr
	}
	if h.Envelope != nil {
		fmt.Fprintf(w, "configuration: opened (key hash and GCM tag verified)\n")
	} else {
		fmt.Fprintf(w, "configuration: plain (not encrypted)\n")
	}
	na := func(s string) string {
		if s == "" {
			return "not stated"
		}
		return s
	}
	ver := na(hi.Version)
	if hi.VersionFrom != "" {
		ver += " (" + hi.VersionFrom + ")"
	}
	fmt.Fprintf(w, "  ESXi version: %s\n", ver)
	fmt.Fprintf(w, "  host name:    %s\n", na(hi.HostName))
	fmt.Fprintf(w, "  system uuid:  %s\n", na(hi.SystemUUID))
	if len(hi.CryptoSettings) == 0 {
		fmt.Fprintf(w, "  crypto state and key providers: not stated in esx.conf\n")
	} else {
		fmt.Fprintf(w, "  crypto state: %s\n", na(hi.CryptoState))
		fmt.Fprintf(w, "  esx.conf encryption/KMS settings:\n")
		for _, s := range hi.CryptoSettings {
			fmt.Fprintf(w, "    %s = %q\n", s.Key, s.Value)
		}
	}
	if !hi.HasVMList {
		fmt.Fprintf(w, "VMs registered: no %s\n", esxi.PathVMInventory)
	} else {
		fmt.Fprintf(w, "VMs registered (%s): %d\n", esxi.PathVMInventory, len(hi.VMs))
		for _, vm := range hi.VMs {
			fmt.Fprintf(w, "  %s  %s\n", vm.ID, vm.Path)
		}
	}
	if s := hi.Secrets(); len(s) > 0 {
		fmt.Fprintf(w, "Secrets in the configuration: %d\n", len(s))
		for _, f := range s {
			fmt.Fprintf(w, "  %s (%s)\n", f.Name, f.Secret)
		}
	}
	fmt.Fprintf(w, "Files: %d (%d bytes)\n", len(hi.Files), hi.TotalSize)
	esxiPrintFiles(w, hi.Files)
	return nil
}
