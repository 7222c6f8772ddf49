package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/keys/kit"
	"github.com/vmcrypt/vmcrypt/recover/vm"
)

// `kms export DIR... -o KIT.json`: fetch every KEK the VMs under DIR need
// from the KMS, prove that those keys alone open every VM (key safe,
// settings, every disk link), and write them as a KEK file (docs/formats.md
// §11), or a sealed kit (§17) with --seal-passphrase-file. Nothing is
// written unless every VM the KMS locks opens.

// kmsKitKey is one key of the kit.
type kmsKitKey struct {
	provider, keyID string
	key             []byte
}

func kmsExport(c *cli.Context) error {
	args := c.Args().Slice()
	out := c.String("output")
	if len(args) == 0 || out == "" {
		return usagef("kms export needs at least one DIR and -o KIT.json")
	}
	if err := refuseInputs(c, out, args...); err != nil {
		return err
	}
	logN := c.Int("seal-work-factor")
	if logN < kit.MinLogN || logN > kit.MaxLogN {
		return usagef("--seal-work-factor %d: want %d to %d", logN, kit.MinLogN, kit.MaxLogN)
	}
	var pass []byte
	if f := c.String("seal-passphrase-file"); f != "" {
		var err error
		if pass, err = readSecretFile(f); err != nil {
			return err
		}
		defer clear(pass)
		if len(pass) == 0 {
			return usagef("the seal passphrase in %s is empty", f)
		}
	} else if c.IsSet("seal-work-factor") {
		return usagef("--seal-work-factor needs --seal-passphrase-file")
	}
	run, err := kmsNeedRun(c)
	if err != nil {
		return err
	}

	// 1. Ask the KMS for every key the VMs need.
	got := map[[2]string]*kmsKitKey{}
	defer func() {
		for _, k := range got {
			clear(k.key)
		}
	}()
	keep := func(k kmsKeyRow, kek []byte) {
		id := [2]string{k.Provider, k.KeyID}
		if got[id] != nil {
			clear(kek)
			return
		}
		got[id] = &kmsKitKey{provider: k.Provider, keyID: k.KeyID, key: kek}
	}
	vmxs, rows := kmsVMXs(c, args)
	for _, p := range vmxs {
		r, err := kmsCheckVM(c, p, run, keep)
		if err != nil {
			return fmt.Errorf("kms export stopped at %s: %w", p, err)
		}
		rows = append(rows, r)
	}
	var worst error
	var failed, skipped []string
	var opened []kmsVerifyRow
	for i := range rows {
		r := &rows[i]
		kmsFinish(r)
		switch {
		case r.err != nil:
			failed = append(failed, fmt.Sprintf("%s: %s", r.VM, r.Status))
			if worst == nil || exitRank(r.err) > exitRank(worst) {
				worst = r.err
			}
		case !r.Checked:
			skipped = append(skipped, fmt.Sprintf("%s (%s)", r.VM, r.Status))
		default:
			opened = append(opened, *r)
		}
	}
	for _, s := range skipped {
		fmt.Fprintf(c.App.ErrWriter, "note: %s: not locked by this KMS, nothing to export\n", s)
	}
	if worst != nil {
		return &summaryError{msg: fmt.Sprintf("nothing written: %d VM(s) do not open with the KMS (%s); kms verify explains each, or name only the folders that open",
			len(failed), strings.Join(failed, "; ")), err: worst}
	}
	if len(opened) == 0 {
		return usagef("nothing written: no VM under %s is locked by this KMS", strings.Join(args, ", "))
	}

	// 2. The kit, and proof that it alone opens every VM.
	kitKeys := make([]*kmsKitKey, 0, len(got))
	for _, k := range got {
		kitKeys = append(kitKeys, k)
	}
	sort.Slice(kitKeys, func(i, j int) bool {
		if kitKeys[i].provider != kitKeys[j].provider {
			return kitKeys[i].provider < kitKeys[j].provider
		}
		return kitKeys[i].keyID < kitKeys[j].keyID
	})
	plain, err := kmsKitJSON(kitKeys)
	if err != nil {
		return err
	}
	defer clear(plain)
	kf, err := keys.ParseKEKJSON(out, plain)
	if err != nil {
		return fmt.Errorf("the kit does not read back: %w", err)
	}
	for _, r := range opened {
		v, err := vm.OpenVM(c.Context, r.VM, &vm.Options{Resolver: keys.NewResolver(kf), VMDK: vmdkOpenOptions(c)})
		if err != nil {
			return fmt.Errorf("nothing written: the kit's keys alone do not open %s: %w", r.VM, err)
		}
		v.Close()
	}

	// 3. Write it (0600, temporary name, renamed when complete).
	data := plain
	if pass != nil {
		if data, err = kit.Seal(plain, pass, &kit.SealOptions{LogN: logN}); err != nil {
			return err
		}
	}
	if err := writeNewFile(out, data, c.Bool("force")); err != nil {
		return err
	}
	w := c.App.Writer
	for _, r := range opened {
		fmt.Fprintf(w, "%s: %s\n", r.VM, kmsKeyIDs(r))
	}
	what := "KEK file"
	if pass != nil {
		what = "sealed kit"
	}
	fmt.Fprintf(w, "wrote %s %s: %d key(s) that open %d VM(s)\n", what, out, len(kitKeys), len(opened))
	if pass != nil {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s opens these VMs with its passphrase: keep the passphrase apart from the file (vmcrypt recover --kek %s --passphrase-file FILE)\n", out, out)
	} else {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s holds the keys in the clear: it is as sensitive as the KMS itself (anyone with it opens these VMs); keep it offline, or seal it with --seal-passphrase-file\n", out)
	}
	return nil
}

// kmsKitJSON writes the keys as a KEK file (a JSON list of {"provider",
// "keyId", "key"}) into a byte slice the caller zeroes (no string holds
// a key).
func kmsKitJSON(ks []*kmsKitKey) ([]byte, error) {
	// Sized once, so that no growing copy of a key is left behind.
	n := 8
	for _, k := range ks {
		n += 6*len(k.provider) + 6*len(k.keyID) + base64.StdEncoding.EncodedLen(len(k.key)) + 64
	}
	b := append(make([]byte, 0, n), "[\n"...)
	for i, k := range ks {
		prov, err := json.Marshal(k.provider)
		if err != nil {
			return nil, err
		}
		id, err := json.Marshal(k.keyID)
		if err != nil {
			return nil, err
		}
		b = append(b, `  {"provider": `...)
		b = append(b, prov...)
		b = append(b, `, "keyId": `...)
		b = append(b, id...)
		b = append(b, `, "key": "`...)
		b = base64.StdEncoding.AppendEncode(b, k.key)
		b = append(b, '"', '}')
		if i < len(ks)-1 {
			b = append(b, ',')
		}
		b = append(b, '\n')
	}
	return append(b, "]\n"...), nil
}
