package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The nkp command: Native Key Provider backups (.p12). The password comes
// from --password-file or VMCRYPT_NKP_PASSWORD, else it is empty; never
// from argv.

func init() {
	pwFlag := &cli.StringFlag{Name: "password-file", Usage: "read the backup password from `FILE`; or set " + envNKPPassword + " (empty password if neither)"}
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON"}
	register(&cli.Command{
		Name:  "nkp",
		Usage: "Native Key Provider backups (.p12): inspect, verify against VMs, create",
		Subcommands: []*cli.Command{
			{
				Name:      "inspect",
				Usage:     "show a backup's KDK id, provider, algorithms and iterations (never a secret)",
				ArgsUsage: "BACKUP",
				Flags:     []cli.Flag{pwFlag, jsonFlag},
				Action:    nkpInspect,
			},
			{
				Name:      "verify",
				Usage:     "check that a backup opens every NKP-locked VM (VMX key safe and every disk key)",
				ArgsUsage: "BACKUP VMPATH...",
				Flags:     []cli.Flag{pwFlag, jsonFlag},
				Action:    nkpVerify,
			},
			{
				Name:      "create",
				Usage:     "make a new KDK and write it as a backup; prints the KDK id",
				ArgsUsage: "OUT.p12",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "provider", Usage: "key provider `NAME` stored in the backup (required)"},
					pwFlag,
					&cli.BoolFlag{Name: "force", Usage: "replace OUT.p12 if it exists"},
					jsonFlag,
				},
				Action: nkpCreate,
			},
		},
	})
}

// nkpReadBackup parses a backup file without the password.
func nkpReadBackup(path string) (*nkp.Backup, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("%s is not a regular file", path)
	}
	b, err := nkp.Parse(f, fi.Size())
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	return b, fi.Size(), nil
}

// nkpInspectReport is what `nkp inspect` prints.
type nkpInspectReport struct {
	File       string          `json:"file"`
	Size       int64           `json:"size"`
	Format     string          `json:"format"`
	MAC        *nkp.MACInfo    `json:"mac,omitempty"`
	Containers []nkp.Container `json:"containers"`
	// Password: "verified" (the given or the empty password opens it),
	// "not given" (no password given and the empty one does not open it),
	// "does not open" (see Error).
	Password string       `json:"password"`
	KDKs     []nkpKDKInfo `json:"kdks,omitempty"`
	Error    string       `json:"error,omitempty"`
}

type nkpKDKInfo struct {
	ID       string `json:"id"`
	Provider string `json:"provider,omitempty"`
}

func nkpInspect(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) != 1 {
		return usagef("nkp inspect needs one BACKUP")
	}
	path := args[0]
	b, size, err := nkpReadBackup(path)
	if err != nil {
		return err
	}
	pw, given, err := nkpPasswordGiven(c, "password-file")
	if err != nil {
		return err
	}
	rep := nkpInspectReport{File: path, Size: size, Format: "PKCS#12 NKP backup (modelled format)", MAC: b.MAC, Containers: b.Containers}
	kdks, err := b.Open(pw)
	switch {
	case err == nil:
		rep.Password = "verified"
		if !given {
			rep.Password = "verified (empty password)"
		}
		for _, k := range kdks {
			rep.KDKs = append(rep.KDKs, nkpKDKInfo{ID: k.ID.String(), Provider: k.Provider})
		}
	case !given && errors.Is(err, keysafe.ErrWrongKey):
		rep.Password = "not given (the empty password does not open it)"
		err = nil
	case errors.Is(err, keysafe.ErrWrongKey):
		// Still show the structure; the exit code says what failed.
		rep.Password = "wrong password (the backup's MAC does not verify with it)"
		rep.Error = err.Error()
	default:
		// The password was not refused: what the backup holds is.
		rep.Password = "not refused; the backup cannot be read (see error)"
		rep.Error = err.Error()
	}
	if c.Bool("json") {
		if jerr := nkpWriteJSON(c.App.Writer, rep); jerr != nil {
			return jerr
		}
	} else if perr := nkpPrintInspect(c.App.Writer, &rep); perr != nil {
		return perr
	}
	return err
}

func nkpWriteJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func nkpPBELine(p *nkp.PBEInfo) string {
	if p == nil {
		return "none (plain key)"
	}
	if p.KDF == "" {
		return p.Scheme + " (unsupported)"
	}
	return fmt.Sprintf("%s, %s, %s, %d iterations, %d-byte salt", p.Scheme, p.KDF, p.Cipher, p.Iterations, p.SaltSize)
}

