package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/keys/kit"
	"github.com/vmcrypt/vmcrypt/recover/keys/kmip"
	"github.com/vmcrypt/vmcrypt/recover/keys/kmip/kmiptest"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Tests of the KMIP key options, kms verify, kms export and fixture
// --kmip against a real KMS: Debian's PyKMIP (kmiptest; the tests fail,
// never skip, without python3-pykmip). Keys are seeded the way vCenter
// makes them (Create AES-256, Activate, by PyKMIP's own client), and the
// fixture VMs' fqid key ids are their Unique Identifiers.

// kmsArgs are the KMIP options that reach s as the certificate as (nil:
// PKI.Client, the keys' owner); servers default to s.
func kmsArgs(s *kmiptest.Server, as *kmiptest.Cert, servers ...string) []string {
	if as == nil {
		as = s.PKI.Client
	}
	if len(servers) == 0 {
		servers = []string{s.Addr}
	}
	var a []string
	for _, srv := range servers {
		a = append(a, "--kmip", srv)
	}
	return append(a, "--kmip-cert", as.CertFile, "--kmip-key", as.KeyFile, "--kmip-ca", s.PKI.CA.CertFile)
}

// kmsFixture makes a fixture VM locked by the KMS key uid (key: its bytes
// as PyKMIP gets them).
func kmsFixture(t *testing.T, s *kmiptest.Server, uid string, key []byte, r fixtures.Recipe) *fixtures.Fixture {
	t.Helper()
	r.Provider = fixtures.ProviderKMS
	r.KMS = &fixtures.KMSKey{Provider: fixtures.KMSProvider, KeyID: uid, Servers: []string{s.Addr}, Key: key}
	fx := recFixture(t, r)
	if fx.Manifest.Keys.KeyID != uid || fx.Manifest.Secrets.KEKFile != "" {
		t.Fatalf("fixture key id %q, KEK file %q", fx.Manifest.Keys.KeyID, fx.Manifest.Secrets.KEKFile)
	}
	return fx
}

