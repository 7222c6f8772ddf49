package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// `nkp verify BACKUP VMPATH...`: for every VM, do its NKP locators name
// this backup's KDK, and do the VMX key safe (+ encryption.data MAC) and
// every disk key (each link's encryptionKeys) open with it?

// nkpVerifyRow is one VM of the `nkp verify` table.
type nkpVerifyRow struct {
	VM     string `json:"vm"`
	Status string `json:"status"` // ok, wrong backup, wrong key, corrupt, unsupported, error
	Exit   int    `json:"exit"`   // the exit code this row alone would give
	// NeedsKDK lists KDK ids that the VM's NKP locators name and this
	// backup does not hold.
	NeedsKDK []string `json:"needsKdk,omitempty"`
	// Opened counts the keys opened: the VMX config key and one per
	// encrypted disk link.
	Opened int          `json:"opened"`
	Disks  []nkpDiskRow `json:"disks,omitempty"`
	Error  string       `json:"error,omitempty"`
	Hint   string       `json:"hint,omitempty"`
	err    error        // for the exit code
	worst  nkpRank      // rank of the worst failure seen
}

type nkpDiskRow struct {
	Device string `json:"device"`
	File   string `json:"file"`
	Links  int    `json:"links"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// nkpRank orders failures: the command exits with the code of the
// worst row.
type nkpRank int

// rank of an exit code: ok < other failure < wrong backup < wrong key < corrupt.
func nkpRankOf(code int) nkpRank {
	switch code {
	case exitOK:
		return 0
	case exitKeyNotFound:
		return 2
	case exitWrongKey:
		return 3
	case exitCorrupt:
		return 4
	}
	return 1
}

func nkpStatusOf(err error) string {
	switch exitCode(err) {
	case exitOK:
		return "ok"
	case exitKeyNotFound:
		return "wrong backup"
	case exitWrongKey:
		return "wrong key"
	case exitCorrupt:
		if errors.Is(err, keysafe.ErrUnsupported) || errors.Is(err, vmdk.ErrUnsupported) {
			return "unsupported"
		}
		return "corrupt"
	}
	return "error"
}

// fail records err on the row when it is worse than what is there.
func (r *nkpVerifyRow) fail(err error) {
	if err == nil {
		return
	}
	if rk := nkpRankOf(exitCode(err)); r.err == nil || rk > r.worst {
		r.err, r.worst = err, rk
	}
}

func nkpVerify(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) < 2 {
		return usagef("nkp verify needs a BACKUP and at least one VMPATH (a VM folder or .vmx)")
	}
	pw, err := nkpPassword(c, "password-file")
	if err != nil {
		return err
	}
	src, err := keys.OpenNKPBackup(args[0], pw)
	if err != nil {
		return err // wrong password (3), damaged backup (5): nothing to tabulate
	}
	have := map[nkp.UUID]bool{}
	for _, id := range src.KDKIDs() {
		have[id] = true
	}
	var rows []nkpVerifyRow
	for _, p := range args[1:] {
		vmxs, err := nkpFindVMX(p)
		if err != nil {
			r := nkpVerifyRow{VM: p}
			r.fail(err)
			rows = append(rows, r)
			continue
		}
		for _, v := range vmxs {
			rows = append(rows, nkpVerifyVM(v, src, have))
		}
	}
	worst := 0
	var worstErr error
	failed := 0
	for i := range rows {
		r := &rows[i]
		r.Exit = exitCode(r.err)
		r.Status = nkpStatusOf(r.err)
		if r.err != nil {
			failed++
			r.Error = r.err.Error()
			var nf *keysafe.KeyNotFoundError
			if errors.As(r.err, &nf) {
				r.Hint = nf.Hint
			}
			if nkpRankOf(r.Exit) > nkpRankOf(worst) {
				worst, worstErr = r.Exit, r.err
			}
		}
	}
	if c.Bool("json") {
		if err := nkpWriteJSON(c.App.Writer, struct {
			Backup string         `json:"backup"`
			KDKs   []string       `json:"kdks"`
			VMs    []nkpVerifyRow `json:"vms"`
		}{args[0], nkpKDKStrings(src.KDKIDs()), rows}); err != nil {
			return err
		}
	} else if err := nkpPrintVerify(c.App.Writer, args[0], src, rows); err != nil {
		return err
	}
	if worstErr == nil {
		return nil
	}
	return &nkpVerifyError{msg: fmt.Sprintf("%d of %d VMs do not open with %s (see the table)", failed, len(rows), args[0]), err: worstErr}
}

// nkpVerifyError is the summary of a failed verify: a short message (the
// table holds the details) carrying the worst row's error for the exit code.
type nkpVerifyError struct {
	msg string
	err error
}

func (e *nkpVerifyError) Error() string { return e.msg }
func (e *nkpVerifyError) Unwrap() error { return e.err }

func nkpKDKStrings(ids []nkp.UUID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
}

// nkpFindVMX returns the .vmx of a VM path: the file itself, or every .vmx
// in a folder.
func nkpFindVMX(p string) ([]string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{p}, nil
	}
	ents, err := os.ReadDir(p)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() && strings.EqualFold(filepath.Ext(e.Name()), ".vmx") {
			out = append(out, filepath.Join(p, e.Name()))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no .vmx file", p)
	}
	sort.Strings(out)
	return out, nil
}

// nkpKDKs lists the KDK ids named by the NKP key ids of a locator's fqid
// lockers; other lists the fqid lockers that are not NKP key ids.
func nkpKDKs(l *keysafe.Locator) (ids []nkp.UUID, other []string) {
	for _, p := range l.Pairs() {
		if p.Locker == nil || p.Locker.Type != keysafe.TypeFQID {
			continue
		}
		k, err := nkp.ParseKeyIDString(p.Locker.KeyID)
		if err != nil {
			other = append(other, p.Locker.KeyServerID+"/"+p.Locker.KeyID)
			continue
		}
		ids = append(ids, k.KDKID)
	}
	return ids, other
}

// nkpCheckLocator notes the KDKs a locator needs that the backup lacks and
// opens it with the backup alone.
func nkpCheckLocator(r *nkpVerifyRow, what string, l *keysafe.Locator, res *keys.Resolver, have map[nkp.UUID]bool) (*keysafe.Key, error) {
	ids, other := nkpKDKs(l)
	if len(ids) == 0 {
		if len(other) > 0 {
			return nil, fmt.Errorf("%s is locked by key provider key %s, not by a Native Key Provider key id: %w", what, other[0], keysafe.ErrUnsupported)
		}
		return nil, fmt.Errorf("%s has no key-provider locker (passphrase-locked?): %w", what, keysafe.ErrUnsupported)
	}
	for _, id := range ids {
		if !have[id] && !slices.Contains(r.NeedsKDK, id.String()) {
			r.NeedsKDK = append(r.NeedsKDK, id.String())
		}
	}
	k, _, err := res.Open(l)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	r.Opened++
	return k, nil
}

func nkpVerifyVM(path string, src *keys.NKPBackup, have map[nkp.UUID]bool) nkpVerifyRow {
	r := nkpVerifyRow{VM: path}
	file, err := vmx.ReadFile(path)
	if err != nil {
		r.fail(err)
		return r
	}
	l, err := file.KeySafe()
	if err != nil {
		r.fail(fmt.Errorf("%s: %w", path, err))
		return r
	}
	if l == nil {
		r.fail(fmt.Errorf("%s is not encrypted: %w", path, keysafe.ErrUnsupported))
		return r
	}
	res := keys.NewResolver(src)
	configKey, err := nkpCheckLocator(&r, "the VMX key safe", l, res, have)
	if err != nil {
		r.fail(fmt.Errorf("%s: %w", path, err))
		return r
	}
	dec, err := vmx.Decrypt(file, configKey)
	if err != nil {
		r.fail(fmt.Errorf("%s: encryption.data: %w", path, err))
		return r
	}
	dir := filepath.Dir(path)
	for _, d := range vmx.Disks(dec.Settings) {
		dr := nkpDiskRow{Device: d.Device, File: d.FileName, Status: "ok"}
		p := d.FileName
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		err := nkpVerifyDisk(&r, &dr, p, res, have)
		if err != nil {
			dr.Status, dr.Error = nkpStatusOf(err), err.Error()
			r.fail(fmt.Errorf("disk %s (%s): %w", d.Device, d.FileName, err))
		}
		r.Disks = append(r.Disks, dr)
	}
	return r
}

// nkpVerifyDisk opens a disk's chain (metadata only) and every link's
// encryptionKeys with the backup.
func nkpVerifyDisk(r *nkpVerifyRow, dr *nkpDiskRow, path string, res *keys.Resolver, have map[nkp.UUID]bool) error {
	disk, err := vmdk.Open(path, nil)
	if err != nil {
		return err
	}
	defer disk.Close()
	links := disk.Links()
	dr.Links = len(links)
	for _, link := range links {
		if link.EncryptionKeys == "" {
			if link.Descriptor.Encrypted() {
				return fmt.Errorf("%s: has the vmwarevmcrypt filter but no encryptionKeys: %w", link.Path, keysafe.ErrCorrupt)
			}
			continue // an unencrypted link needs no key
		}
		l, err := keysafe.Parse(link.EncryptionKeys)
		if err != nil {
			return fmt.Errorf("%s: encryptionKeys: %w", link.Path, err)
		}
		if _, err := nkpCheckLocator(r, link.Path+" encryptionKeys", l, res, have); err != nil {
			return err
		}
	}
	return nil
}

func nkpPrintVerify(w io.Writer, backup string, src *keys.NKPBackup, rows []nkpVerifyRow) error {
	fmt.Fprintf(w, "backup %s: KDK %s\n", backup, strings.Join(nkpKDKStrings(src.KDKIDs()), ", "))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VM\tSTATUS\tKEYS\tDETAIL")
	for _, r := range rows {
		detail := ""
		switch {
		case r.Status == "wrong backup" && len(r.NeedsKDK) > 0:
			detail = "needs the backup of KDK " + strings.Join(r.NeedsKDK, ", ")
		case r.err != nil:
			detail = r.Error
		case len(r.NeedsKDK) > 0:
			detail = "also names KDK " + strings.Join(r.NeedsKDK, ", ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.VM, r.Status, r.Opened, detail)
	}
	return tw.Flush()
}
