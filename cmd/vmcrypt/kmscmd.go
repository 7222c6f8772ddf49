package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/keys/kit"
	"github.com/vmcrypt/vmcrypt/recover/keys/kmip"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The kms command: a Standard Key Provider's KMS, asked over KMIP, against
// the VMs of a datastore. `kms verify` says, VM by VM, whether the KMS
// still holds every key the VM needs (the "can we survive losing
// vCenter?" check); `kms export` writes those keys into a KEK file (or a
// sealed kit) that opens the VMs without the KMS.

func init() {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON"}
	register(&cli.Command{
		Name:  "kms",
		Usage: "a Standard Key Provider's KMS (KMIP) against the VMs of a datastore: verify, export",
		Subcommands: []*cli.Command{
			{
				Name:      "verify",
				Usage:     "check that the KMS holds, active, every key the encrypted VMs under DIR need, and that each opens its VM",
				ArgsUsage: "DIR...",
				Description: "Walks each DIR (a datastore, a VM folder or a .vmx) for VMs, asks the KMS once for every\n" +
					"key id their key safes and disks name, and prints one row per VM: opens, key missing,\n" +
					"permission denied, key not active, wrong key, not encrypted, passphrase (a VM the KMS does\n" +
					"not lock), other provider (NKP or another key provider), corrupt, unsupported, error.\n" +
					"Exit 0 only when every VM the KMS locks opens; else the worst row's exit code.",
				Flags:  append([]cli.Flag{jsonFlag}, kmipFlags()...),
				Action: kmsVerify,
			},
			{
				Name:      "export",
				Usage:     "write every KEK the VMs under DIR need into an offline KEK file (or a sealed kit), after proving it opens each VM",
				ArgsUsage: "DIR... -o KIT.json",
				Description: "The file is a KEK file (--kek reads it): it is as sensitive as the KMS itself. With\n" +
					"--seal-passphrase-file it is sealed (scrypt + ChaCha20-Poly1305, docs/formats.md §17) and\n" +
					"--kek opens it with --passphrase-file or " + envPassphrase + ".",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "the kit `FILE` to write (mode 0600)"},
					&cli.BoolFlag{Name: "force", Usage: "replace the output if it exists"},
					&cli.StringFlag{Name: "seal-passphrase-file", Usage: "seal the kit with the passphrase in `FILE`"},
					&cli.IntFlag{Name: "seal-work-factor", Value: kit.DefaultLogN, Usage: fmt.Sprintf("scrypt work factor of the seal, log2 N (%d..%d; %d needs 256 MiB and about a second)", kit.MinLogN, kit.MaxLogN, kit.DefaultLogN)},
				}, kmipFlags()...),
				Action: kmsExport,
			},
		},
	})
}

// Row statuses of kms verify (and export).
const (
	kmsOpens          = "opens"
	kmsKeyMissing     = "key missing"
	kmsDenied         = "permission denied"
	kmsNotActive      = "key not active"
	kmsWrongKey       = "wrong key"
	kmsNotEncrypted   = "not encrypted"
	kmsPassphrase     = "passphrase"
	kmsOtherProvider  = "other provider"
	kmsCorrupt        = "corrupt"
	kmsUnsupported    = "unsupported"
	kmsError          = "error"
	kmsKeyHeld        = "held"
	kmsKeyNotAES256   = "not AES-256"
	kmsKeyNotAsked    = "not asked"
	kmsKeyNotActive   = "not active"
	kmsKeyMissingStat = "missing"
)

// kmsVerifyRow is one VM of the kms verify table.
type kmsVerifyRow struct {
	VM     string `json:"vm"`
	Status string `json:"status"`
	Exit   int    `json:"exit"` // the exit code this row alone would give
	// Checked is false for VMs the KMS does not lock (plain, passphrase,
	// other providers): they do not count against the exit code.
	Checked bool         `json:"checked"`
	Keys    []kmsKeyRow  `json:"keys,omitempty"`
	Disks   []kmsDiskRow `json:"disks,omitempty"`
	Detail  string       `json:"detail,omitempty"`
	Error   string       `json:"error,omitempty"`
	Hint    string       `json:"hint,omitempty"`
	err     error
}

// kmsKeyRow is one key id a VM needs and what the KMS said of it.
type kmsKeyRow struct {
	Provider string `json:"provider"`
	KeyID    string `json:"keyId"`
	Status   string `json:"status"`          // held, missing, permission denied, not active, not AES-256, other provider, not asked
	State    string `json:"state,omitempty"` // the KMIP State of a key not active
}

