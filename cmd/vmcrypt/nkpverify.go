package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
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
}

type nkpDiskRow struct {
	Device string `json:"device"`
	File   string `json:"file"`
	Links  int    `json:"links"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
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
	if r.err == nil || exitRank(err) > exitRank(r.err) {
		r.err = err
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
		vmxs, unreadable, err := vm.FindVMXs(p)
		for _, u := range unreadable {
			fmt.Fprintf(c.App.ErrWriter, "warning: %s: not searched for VMs\n", u)
		}
		if err != nil {
			r := nkpVerifyRow{VM: p}
			r.fail(err)
			rows = append(rows, r)
			continue
		}
		for _, v := range vmxs {
			rows = append(rows, nkpVerifyVM(c, v, src, have))
		}
	}
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
			if worstErr == nil || exitRank(r.err) > exitRank(worstErr) {
				worstErr = r.err
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
	return &summaryError{msg: fmt.Sprintf("%d of %d VMs do not open with %s (see the table)", failed, len(rows), args[0]), err: worstErr}
}

func nkpKDKStrings(ids []nkp.UUID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id.String()
	}
	return out
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

// nkpNeeds notes the KDKs a locator needs that the backup lacks; a
// locator with no NKP key id is unsupported by this check.
func nkpNeeds(r *nkpVerifyRow, what string, l *keysafe.Locator, have map[nkp.UUID]bool) error {
	ids, other := nkpKDKs(l)
	if len(ids) == 0 {
		if len(other) > 0 {
			return fmt.Errorf("%s is locked by key provider key %s, not by a Native Key Provider key id: %w", what, other[0], keysafe.ErrUnsupported)
		}
		return fmt.Errorf("%s has no key-provider locker (passphrase-locked?): %w", what, keysafe.ErrUnsupported)
	}
	for _, id := range ids {
		if !have[id] && !slices.Contains(r.NeedsKDK, id.String()) {
			r.NeedsKDK = append(r.NeedsKDK, id.String())
		}
	}
	return nil
}

// nkpVerifyVM opens one VM with the backup alone (vm.OpenVM, every disk
// reported) and fills its row.
func nkpVerifyVM(c *cli.Context, path string, src *keys.NKPBackup, have map[nkp.UUID]bool) nkpVerifyRow {
	r := nkpVerifyRow{VM: path}
	locked, err := vm.OpenVM(c.Context, path, &vm.Options{Depth: vm.SettingsOnly})
	if err != nil {
		r.fail(err)
		return r
	}
	locked.Close()
	if !locked.Encrypted() {
		r.fail(fmt.Errorf("%s: %w", path, vm.ErrNotEncrypted))
		return r
	}
	if err := nkpNeeds(&r, "the VMX key safe", locked.KeySafe, have); err != nil {
		r.fail(fmt.Errorf("%s: %w", path, err))
		return r
	}
	v, err := vm.OpenVM(c.Context, path, &vm.Options{Resolver: keys.NewResolver(src), KeepGoing: true, VMDK: vmdkOpenOptions(c)})
	if err != nil {
		r.fail(err)
		return r
	}
	defer v.Close()
	r.Opened++ // the config key
	for _, d := range v.Disks {
		dr := nkpDiskRow{Device: d.Device, File: d.FileName, Status: "ok"}
		err := d.Err
		if err == nil {
			dr.Links = len(d.Links)
			for i, l := range d.VMDK.Links() {
				if !d.Links[i].Encrypted {
					continue
				}
				loc, perr := keysafe.Parse(l.EncryptionKeys)
				if perr == nil {
					perr = nkpNeeds(&r, l.Path+" encryptionKeys", loc, have)
				}
				if perr != nil {
					err = perr
					break
				}
				r.Opened++
			}
		} else if loc, lerr := diskLocatorFromError(d); lerr == nil && loc != nil {
			nkpNeeds(&r, d.FileName, loc, have)
		}
		if err != nil {
			dr.Status, dr.Error = nkpStatusOf(err), err.Error()
			r.fail(err)
		}
		r.Disks = append(r.Disks, dr)
	}
	return r
}

// diskLocatorFromError reads the encryptionKeys of a disk that did not
// open (to name the KDK it needs): its descriptor only.
func diskLocatorFromError(d *vm.Disk) (*keysafe.Locator, error) {
	desc, err := vmdk.ReadDescriptor(d.Path)
	if err != nil || desc.EncryptionKeys == "" {
		return nil, err
	}
	return keysafe.Parse(desc.EncryptionKeys)
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