func randKEK() []byte {
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// downAddr is 127.0.0.1 on a port nothing listens on.
func downAddr(t *testing.T) string {
	p, err := kmiptest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

// kmsImg is the raw disk recover writes for a fixture: named after the
// chain top.
func kmsImg(fx *fixtures.Fixture) string {
	if fx.Manifest.Recipe.Snapshot {
		return fixtures.DefaultName + "-000001.img"
	}
	return fixtures.DefaultName + ".img"
}

type kmsVerifyOut struct {
	KMS kmsStats       `json:"kms"`
	VMs []kmsVerifyRow `json:"vms"`
}

func kmsRunVerify(t *testing.T, args ...string) (int, kmsVerifyOut, string) {
	t.Helper()
	code, stdout, stderr := runCLI(t, append([]string{"kms", "verify", "--json"}, args...)...)
	var out kmsVerifyOut
	if stdout != "" {
		if err := json.Unmarshal([]byte(stdout), &out); err != nil {
			t.Fatalf("json: %v\n%s\n%s", err, stdout, stderr)
		}
	}
	return code, out, stderr
}

// TestKMIPRecoverUnlockExport: a VM whose fqid key id is a PyKMIP Unique
// Identifier unlocks, recovers (the disk's sha256 as the manifest says)
// and exports (vmdk export of the snapshot chain) with --kmip, and with
// the same options from a --kmip-config file; without them, or with the
// KMS answering for another provider, the key is missing (exit 4).
func TestKMIPRecoverUnlockExport(t *testing.T) {
	nkpClearEnv(t)
	s := kmiptest.Shared(t)
	uid := s.CreateKeys(t, 1, kmiptest.CreateOptions{})[0]
	key := s.Keys(t, nil, uid)[0]
	fx := kmsFixture(t, s, uid, key, fixtures.Recipe{Disk: vmdk.SubformatMonolithicSparse, Snapshot: true, Seed: 200})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	ka := kmsArgs(s, nil)

	if code, _, stderr := runCLI(t, append([]string{"unlock", vmDir}, ka...)...); code != exitOK {
		t.Fatalf("unlock --kmip: exit %d: %s", code, stderr)
	}
	out := filepath.Join(t.TempDir(), "out")
	if code, _, stderr := runCLI(t, append([]string{"recover", vmDir, "-o", out, "--format", "raw", "--quiet"}, ka...)...); code != exitOK {
		t.Fatalf("recover --kmip: exit %d: %s", code, stderr)
	}
	sums := recSums(t, out)
	if sums[kmsImg(fx)] != fx.Manifest.SHA256.Disk || sums[fixtures.DefaultName+".nvram"] != fx.Manifest.SHA256.NVRAM {
		t.Fatalf("recovered files differ from the manifest: %v", sums)
	}
	exp := t.TempDir()
	top := filepath.Join(vmDir, fixtures.DefaultName+"-000001.vmdk")
	if code, _, stderr := runCLI(t, append([]string{"vmdk", "export", top, "-o", filepath.Join(exp, "d.raw")}, ka...)...); code != exitOK {
		t.Fatalf("vmdk export --kmip: exit %d: %s", code, stderr)
	}
	if recSums(t, exp)["d.raw"] != fx.Manifest.SHA256.Disk {
		t.Fatal("exported disk differs from the manifest")
	}

	// The same from a configuration file (paths relative to it).
	cfgDir := t.TempDir()
	cfg := filepath.Join(cfgDir, "kms.json")
	b, _ := json.Marshal(map[string]any{"provider": fixtures.KMSProvider, "servers": []string{s.Addr},
		"cert": s.PKI.Client.CertFile, "key": s.PKI.Client.KeyFile, "ca": s.PKI.CA.CertFile, "timeout": "20s"})
	os.WriteFile(cfg, b, 0o600)
	if code, _, stderr := runCLI(t, "unlock", vmDir, "--kmip-config", cfg); code != exitOK {
		t.Fatalf("unlock --kmip-config: exit %d: %s", code, stderr)
	}

	if code, _, _ := runCLI(t, "unlock", vmDir); code != exitKeyNotFound {
		t.Fatalf("no key option: exit %d, want %d", code, exitKeyNotFound)
	}
	if code, _, _ := runCLI(t, append([]string{"unlock", vmDir, "--kmip-provider", "another-provider"}, ka...)...); code != exitKeyNotFound {
		t.Fatalf("a KMS of another provider: exit %d, want %d", code, exitKeyNotFound)
	}
	// A KEK file that holds the key is asked first: a KMS that is down
	// is then never reached.
	kek := filepath.Join(t.TempDir(), "kek.json")
	kj, _ := json.Marshal(map[string]string{"provider": fixtures.KMSProvider, "keyId": uid, "key": base64.StdEncoding.EncodeToString(key)})
	os.WriteFile(kek, kj, 0o600)
	if code, _, stderr := runCLI(t, append([]string{"unlock", vmDir, "--kek", kek}, kmsArgs(s, nil, downAddr(t))...)...); code != exitOK {
		t.Fatalf("--kek with a KMS down: exit %d: %s", code, stderr)
	}
}

// TestKMSVerify: one row per VM with the exact status, the key ids and
// what the KMS said of each; the KMS asked once per distinct key id over
// one connection; the exit code is the worst row's.
func TestKMSVerify(t *testing.T) {
	nkpClearEnv(t)
	s := kmiptest.Shared(t)
	ks := s.CreateKeys(t, 2, kmiptest.CreateOptions{})
	good, destroyed := ks[0], ks[1]
	kb := s.Keys(t, nil, good, destroyed)
	s.RevokeDestroy(t, destroyed)
	pre := s.CreateKeys(t, 1, kmiptest.CreateOptions{NoActive: true})[0]
	deact := s.CreateKeys(t, 1, kmiptest.CreateOptions{Revoke: "cessation"})[0]
	const missing1, missing2 = "3f1c2a9e-0000-4000-8000-00000000abcd", "3f1c2a9e-0000-4000-8000-00000000abce"
	const prov = fixtures.KMSProvider
	lock := func(id string, kek []byte) func(*keysafe.Key) (*keysafe.Locator, error) {
		return kmsLocker(prov, id, kek)
	}

	root := t.TempDir()
	vms := map[string]string{}
	mk := func(name string, vmLock, diskLock func(*keysafe.Key) (*keysafe.Locator, error)) {
		vms[name] = nkpMakeVM(t, root, name, vmLock, diskLock)
	}
	mk("opens", lock(good, kb[0]), lock(good, kb[0]))
	mk("missing", lock(missing1, randKEK()), lock(missing1, randKEK()))
	mk("destroyed", lock(destroyed, kb[1]), lock(destroyed, kb[1]))
	mk("preactive", lock(pre, randKEK()), lock(pre, randKEK()))
	mk("deactivated", lock(deact, randKEK()), lock(deact, randKEK()))
	mk("wrong", lock(good, randKEK()), lock(good, randKEK()))
	mk("diskmissing", lock(good, kb[0]), lock(missing2, randKEK()))
	phrase := func(k *keysafe.Key) (*keysafe.Locator, error) {
		p, err := keysafe.LockPhrase(k, []byte("pw"), keysafe.CipherXTSAES256, 1000, rand.Reader)
		return keysafe.NewList(p), err
	}
	mk("passphrase", phrase, phrase)
	kdk, _ := nkp.NewKDK("nkp")
	mk("nkp", nkpLocker(t, kdk, nil), nkpLocker(t, kdk, nil))
	plainDir := filepath.Join(root, "plain")
	os.MkdirAll(plainDir, 0o700)
	vms["plain"] = filepath.Join(plainDir, "plain.vmx")
	os.WriteFile(vms["plain"], []byte(".encoding = \"UTF-8\"\ndisplayName = \"plain\"\nconfig.version = \"8\"\n"), 0o600)

	ka := kmsArgs(s, nil)
	code, out, stderr := kmsRunVerify(t, append([]string{root}, ka...)...)
	if code != exitWrongKey {
		t.Fatalf("exit %d, want %d (the wrong key is the worst row): %s", code, exitWrongKey, stderr)
	}
	if len(out.VMs) != len(vms) {
		t.Fatalf("%d rows for %d VMs", len(out.VMs), len(vms))
	}
	rows := map[string]kmsVerifyRow{}
	for _, r := range out.VMs {
		rows[filepath.Base(filepath.Dir(r.VM))] = r
	}
	type keyWant struct{ id, status, state string }
	for name, want := range map[string]struct {
		status  string
		exit    int
		checked bool
		keys    []keyWant
	}{
		"opens":       {kmsOpens, exitOK, true, []keyWant{{good, kmsKeyHeld, ""}}},
		"missing":     {kmsKeyMissing, exitKeyNotFound, true, []keyWant{{missing1, kmsKeyMissingStat, ""}}},
		"destroyed":   {kmsKeyMissing, exitKeyNotFound, true, []keyWant{{destroyed, kmsKeyMissingStat, ""}}},
		"preactive":   {kmsNotActive, exitKeyNotFound, true, []keyWant{{pre, kmsKeyNotActive, "Pre-Active"}}},
		"deactivated": {kmsNotActive, exitKeyNotFound, true, []keyWant{{deact, kmsKeyNotActive, "Deactivated"}}},
		"wrong":       {kmsWrongKey, exitWrongKey, true, []keyWant{{good, kmsKeyHeld, ""}}},
		"diskmissing": {kmsKeyMissing, exitKeyNotFound, true, []keyWant{{good, kmsKeyHeld, ""}, {missing2, kmsKeyMissingStat, ""}}},
		"passphrase":  {kmsPassphrase, exitOK, false, nil},
		"nkp":         {kmsOtherProvider, exitOK, false, nil},
		"plain":       {kmsNotEncrypted, exitOK, false, nil},
	} {
		r, ok := rows[name]
		if !ok || r.Status != want.status || r.Exit != want.exit || r.Checked != want.checked {
			t.Errorf("%s: %+v, want %s (exit %d, checked %v)", name, r, want.status, want.exit, want.checked)
			continue
		}
		if want.keys == nil {
			continue
		}
		if len(r.Keys) != len(want.keys) {
			t.Errorf("%s: keys %+v, want %+v", name, r.Keys, want.keys)
			continue
		}
		for i, k := range want.keys {
			if got := r.Keys[i]; got.KeyID != k.id || got.Status != k.status || got.State != k.state || got.Provider != prov {
				t.Errorf("%s: key %d %+v, want %+v", name, i, got, k)
			}
		}
	}
	if d := rows["diskmissing"].Disks; len(d) != 1 || d[0].Status != kmsKeyMissing {
		t.Errorf("diskmissing: disks %+v", d)
	}
	if d := rows["opens"].Disks; len(d) != 1 || d[0].Status != kmsOpens {
		t.Errorf("opens: disks %+v", d)
	}
	// Distinct key ids asked: good, missing1, missing2, destroyed, pre,
	// deact (never the NKP key id): one round trip each, one connection.
	if st := out.KMS; st.KeysAsked != 6 || st.RoundTrips != 6 || st.Connections != 1 {
		t.Errorf("KMS asked %+v, want 6 keys in 6 round trips over 1 connection", st)
	}

	// Subsets: every encrypted VM opens -> 0; a missing key -> 4.
	dirOf := func(names ...string) []string {
		var a []string
		for _, n := range names {
			a = append(a, filepath.Dir(vms[n]))
		}
		return a
	}
	if code, _, stderr := kmsRunVerify(t, append(dirOf("opens", "plain", "passphrase", "nkp"), ka...)...); code != exitOK {
		t.Fatalf("opening and unchecked VMs: exit %d: %s", code, stderr)
	}
	if code, _, _ := kmsRunVerify(t, append(dirOf("opens", "destroyed"), ka...)...); code != exitKeyNotFound {
		t.Fatalf("a destroyed key: exit %d, want %d", code, exitKeyNotFound)
	}
	// The text table gives the same exit code.
	if code, _, _ := runCLI(t, append([]string{"kms", "verify", root}, ka...)...); code != exitWrongKey {
		t.Fatalf("text output: exit %d, want %d", code, exitWrongKey)
	}
	// A certificate the key's owner did not allow: permission denied (4).
	code, out, _ = kmsRunVerify(t, append(dirOf("opens"), kmsArgs(s, s.PKI.Other)...)...)
	if code != exitKeyNotFound || len(out.VMs) != 1 || out.VMs[0].Status != kmsDenied || out.VMs[0].Keys[0].Status != kmsDenied {
		t.Fatalf("another certificate: exit %d %+v", code, out)
	}
	// The KMS down: nothing can be checked (exit 1), no table.
	code, out, _ = kmsRunVerify(t, append(dirOf("opens"), kmsArgs(s, nil, downAddr(t))...)...)
	if code != exitFailure || len(out.VMs) != 0 {
		t.Fatalf("KMS down: exit %d %+v", code, out)
	}
}

// TestKMSExportOffline: kms export writes the keys of every VM (0600), a
// KEK file --kek reads; with the KMS stopped, recover --kek KIT opens each
// VM to the manifest's sha256, while --kmip fails (exit 1). A sealed kit
// opens with its passphrase, refuses a wrong one (3) and a flipped byte
// (5). A VM whose key is missing stops the export: nothing written (4).
func TestKMSExportOffline(t *testing.T) {
	nkpClearEnv(t)
	s := kmiptest.Start(t) // stopped below
	uids := s.CreateKeys(t, 2, kmiptest.CreateOptions{})
	kb := s.Keys(t, nil, uids...)
	fxA := kmsFixture(t, s, uids[0], kb[0], fixtures.Recipe{Snapshot: true, Seed: 300})
	fxB := kmsFixture(t, s, uids[1], kb[1], fixtures.Recipe{Disk: vmdk.SubformatStreamOptimized, Seed: 301})
	ka := kmsArgs(s, nil)
	dir := t.TempDir()
	kitPath := filepath.Join(dir, "kit.json")

	export := func(extra ...string) (int, string) {
		code, _, stderr := runCLI(t, append(append([]string{"kms", "export", fxA.Dir, fxB.Dir}, extra...), ka...)...)
		return code, stderr
	}
	if code, stderr := export("-o", kitPath); code != exitOK {
		t.Fatalf("export: exit %d: %s", code, stderr)
	}
	st, err := os.Stat(kitPath)
	if err != nil || (runtime.GOOS != "windows" && st.Mode().Perm() != 0o600) {
		t.Fatalf("kit: %v %v", st, err)
	}
	kf, err := keys.OpenKEKFile(kitPath)
	if err != nil || kf.Len() != 2 {
		t.Fatalf("kit read back: %v", err)
	}
	for i, uid := range uids {
		if k, err := kf.KEK(context.Background(), fixtures.KMSProvider, uid); err != nil || !bytes.Equal(k, kb[i]) {
			t.Fatalf("kit key %s: %v", uid, err)
		}
	}
	if code, _ := export("-o", kitPath); code != exitUsage {
		t.Fatalf("existing kit: exit %d, want %d", code, exitUsage)
	}
	if code, stderr := export("-o", kitPath, "--force"); code != exitOK {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	// The client key file is an input: never the output.
	keyBefore, _ := os.ReadFile(s.PKI.Client.KeyFile)
	if code, _ := export("-o", s.PKI.Client.KeyFile, "--force"); code != exitUsage {
		t.Fatalf("-o the client key: exit %d, want %d", code, exitUsage)
	}
	if after, _ := os.ReadFile(s.PKI.Client.KeyFile); !bytes.Equal(after, keyBefore) {
		t.Fatal("the client key changed")
	}
	passFile := nkpSecretFile(t, dir, "kit passphrase")
	wrongFile := nkpSecretFile(t, dir, "not the passphrase")
	sealed := filepath.Join(dir, "kit.sealed")
	if code, stderr := export("-o", sealed, "--seal-passphrase-file", passFile, "--seal-work-factor", "10"); code != exitOK {
		t.Fatalf("sealed export: exit %d: %s", code, stderr)
	}
	if raw, _ := os.ReadFile(sealed); !kit.IsSealed(raw) || bytes.Contains(raw, []byte(base64.StdEncoding.EncodeToString(kb[0]))) {
		t.Fatal("the sealed kit is not sealed")
	}
	// A VM whose key the KMS lacks: exit 4, nothing written.
	bad := nkpMakeVM(t, t.TempDir(), "bad", kmsLocker(fixtures.KMSProvider, "no-such-key", randKEK()), kmsLocker(fixtures.KMSProvider, "no-such-key", randKEK()))
	partial := filepath.Join(dir, "partial.json")
	code, _, _ := runCLI(t, append([]string{"kms", "export", fxA.Dir, filepath.Dir(bad), "-o", partial}, ka...)...)
	if _, err := os.Stat(partial); code != exitKeyNotFound || err == nil {
		t.Fatalf("a missing key: exit %d, output %v", code, err)
	}

	if err := s.Stop(); err != nil || s.Running() {
		t.Fatalf("stopping the KMS: %v", err)
	}
	for _, fx := range []*fixtures.Fixture{fxA, fxB} {
		vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
		for _, k := range [][]string{{"--kek", kitPath}, {"--kek", sealed, "--passphrase-file", passFile}} {
			out := filepath.Join(t.TempDir(), "out")
			if code, _, stderr := runCLI(t, append([]string{"recover", vmDir, "-o", out, "--format", "raw", "--quiet"}, k...)...); code != exitOK {
				t.Fatalf("recover %v with the KMS stopped: exit %d: %s", k, code, stderr)
			}
			if recSums(t, out)[kmsImg(fx)] != fx.Manifest.SHA256.Disk {
				t.Fatal("recovered disk differs from the manifest")
			}
		}
	}
	vmA := filepath.Join(fxA.Dir, fixtures.VMDir)
	if code, _, _ := runCLI(t, append([]string{"unlock", vmA}, ka...)...); code != exitFailure {
		t.Fatalf("--kmip with the KMS stopped: exit %d, want %d", code, exitFailure)
	}
	if code, _, _ := runCLI(t, "unlock", vmA, "--kek", sealed, "--passphrase-file", wrongFile); code != exitWrongKey {
		t.Fatalf("sealed kit, wrong passphrase: exit %d, want %d", code, exitWrongKey)
	}
	raw, _ := os.ReadFile(sealed)
	raw[len(raw)-5] ^= 0x01
	flipped := filepath.Join(dir, "flipped.sealed")
	os.WriteFile(flipped, raw, 0o600)
	if code, _, _ := runCLI(t, "unlock", vmA, "--kek", flipped, "--passphrase-file", passFile); code != exitCorrupt {
		t.Fatalf("sealed kit, flipped byte: exit %d, want %d", code, exitCorrupt)
	}
	if code, _, _ := runCLI(t, "unlock", vmA, "--kek", sealed); code != exitUsage {
		t.Fatalf("sealed kit without a passphrase (no terminal): exit %d, want %d", code, exitUsage)
	}
}

// TestKMIPFailoverAndRefusals: the first of two --kmip members down, the
// second answers (exit 0). A server certificate of another CA, a host
// name its certificate does not hold, client certificates of another CA,
// without extended key usage, or with serverAuth only: exit 1 (never a
// missing key). Only down members: exit 1.
func TestKMIPFailoverAndRefusals(t *testing.T) {
	nkpClearEnv(t)
	s := kmiptest.Shared(t)
	uid := s.CreateKeys(t, 1, kmiptest.CreateOptions{Policy: kmiptest.SharedPolicy})[0]
	key := s.Keys(t, nil, uid)[0]
	l := kmsLocker(fixtures.KMSProvider, uid, key)
	vmx := nkpMakeVM(t, t.TempDir(), "vm", l, l)
	unlock := func(a []string) (int, string) {
		code, _, stderr := runCLI(t, append([]string{"unlock", vmx}, a...)...)
		return code, stderr
	}
	if code, stderr := unlock(kmsArgs(s, nil, downAddr(t), s.Addr)); code != exitOK {
		t.Fatalf("first member down: exit %d: %s", code, stderr)
	}
	wrongCA := kmsArgs(s, nil)
	wrongCA[len(wrongCA)-1] = s.PKI.WrongCA.CertFile
	_, port, _ := strings.Cut(s.Addr, ":")
	for name, a := range map[string][]string{
		"server of another CA":   wrongCA,
		"host name mismatch":     kmsArgs(s, nil, "localhost:"+port),
		"client of another CA":   kmsArgs(s, s.PKI.WrongClient),
		"client without EKU":     kmsArgs(s, s.PKI.NoEKU),
		"client serverAuth only": kmsArgs(s, s.PKI.ServerEKU),
		"every member down":      kmsArgs(s, nil, downAddr(t), downAddr(t)),
	} {
		if code, stderr := unlock(a); code != exitFailure {
			t.Errorf("%s: exit %d, want %d: %s", name, code, exitFailure, stderr)
		}
	}
}

// TestKMIPOptionsUsage: wrong combinations and bad values of the KMIP
// options are usage errors (exit 2) found before any connection; the
// client key is a file only: a key pasted as the value is refused and
// never printed.
func TestKMIPOptionsUsage(t *testing.T) {
	nkpClearEnv(t)
	dir := t.TempDir()
	pki := kmiptest.NewPKI(t, filepath.Join(dir, "pki"))
	l := kmsLocker("KMS", "44", randKEK())
	vmx := nkpMakeVM(t, dir, "vm", l, l)
	cert, key, ca := pki.Client.CertFile, pki.Client.KeyFile, pki.CA.CertFile
	full := []string{"--kmip", "127.0.0.1:5696", "--kmip-cert", cert, "--kmip-key", key, "--kmip-ca", ca}
	badJSON := filepath.Join(dir, "bad.json")
	os.WriteFile(badJSON, []byte(`{"servers": ["127.0.0.1:5696"], "cert": "c.pem", "key": "k.pem", "ca": "ca.pem", "colour": "blue"}`), 0o600)
	pemKey, _ := os.ReadFile(key)
	for name, a := range map[string][]string{
		"no certificate":          {"--kmip", "127.0.0.1:5696"},
		"certificate alone":       {"--kmip-cert", cert, "--kmip-key", key, "--kmip-ca", ca},
		"config and --kmip":       {"--kmip-config", badJSON, "--kmip", "127.0.0.1:5696"},
		"bad address":             {"--kmip", "127.0.0.1:port", "--kmip-cert", cert, "--kmip-key", key, "--kmip-ca", ca},
		"server twice":            append([]string{"--kmip", "127.0.0.1:5696"}, full...),
		"negative timeout":        append([]string{"--kmip-timeout", "-1s"}, full...),
		"provider with a slash":   append([]string{"--kmip-provider", "a/b"}, full...),
		"key file missing":        {"--kmip", "127.0.0.1:5696", "--kmip-cert", cert, "--kmip-key", filepath.Join(dir, "none.pem"), "--kmip-ca", ca},
		"CA file not PEM":         {"--kmip", "127.0.0.1:5696", "--kmip-cert", cert, "--kmip-key", key, "--kmip-ca", badJSON},
		"config unknown field":    {"--kmip-config", badJSON},
		"config missing":          {"--kmip-config", filepath.Join(dir, "none.json")},
		"key given as the value":  {"--kmip", "127.0.0.1:5696", "--kmip-cert", cert, "--kmip-key", string(pemKey), "--kmip-ca", ca},
		"timeout above the limit": append([]string{"--kmip-timeout", "11m"}, full...),
	} {
		code, stdout, stderr := runCLI(t, append([]string{"unlock", vmx}, a...)...)
		if code != exitUsage {
			t.Errorf("%s: exit %d, want %d: %s", name, code, exitUsage, stderr)
		}
		if strings.Contains(stdout+stderr, "PRIVATE KEY") {
			t.Errorf("%s: the client key was printed", name)
		}
	}
	if code, _, _ := runCLI(t, "kms", "verify", dir); code != exitUsage {
		t.Fatalf("kms verify without a KMS: exit %d, want %d", code, exitUsage)
	}
	if code, _, _ := runCLI(t, append([]string{"kms", "export", dir}, full...)...); code != exitUsage {
		t.Fatalf("kms export without -o: exit %d, want %d", code, exitUsage)
	}
	if code, _, _ := runCLI(t, append([]string{"fixture", filepath.Join(dir, "fx"), "--provider", "passphrase"}, full...)...); code != exitUsage {
		t.Fatalf("fixture --provider passphrase --kmip: exit %d, want %d", code, exitUsage)
	}
}

// TestFixtureKMIP: `fixture --provider kms --kmip` makes the KEK on the
// KMS (Active, as PyKMIP's client sees it): the manifest's key id is its
// Unique Identifier, no kek.json is written, and the VM unlocks with
// --kmip. Without --kmip the fixture keeps its seeded key id and kek.json.
func TestFixtureKMIP(t *testing.T) {
	nkpClearEnv(t)
	s := kmiptest.Shared(t)
	out := filepath.Join(t.TempDir(), "fx")
	ka := kmsArgs(s, nil)
	if code, _, stderr := runCLI(t, append([]string{"fixture", out, "--provider", "kms", "--seed", "7"}, ka...)...); code != exitOK {
		t.Fatalf("fixture --kmip: exit %d: %s", code, stderr)
	}
	m, err := fixtures.LoadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Recipe.KMS == nil || m.Keys.KeyID != m.Recipe.KMS.KeyID || m.Secrets.KEKFile != "" || m.Keys.Provider != fixtures.KMSProvider {
		t.Fatalf("manifest %+v %+v", m.Keys, m.Recipe.KMS)
	}
	if _, err := os.Stat(filepath.Join(out, fixtures.SecretsDir, fixtures.KEKFile)); err == nil {
		t.Fatal("kek.json written for a KMS key")
	}
	if r := s.Py(t, nil, kmiptest.Op{Op: "state", UID: m.Keys.KeyID}); r[0].State != "ACTIVE" {
		t.Fatalf("PyKMIP says key %s is %q (%s)", m.Keys.KeyID, r[0].State, r[0].Error)
	}
	vmDir := filepath.Join(out, fixtures.VMDir)
	if code, _, stderr := runCLI(t, append([]string{"unlock", vmDir}, ka...)...); code != exitOK {
		t.Fatalf("unlock the KMS fixture: exit %d: %s", code, stderr)
	}
	if code, _, _ := runCLI(t, "unlock", vmDir); code != exitKeyNotFound {
		t.Fatalf("without --kmip: exit %d, want %d", code, exitKeyNotFound)
	}
	// Seeded, as before.
	seeded := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderKMS, Seed: 7})
	again := filepath.Join(t.TempDir(), "fx")
	if code, _, stderr := runCLI(t, "fixture", again, "--provider", "kms", "--seed", "7"); code != exitOK {
		t.Fatalf("fixture without --kmip: exit %d: %s", code, stderr)
	}
	m2, err := fixtures.LoadManifest(again)
	if err != nil || m2.Keys.KeyID != seeded.Manifest.Keys.KeyID || m2.Secrets.KEKFile == "" || m2.Recipe.KMS != nil {
		t.Fatalf("seeded fixture: %+v %v", m2.Keys, err)
	}
}

// TestKMSExitCodes: the KMIP and kit errors in the one exit-code table.
func TestKMSExitCodes(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{&kmip.ConfigError{File: "kms.json", Msg: "bad"}, exitUsage},
		{fmt.Errorf("x: %w", &kmip.KeyError{Server: "s", KeyID: "44", Reason: kmip.ReasonItemNotFound}), exitKeyNotFound},
		{&kmip.KeyError{Server: "s", KeyID: "44", Reason: kmip.ReasonPermissionDenied}, exitKeyNotFound},
		{&kmip.ConnError{Server: "s", Err: errors.New("refused")}, exitFailure},
		{&kmip.ClusterError{Errs: []*kmip.ConnError{{Server: "s", Err: errors.New("refused")}}}, exitFailure},
		{&kmip.ResultError{Server: "s", Reason: kmip.ReasonAuthenticationNotSuccessful}, exitFailure},
		{fmt.Errorf("kit: %w", kit.ErrWrongPassphrase), exitWrongKey},
		{&kit.FormatError{Field: "salt", Err: keysafe.ErrCorrupt}, exitCorrupt},
	} {
		if got := exitCode(c.err); got != c.want {
			t.Errorf("exitCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}

// TestCloseKeySources: the KMIP source a run builds is closed when the
// run ends (its keys zeroed, its client closed): asking it afterwards is
// kmip.ErrClosed.
func TestCloseKeySources(t *testing.T) {
	pki := kmiptest.NewPKI(t, t.TempDir())
	cl, err := kmip.NewClient(kmip.Config{Servers: []string{"127.0.0.1:5696"}, Certificate: pki.Client.TLS(), RootCAs: pki.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	src := keys.NewKMIPSource(cl, "")
	app := newApp()
	app.Metadata = map[string]any{kmipRunKey: &kmipRun{src: src, client: cl}}
	closeKeySources(app)
	if _, err := src.KEK(context.Background(), "KMS", "44"); !errors.Is(err, kmip.ErrClosed) {
		t.Fatalf("after the run: %v, want kmip.ErrClosed", err)
	}
	if _, err := cl.Get(context.Background(), "44"); !errors.Is(err, kmip.ErrClosed) {
		t.Fatalf("the client after the run: %v, want kmip.ErrClosed", err)
	}
	if _, ok := app.Metadata[kmipRunKey]; ok {
		t.Fatal("the run's KMIP source is still kept")
	}
}