type kmsDiskRow struct {
	Device string `json:"device"`
	File   string `json:"file"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

func (r *kmsVerifyRow) fail(err error) {
	if err != nil && (r.err == nil || exitRank(err) > exitRank(r.err)) {
		r.err = err
	}
}

// kmsStatusOf names what err says of a VM or a disk.
func kmsStatusOf(err error) string {
	switch {
	case err == nil:
		return kmsOpens
	case errors.Is(err, kmip.ErrKeyNotActive):
		return kmsNotActive
	case errors.Is(err, kmip.ErrPermissionDenied):
		return kmsDenied
	}
	switch exitCode(err) {
	case exitKeyNotFound:
		return kmsKeyMissing
	case exitWrongKey:
		return kmsWrongKey
	case exitCorrupt:
		if errors.Is(err, keysafe.ErrUnsupported) {
			return kmsUnsupported
		}
		return kmsCorrupt
	}
	return kmsError
}

// kmsKeyStatus names what the KMS said of one key id.
func kmsKeyStatus(err error) (status, state string) {
	var ke *kmip.KeyError
	switch {
	case err == nil:
		return kmsKeyHeld, ""
	case errors.Is(err, kmip.ErrPermissionDenied):
		return kmsDenied, ""
	case errors.Is(err, kmip.ErrKeyNotActive) && errors.As(err, &ke):
		return kmsKeyNotActive, ke.State.String()
	case errors.Is(err, kmip.ErrKeyNotAES256):
		return kmsKeyNotAES256, ""
	}
	return kmsKeyMissingStat, ""
}

// kmsFailure reports whether err means the KMS could not be asked at all
// (unreachable, TLS refused, an answer that is not about a key) or the
// command was stopped: nothing more can be checked.
func kmsFailure(err error) bool {
	var ce *kmip.ConnError
	var cl *kmip.ClusterError
	var re *kmip.ResultError
	return errors.As(err, &ce) || errors.As(err, &cl) || errors.As(err, &re) || errors.Is(err, kmip.ErrClosed) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// kmsNeedRun returns the command's KMIP source; the kms commands need one.
func kmsNeedRun(c *cli.Context) (*kmipRun, error) {
	run, err := kmipSource(c)
	if err != nil {
		return nil, err
	}
	if run == nil {
		return nil, usagef("kms %s needs the KMS: --kmip HOST:PORT with --kmip-cert, --kmip-key and --kmip-ca, or --kmip-config FILE", c.Command.Name)
	}
	return run, nil
}

// kmsVMXs walks the DIR arguments for VMs; a DIR that cannot be walked is
// a row of its own.
func kmsVMXs(c *cli.Context, args []string) (vmxs []string, bad []kmsVerifyRow) {
	for _, p := range args {
		found, unreadable, err := vm.FindVMXs(p)
		for _, u := range unreadable {
			fmt.Fprintf(c.App.ErrWriter, "warning: %s: not searched for VMs\n", u)
		}
		if err != nil {
			r := kmsVerifyRow{VM: p, Checked: true}
			r.fail(err)
			bad = append(bad, r)
			continue
		}
		vmxs = append(vmxs, found...)
	}
	return vmxs, bad
}

// kmsLockers lists a locator's fqid lockers as provider/key id pairs.
func kmsLockers(l *keysafe.Locator) []kmsKeyRow {
	var out []kmsKeyRow
	if l == nil {
		return nil
	}
	for _, p := range l.Pairs() {
		if p.Locker != nil && p.Locker.Type == keysafe.TypeFQID {
			out = append(out, kmsKeyRow{Provider: p.Locker.KeyServerID, KeyID: p.Locker.KeyID})
		}
	}
	return out
}

// kmsAsks reports whether the KMS (answering for provider, "" for any) is
// asked for a key: not an NKP key id, and the provider it answers for.
func kmsAsks(provider string, k kmsKeyRow) bool {
	if _, err := nkp.ParseKeyIDString(k.KeyID); err == nil {
		return false
	}
	return provider == "" || provider == k.Provider
}

// kmsCheckVM checks one VM against the KMS (vm.OpenVM with the KMS as the
// only key source, every disk reported) and fills its row. keep, when
// set, receives each key the KMS gave (a copy, the caller zeroes it). A
// KMS that cannot be asked is returned as an error: nothing more can be
// checked.
func kmsCheckVM(c *cli.Context, path string, run *kmipRun, keep func(kmsKeyRow, []byte)) (kmsVerifyRow, error) {
	r := kmsVerifyRow{VM: path}
	locked, err := vm.OpenVM(c.Context, path, &vm.Options{Depth: vm.SettingsOnly})
	if err != nil {
		r.Checked = true
		r.fail(err)
		return r, nil
	}
	locked.Close()
	provider := run.src.Provider()
	lockers := kmsLockers(locked.KeySafe)
	asked := slices.ContainsFunc(lockers, func(k kmsKeyRow) bool { return kmsAsks(provider, k) })
	switch {
	case !locked.Encrypted():
		r.Status, r.Detail = kmsNotEncrypted, "plain VM"
		return r, nil
	case len(lockers) == 0 && hasPhrasePair(locked.KeySafe):
		r.Status, r.Detail = kmsPassphrase, "locked by a passphrase, not by a key provider: --passphrase-file opens it"
		return r, nil
	case !asked:
		r.Status, r.Keys = kmsOtherProvider, lockers
		for i := range r.Keys {
			r.Keys[i].Status = kmsOtherProvider
		}
		r.Detail = "locked by another key provider than this KMS's"
		if len(lockers) > 0 {
			if _, err := nkp.ParseKeyIDString(lockers[0].KeyID); err == nil {
				r.Detail = "locked by a Native Key Provider: nkp verify checks it"
			}
		} else {
			r.Detail = "no passphrase or key-provider pair"
		}
		return r, nil
	}
	r.Checked = true
	v, err := vm.OpenVM(c.Context, path, &vm.Options{Resolver: keys.NewResolver(run.src), KeepGoing: true, VMDK: vmdkOpenOptions(c)})
	if err != nil {
		if kmsFailure(err) {
			return r, err
		}
		r.fail(err)
	}
	// The key ids: the key safe's, then each disk link's (a disk that did
	// not open: its descriptor's).
	if v != nil {
		defer v.Close()
		for _, d := range v.Disks {
			dr := kmsDiskRow{Device: d.Device, File: d.FileName, Status: kmsOpens}
			if d.Err != nil {
				if kmsFailure(d.Err) {
					return r, d.Err
				}
				dr.Status, dr.Error = kmsStatusOf(d.Err), d.Err.Error()
				r.fail(d.Err)
				if loc, lerr := diskLocatorFromError(d); lerr == nil && loc != nil {
					lockers = append(lockers, kmsLockers(loc)...)
				}
			} else if !d.Encrypted() {
				dr.Status = kmsNotEncrypted
			}
			r.Disks = append(r.Disks, dr)
		}
		for _, l := range v.Locators()[1:] {
			lockers = append(lockers, kmsLockers(l)...)
		}
	}
	seen := map[[2]string]bool{}
	for _, k := range lockers {
		id := [2]string{k.Provider, k.KeyID}
		if seen[id] {
			continue
		}
		seen[id] = true
		if !kmsAsks(provider, k) {
			k.Status = kmsOtherProvider
			if _, err := nkp.ParseKeyIDString(k.KeyID); err == nil {
				k.Status = kmsKeyNotAsked
			}
			r.Keys = append(r.Keys, k)
			continue
		}
		// Answered from the source's memory: each key id is asked once.
		kek, err := run.src.KEK(c.Context, k.Provider, k.KeyID)
		if err != nil && kmsFailure(err) {
			return r, err
		}
		k.Status, k.State = kmsKeyStatus(err)
		if err == nil {
			if keep != nil {
				keep(k, kek)
			} else {
				clear(kek)
			}
		}
		r.Keys = append(r.Keys, k)
	}
	return r, nil
}

// kmsFinish fills the status, exit code and error text of a row.
func kmsFinish(r *kmsVerifyRow) {
	if r.Status == "" {
		r.Status = kmsStatusOf(r.err)
	}
	r.Exit = exitCode(r.err)
	if r.err != nil {
		r.Error = r.err.Error()
		var nf *keysafe.KeyNotFoundError
		if errors.As(r.err, &nf) {
			r.Hint = nf.Hint
		}
	}
}

// kmsKeyIDs lists a row's key ids for the text table, with what the KMS
// said of each that it does not hold.
func kmsKeyIDs(r kmsVerifyRow) string {
	if len(r.Keys) == 0 {
		return "-"
	}
	var s []string
	for _, k := range r.Keys {
		id := k.KeyID
		if len(id) > 40 {
			id = id[:37] + "..."
		}
		switch {
		case k.Status == kmsKeyHeld:
		case k.State != "":
			id += " (" + k.State + ")"
		default:
			id += " (" + k.Status + ")"
		}
		s = append(s, id)
	}
	return strings.Join(s, ", ")
}