func nkpPrintInspect(w io.Writer, r *nkpInspectReport) error {
	var s strings.Builder
	fmt.Fprintf(&s, "file:      %s (%d bytes)\n", r.File, r.Size)
	fmt.Fprintf(&s, "format:    %s\n", r.Format)
	if r.MAC != nil {
		fmt.Fprintf(&s, "MAC:       %s, %d iterations, %d-byte salt\n", r.MAC.Algorithm, r.MAC.Iterations, r.MAC.SaltSize)
	} else {
		fmt.Fprintf(&s, "MAC:       none\n")
	}
	for i, ct := range r.Containers {
		fmt.Fprintf(&s, "container %d: %s", i+1, ct.Type)
		if ct.Encryption != nil {
			fmt.Fprintf(&s, " (%s)", nkpPBELine(ct.Encryption))
		}
		s.WriteString("\n")
		for j, bag := range ct.Bags {
			fmt.Fprintf(&s, "  bag %d:   %s", j+1, bag.Type)
			if bag.FriendlyName != "" {
				fmt.Fprintf(&s, ", friendlyName %q", bag.FriendlyName)
			}
			if bag.Provider != "" {
				fmt.Fprintf(&s, ", provider %q", bag.Provider)
			}
			s.WriteString("\n")
			if bag.Key {
				fmt.Fprintf(&s, "           key encryption: %s\n", nkpPBELine(bag.Encryption))
			}
		}
	}
	fmt.Fprintf(&s, "password:  %s\n", r.Password)
	if r.Error != "" {
		fmt.Fprintf(&s, "error:     %s\n", r.Error)
	}
	if len(r.KDKs) == 0 {
		for _, ct := range r.Containers {
			for _, bag := range ct.Bags {
				if bag.Key && bag.FriendlyName != "" {
					fmt.Fprintf(&s, "KDK id:    %s (the entry's alias; not checked without the password)\n", bag.FriendlyName)
				}
			}
		}
	}
	for _, k := range r.KDKs {
		prov := k.Provider
		if prov == "" {
			prov = "(not stored)"
		}
		fmt.Fprintf(&s, "KDK id:    %s\nprovider:  %s\n", k.ID, prov)
	}
	_, err := io.WriteString(w, s.String())
	return err
}

// nkpCreate makes a new KDK and writes it to a temp file beside OUT,
// re-reads and checks it, then links it into place (refusing to replace an
// existing file without --force).
func nkpCreate(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) != 1 {
		return usagef("nkp create needs one OUT.p12")
	}
	out := args[0]
	provider := c.String("provider")
	if strings.TrimSpace(provider) == "" {
		return usagef("--provider must name the key provider")
	}
	if err := refuseInputs(c, out); err != nil {
		return err
	}
	if _, err := os.Lstat(out); err == nil && !c.Bool("force") {
		return usagef("%s exists; use --force to replace it", out)
	}
	pw, _, err := nkpPasswordGiven(c, "password-file")
	if err != nil {
		return err
	}
	kdk, err := nkp.NewKDK(provider)
	if err != nil {
		return err
	}
	raw, err := nkp.Marshal(kdk, pw, nil)
	if err != nil {
		return err
	}
	// Read back what will be written: the same KDK must come out.
	b, err := nkp.ParseBytes(raw)
	if err != nil {
		return err
	}
	back, err := b.Open(pw)
	if err != nil || len(back) != 1 || back[0].ID != kdk.ID || string(back[0].Key) != string(kdk.Key) {
		return fmt.Errorf("internal error: the new backup does not read back (%v)", err)
	}
	if err := writeNewFile(out, raw, c.Bool("force")); err != nil {
		return err
	}
	if len(pw) == 0 {
		// Whether no password was given or the file given was empty.
		fmt.Fprintf(c.App.ErrWriter, "warning: %s has an empty password: anyone with the file opens every VM of this key provider\n", out)
	}
	if c.Bool("json") {
		return nkpWriteJSON(c.App.Writer, struct {
			File     string `json:"file"`
			KDKID    string `json:"kdkId"`
			Provider string `json:"provider"`
		}{out, kdk.ID.String(), provider})
	}
	_, err = fmt.Fprintln(c.App.Writer, kdk.ID)
	return err
}
