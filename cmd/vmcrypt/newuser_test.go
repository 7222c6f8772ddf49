package main

// Tests for what a new user hit (issue 10, "What a new user hit"): each
// failed before the consolidation.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/recover"
	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/scan"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
)

// 2. inspect (and unlock) never open a FIFO named like a VM file.
func TestInspectFIFOs(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Seed: 400})
	dir := filepath.Join(fx.Dir, fixtures.VMDir)
	for _, n := range []string{"x.vmdk", "x.nvram", "x.vswp", "x.vmsn"} {
		mkfifo(t, filepath.Join(dir, n))
	}
	// One at a time: urfave/cli changes its command list as an app runs,
	// so two in-process runs at once would race.
	for _, args := range [][]string{{"inspect", dir, "--json"}, append([]string{"unlock", dir}, recKeyArgs(fx)...)} {
		done := make(chan int, 1)
		go func() { code, _, _ := runCLI(t, args...); done <- code }()
		select {
		case code := <-done:
			if code != exitOK {
				t.Fatalf("%v: exit %d", args, code)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%v: a FIFO was opened: the command hangs", args)
		}
	}
}

// 3. scan: a recovered plain disk named .img is seen by content; a
// leftover staging folder is exposed; random bytes named .nvram are
// unknown, not exposed; `scan FILE` of random bytes is unknown.
func TestScanNewUserCases(t *testing.T) {
	root := t.TempDir()
	fx, err := fixtures.Generate(filepath.Join(root, "part"), fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Partial: true, Seed: 410})
	if err != nil {
		t.Fatal(err)
	}
	fx.Close()
	// A plain raw image of the partial VM's disk, named .img.
	os.Mkdir(filepath.Join(root, "loot"), 0o755)
	code, _, e := runCLI(t, "vmdk", "export", filepath.Join(root, "part", fixtures.VMDir, fixtures.DefaultName+".vmdk"), "-o", filepath.Join(root, "loot", "disk.img"))
	if code != exitOK {
		t.Fatal(e)
	}
	// A staging folder of an interrupted recover, and random .nvram/.vswp.
	stage := filepath.Join(root, "loot", ".recover"+outfile.Mark+"abc")
	os.Mkdir(stage, 0o700)
	os.WriteFile(filepath.Join(stage, "fixture.vmdk"), []byte("plaintext"), 0o600)
	rnd := make([]byte, 64<<10)
	rand.Read(rnd)
	os.WriteFile(filepath.Join(root, "loot", "vm.nvram"), rnd, 0o644)
	os.WriteFile(filepath.Join(root, "loot", "vm.vswp"), rnd, 0o644)
	code, out, _ := runCLI(t, "scan", root, "--json")
	if code != exitOK {
		t.Fatalf("exit %d", code)
	}
	var rep scan.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	want := map[string]scan.Status{
		"loot/disk.img": scan.Exposed, "loot/" + filepath.Base(stage): scan.Exposed,
		"loot/vm.nvram": scan.Unknown, "loot/vm.vswp": scan.Unknown,
	}
	got := map[string]scan.Status{}
	for _, vm := range rep.VMs {
		for _, f := range vm.Files {
			got[f.Path] = f.Status
		}
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %q, want %q (all: %v)", p, got[p], w, got)
		}
	}
	// One random file named on the command line.
	rf := filepath.Join(t.TempDir(), "blob.bin")
	os.WriteFile(rf, rnd, 0o644)
	code, out, _ = runCLI(t, "scan", rf, "--json")
	rep = scan.Report{}
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || len(rep.VMs) != 1 || len(rep.VMs[0].Files) != 1 ||
		rep.VMs[0].Files[0].Status != scan.Unknown || rep.VMs[0].Files[0].Kind == "" || rep.VMs[0].Status == scan.Exposed {
		t.Fatalf("scan FILE of random bytes: %d %s", code, out)
	}
}

// 4. A key file the command reads is an input: --force never writes over it.
func TestKeyFilesAreInputs(t *testing.T) {
	noEnvPassphrase(t)
	in := vmFixture(t, "workstation-encrypted.vmx", nil)
	pf := passFile(t, "password")
	before, _ := os.ReadFile(pf)
	if code, _, _ := runCLI(t, "vmx", "decrypt", in, "-o", pf, "--passphrase-file", pf, "--force"); code != exitUsage {
		t.Fatalf("vmx decrypt -o the passphrase file: exit %d, want %d", code, exitUsage)
	}
	if after, _ := os.ReadFile(pf); !bytes.Equal(before, after) {
		t.Fatal("the passphrase file was replaced")
	}
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderKMS, Seed: 420})
	kek := filepath.Join(fx.Dir, fixtures.SecretsDir, "kek.json")
	kb, _ := os.ReadFile(kek)
	disk := filepath.Join(fx.Dir, fixtures.VMDir, fixtures.DefaultName+".vmdk")
	if code, _, _ := runCLI(t, "vmdk", "export", disk, "-o", kek, "--kek", kek, "--force"); code != exitUsage {
		t.Fatalf("vmdk export -o the KEK file: exit %d", code)
	}
	// recover: an output of the plan that is the key file.
	out := t.TempDir()
	pk := filepath.Join(out, fixtures.DefaultName+".nvram")
	os.WriteFile(pk, kb, 0o600)
	if code, _, _ := runCLI(t, "recover", filepath.Join(fx.Dir, fixtures.VMDir), "-o", out, "--kek", pk, "--force"); code != exitUsage {
		t.Fatalf("recover over the KEK file: exit %d", code)
	}
	if after, _ := os.ReadFile(kek); !bytes.Equal(kb, after) {
		t.Fatal("the KEK file was replaced")
	}
	if after, _ := os.ReadFile(pk); !bytes.Equal(kb, after) {
		t.Fatal("the KEK file in OUTDIR was replaced")
	}
}

// 5. vTPM: kept and explained by default; --drop-vtpm removes it; a vTPM VM
// without its .nvram is refused unless --allow-missing-nvram.
func TestRecoverVTPM(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, VTPM: true, Seed: 430})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	out := filepath.Join(t.TempDir(), "out")
	code, stdout, e := runCLI(t, append([]string{"recover", vmDir, "-o", out}, recKeyArgs(fx)...)...)
	if code != exitOK || !strings.Contains(stdout, "vTPM:") {
		t.Fatalf("exit %d: %s %s", code, stdout, e)
	}
	var rep recover.Report
	b, _ := os.ReadFile(filepath.Join(out, recover.ReportName))
	if json.Unmarshal(b, &rep) != nil || rep.VTPM == nil || !rep.VTPM.Present || !rep.VTPM.Kept {
		t.Fatalf("report vTPM %+v", rep.VTPM)
	}
	vmxText, _ := os.ReadFile(filepath.Join(out, fixtures.DefaultName+".vmx"))
	if !strings.Contains(strings.ToLower(string(vmxText)), "vtpm.present") {
		t.Fatal("vtpm.present dropped without --drop-vtpm")
	}
	out2 := filepath.Join(t.TempDir(), "out")
	if code, _, e := runCLI(t, append([]string{"recover", vmDir, "-o", out2, "--drop-vtpm"}, recKeyArgs(fx)...)...); code != exitOK {
		t.Fatal(e)
	}
	vmxText, _ = os.ReadFile(filepath.Join(out2, fixtures.DefaultName+".vmx"))
	if strings.Contains(strings.ToLower(string(vmxText)), "vtpm.") {
		t.Fatal("--drop-vtpm kept vtpm.* lines")
	}
	os.Remove(filepath.Join(vmDir, fixtures.DefaultName+".nvram"))
	out3 := filepath.Join(t.TempDir(), "out")
	var stdout3, stderr3 bytes.Buffer
	code = runContext(context.Background(), append([]string{"vmcrypt", "recover", vmDir, "-o", out3}, recKeyArgs(fx)...), &stdout3, &stderr3)
	if code != exitFailure || !strings.Contains(stderr3.String(), "--allow-missing-nvram") {
		t.Fatalf("vTPM VM without .nvram: exit %d: %s", code, stderr3.String())
	}
	if _, err := os.Stat(out3); err == nil {
		t.Fatal("OUTDIR created")
	}
	if code, _, e := runCLI(t, append([]string{"recover", vmDir, "-o", out3, "--allow-missing-nvram"}, recKeyArgs(fx)...)...); code != exitOK {
		t.Fatal(e)
	}
}

// 6. inspect of random bytes or of a VMX cut short.
func TestInspectNotVMX(t *testing.T) {
	dir := t.TempDir()
	rnd := make([]byte, 4096)
	rand.Read(rnd)
	os.WriteFile(filepath.Join(dir, "r.vmx"), rnd, 0o644)
	if code, _, _ := runCLI(t, "inspect", dir); code != exitCorrupt {
		t.Fatalf("random bytes: exit %d, want %d", code, exitCorrupt)
	}
	os.WriteFile(filepath.Join(dir, "r.vmx"), []byte("Just some notes\nabout this VM\n"), 0o644)
	if code, _, _ := runCLI(t, "inspect", dir); code != exitCorrupt {
		t.Fatalf("prose: exit %d, want %d", code, exitCorrupt)
	}
	// A real encrypted VMX cut in the middle of encryption.data.
	b, _ := os.ReadFile(vecDir + "workstation-encrypted.vmx")
	i := bytes.Index(b, []byte("encryption.data"))
	cut := b[:i+200]
	os.WriteFile(filepath.Join(dir, "r.vmx"), cut, 0o644)
	code, out, e := runCLI(t, "inspect", dir, "--json")
	if code != exitCorrupt {
		t.Fatalf("cut encryption.data: exit %d, want %d: %s %s", code, exitCorrupt, out, e)
	}
	// Cut after a whole setting: it opens, and the cut is reported.
	j := bytes.LastIndexByte(b[:i], '\n')
	os.WriteFile(filepath.Join(dir, "r.vmx"), b[:j], 0o644)
	code, out, _ = runCLI(t, "inspect", dir, "--json")
	if code != exitOK || !strings.Contains(out, "cut short") {
		t.Fatalf("cut last line: exit %d: %s", code, out)
	}
}

// 7. nkp verify walks a datastore (VMs in subfolders at any depth).
func TestNKPVerifyDatastore(t *testing.T) {
	root := t.TempDir()
	secrets := t.TempDir()
	for i, sub := range []string{"a", "deep/er/b"} {
		fx, err := fixtures.Generate(filepath.Join(root, sub), fixtures.Recipe{Provider: fixtures.ProviderNKP, Seed: 440})
		if err != nil {
			t.Fatal(err)
		}
		fx.Close()
		if i == 0 { // the same seed: the same KDK and password
			for _, n := range []string{"backup.p12", "nkp-password.txt"} {
				b, _ := os.ReadFile(filepath.Join(root, sub, fixtures.SecretsDir, n))
				os.WriteFile(filepath.Join(secrets, n), b, 0o600)
			}
		}
		os.RemoveAll(filepath.Join(root, sub, fixtures.SecretsDir))
	}
	code, out, e := runCLI(t, "nkp", "verify", filepath.Join(secrets, "backup.p12"), root, "--password-file", filepath.Join(secrets, "nkp-password.txt"), "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s %s", code, out, e)
	}
	var r struct {
		VMs []nkpVerifyRow `json:"vms"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || len(r.VMs) != 2 || r.VMs[0].Status != "ok" || r.VMs[1].Status != "ok" {
		t.Fatalf("%v: %s", err, out)
	}
}

// 8. A new passphrase is asked twice; two answers that differ are refused.
func TestAskTwice(t *testing.T) {
	answers := [][]byte{[]byte("one"), []byte("two")}
	ask := func(string) ([]byte, error) { a := answers[0]; answers = answers[1:]; return a, nil }
	if _, err := askTwice(ask, "New passphrase"); exitCode(err) != exitUsage {
		t.Fatalf("different answers: %v", err)
	}
	answers = [][]byte{[]byte("same"), []byte("same")}
	if p, err := askTwice(ask, "New passphrase"); err != nil || string(p) != "same" {
		t.Fatalf("same answers: %q %v", p, err)
	}
}

// 9. The same condition gives the same exit code in every command; bare
// vmcrypt is a usage error; `vmcrypt help CMD` works.
func TestExitCodesAgree(t *testing.T) {
	noEnvPassphrase(t)
	empty := t.TempDir()
	plain := t.TempDir()
	os.WriteFile(filepath.Join(plain, "p.vmx"), []byte("displayName = \"p\"\n"), 0o644)
	backup := filepath.Join("..", "..", "fixtures", "testdata", "nkp-monolithicSparse", "secrets", "backup.p12")
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"inspect", empty}, exitUsage},
		{[]string{"unlock", empty}, exitUsage},
		{[]string{"recover", empty, "-o", filepath.Join(t.TempDir(), "o")}, exitUsage},
		{[]string{"vmx", "decrypt", empty, "-o", filepath.Join(t.TempDir(), "o")}, exitUsage},
		{[]string{"vmx", "hash", empty}, exitUsage},
		{[]string{"nkp", "verify", backup, empty, "--password-file", filepath.Join(filepath.Dir(backup), "nkp-password.txt")}, exitUsage},
		{[]string{"unlock", plain}, exitCorrupt},
		{[]string{"recover", plain, "-o", filepath.Join(t.TempDir(), "o")}, exitCorrupt},
		{[]string{"vmx", "decrypt", plain, "-o", filepath.Join(t.TempDir(), "o")}, exitCorrupt},
		{[]string{"vmx", "hash", plain}, exitCorrupt},
		{[]string{}, exitUsage},
		{[]string{"help", "recover"}, exitOK},
		{[]string{"help", "vmdk", "export"}, exitOK},
	} {
		code, out, e := runCLI(t, c.args...)
		if code != c.want {
			t.Errorf("%v: exit %d, want %d: %s", c.args, code, c.want, e)
		}
		if len(c.args) > 0 && c.args[0] == "help" && !strings.Contains(out, "vmcrypt "+strings.Join(c.args[1:], " ")) {
			t.Errorf("%v: no usage of the command: %s", c.args, out)
		}
	}
}

// 10. --format raw implies --flatten: no warning tells the user to drop a
// flag they never gave.
func TestRawWarningNamesNoFlag(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Snapshot: true, Memory: true, Seed: 450})
	code, out, e := runCLI(t, append([]string{"recover", filepath.Join(fx.Dir, fixtures.VMDir), "-o", filepath.Join(t.TempDir(), "o"), "--format", "raw"}, recKeyArgs(fx)...)...)
	if code != exitOK || !strings.Contains(out, ".vmsd") {
		t.Fatalf("exit %d: %s %s", code, out, e)
	}
	if strings.Contains(out, "--flatten") {
		t.Fatalf("a warning names --flatten: %s", out)
	}
}

// 11. Truncated disks: export fails (exit 5) unless --salvage, which writes
// zeros for what is missing and lists the range.
func TestExportSalvage(t *testing.T) {
	for _, sf := range []string{vmdk.SubformatMonolithicFlat, vmdk.SubformatMonolithicSparse} {
		dir := t.TempDir()
		src := make([]byte, 4<<20)
		rand.Read(src)
		p := filepath.Join(dir, "t.vmdk")
		if err := vmdk.Write(context.Background(), p, bytes.NewReader(src), int64(len(src)), nil, &vmdk.WriteOptions{Subformat: sf}); err != nil {
			t.Fatal(err)
		}
		data := p
		if sf == vmdk.SubformatMonolithicFlat {
			data = filepath.Join(dir, "t-flat.vmdk")
		}
		fi, _ := os.Stat(data)
		cut := fi.Size() - 1<<20
		os.Truncate(data, cut)
		out := filepath.Join(t.TempDir(), "o.img")
		if code, _, _ := runCLI(t, "vmdk", "export", p, "-o", out); code != exitCorrupt {
			t.Fatalf("%s truncated: exit %d, want %d", sf, code, exitCorrupt)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatalf("%s: output written without --salvage", sf)
		}
		code, _, stderr := runCLI(t, "vmdk", "export", p, "-o", out, "--salvage")
		if code != exitOK || !strings.Contains(stderr, "could not be read") {
			t.Fatalf("%s --salvage: exit %d: %s", sf, code, stderr)
		}
		got, _ := os.ReadFile(out)
		if len(got) != len(src) {
			t.Fatalf("%s: salvaged %d bytes, want %d", sf, len(got), len(src))
		}
		// What was read is the source; the rest zeros; the lost part
		// is within the last MiB and a grain of it.
		firstDiff := -1
		for i := range got {
			if got[i] != src[i] {
				firstDiff = i
				break
			}
		}
		if firstDiff < 0 || firstDiff < len(src)-(1<<20)-(64<<10) {
			t.Fatalf("%s: salvage differs from %d", sf, firstDiff)
		}
		if !vmdk.AllZero(got[len(got)-512:]) {
			t.Fatalf("%s: the missing end is not zeros", sf)
		}
	}
}

// 12. nkp create warns on an empty password file; nkp inspect says a wrong
// password is wrong (exit 3); recover --nkp-backup without a password says
// none was given.
func TestNKPPasswordMessages(t *testing.T) {
	t.Setenv(envNKPPassword, "x")
	os.Unsetenv(envNKPPassword)
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, nil, 0o600)
	code, _, stderr := runCLI(t, "nkp", "create", filepath.Join(dir, "b.p12"), "--provider", "p", "--password-file", empty)
	if code != exitOK || !strings.Contains(stderr, "empty password") {
		t.Fatalf("empty password file: exit %d, stderr %q", code, stderr)
	}
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderNKP, Seed: 460})
	bk := filepath.Join(fx.Dir, fixtures.SecretsDir, "backup.p12")
	code, out, _ := runCLI(t, "nkp", "inspect", bk, "--password-file", passFile(t, "not-it"))
	if code != exitWrongKey || !strings.Contains(out, "wrong password") {
		t.Fatalf("wrong password: exit %d: %s", code, out)
	}
	code, _, stderr = runCLI(t, "recover", filepath.Join(fx.Dir, fixtures.VMDir), "-o", filepath.Join(t.TempDir(), "o"), "--nkp-backup", bk)
	if code != exitWrongKey || !strings.Contains(stderr, "no password was given") {
		t.Fatalf("no password: exit %d: %s", code, stderr)
	}
}

// Issue 11, data files: a real VMware data file has page MACs of a scheme
// that is not public. Random MACs recover (exit 0, a warning, "not
// checked" in the report); half model and half random is damaged (exit 5);
// --strict-mac refuses the unknown scheme (exit 5).
func TestRecoverDataFileMACRule(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Size: fixtures.MinDiskSize, Seed: 470})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	pass, err := readSecretFile(filepath.Join(fx.Dir, fx.Manifest.Secrets.PassphraseFile))
	if err != nil {
		t.Fatal(err)
	}
	srcs := []keys.Source{keys.NewPassphrase(pass)}
	v, err := vm.OpenVM(context.Background(), vmDir, &vm.Options{Resolver: keys.NewResolver(srcs...)})
	if err != nil {
		t.Fatal(err)
	}
	var nv *vm.DataFile
	for _, f := range v.DataFiles {
		if f.Kind == vm.KindNVRAM {
			nv = f
		}
	}
	r, err := nv.Open()
	if err != nil {
		t.Fatal(err)
	}
	plainNV := make([]byte, r.Size())
	if _, err := r.ReadAt(plainNV, 0); err != nil {
		t.Fatal(err)
	}
	r.Close()
	key := v.DataFileKey.Bytes
	v.Close()
	model, _ := os.ReadFile(nv.Path)
	var unknown bytes.Buffer
	if err := datafile.EncryptWith(&unknown, bytes.NewReader(plainNV), int64(len(plainNV)), key, nv.Header.Version, rand.Reader, &datafile.EncryptOptions{UnknownMAC: true}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(nv.Path, unknown.Bytes(), 0o644)
	out := filepath.Join(t.TempDir(), "o")
	code, stdout, e := runCLI(t, append([]string{"recover", vmDir, "-o", out}, recKeyArgs(fx)...)...)
	if code != exitOK || !strings.Contains(stdout, "match no known scheme") {
		t.Fatalf("unknown MACs: exit %d: %s %s", code, stdout, e)
	}
	var rep recover.Report
	b, _ := os.ReadFile(filepath.Join(out, recover.ReportName))
	json.Unmarshal(b, &rep)
	got := ""
	for _, f := range rep.DataFiles {
		if f.Output == filepath.Base(nv.Path) {
			got = f.MAC
		}
	}
	if got != datafile.MACUnknown {
		t.Fatalf("report says %q", got)
	}
	if b, _ := os.ReadFile(filepath.Join(out, filepath.Base(nv.Path))); !bytes.Equal(b, plainNV) {
		t.Fatal("the unknown-MAC file did not recover exactly")
	}
	if code, _, _ := runCLI(t, append([]string{"recover", vmDir, "-o", filepath.Join(t.TempDir(), "o"), "--strict-mac"}, recKeyArgs(fx)...)...); code != exitCorrupt {
		t.Fatalf("--strict-mac: exit %d, want %d", code, exitCorrupt)
	}
	mixed := append([]byte(nil), model...)
	half := datafile.HeaderSize + (len(model)-datafile.HeaderSize)/datafile.PageSize/2*datafile.PageSize
	copy(mixed[half:], unknown.Bytes()[half:])
	os.WriteFile(nv.Path, mixed, 0o644)
	out = filepath.Join(t.TempDir(), "o")
	if code, _, _ := runCLI(t, append([]string{"recover", vmDir, "-o", out}, recKeyArgs(fx)...)...); code != exitCorrupt {
		t.Fatalf("half model, half random: exit %d, want %d", code, exitCorrupt)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("OUTDIR created for a damaged file")
	}
}

// Issue 11, format report: everything a maintainer needs, and no key,
// passphrase, salt, plaintext or ciphertext byte, in any encoding.
func TestFormatReportHoldsNoSecret(t *testing.T) {
	for _, r := range []fixtures.Recipe{
		{Provider: fixtures.ProviderPassphrase, Snapshot: true, Memory: true, VTPM: true, Seed: 490},
		{Provider: fixtures.ProviderKMS, Bundle: 288, Seed: 491},
	} {
		fx := recFixture(t, r)
		vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
		code, out, e := runCLI(t, append([]string{"inspect", vmDir, "--format-report"}, recKeyArgs(fx)...)...)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, e)
		}
		var rep vm.FormatReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil || !rep.Opened || len(rep.Disks) == 0 || len(rep.KeySafe) == 0 {
			t.Fatalf("%v: %s", err, out)
		}
		// The secrets and every byte sequence worth hiding.
		var secrets [][]byte
		for _, f := range []string{fx.Manifest.Secrets.PassphraseFile, fx.Manifest.Secrets.KEKFile} {
			if f != "" {
				b, _ := readSecretFile(filepath.Join(fx.Dir, f))
				secrets = append(secrets, b)
			}
		}
		srcs, _ := keySourcesForTest(t, fx)
		v, err := vm.OpenVM(context.Background(), vmDir, &vm.Options{Resolver: keys.NewResolver(srcs...)})
		if err != nil {
			t.Fatal(err)
		}
		secrets = append(secrets, v.ConfigKey.Bytes, v.DataFileKey.Bytes)
		for _, p := range v.KeySafe.Pairs() {
			secrets = append(secrets, p.Locked[:16], p.Locked[16:32], p.Locked[len(p.Locked)-16:])
		}
		plain := make([]byte, 64<<10)
		d := v.Disks[0]
		for _, run := range d.Plain.Runs() {
			if run.State == vmdk.Data {
				d.Plain.ReadAt(plain, run.Off)
				for i := 0; i+32 <= len(plain); i += 4096 {
					if !vmdk.AllZero(plain[i : i+32]) {
						secrets = append(secrets, append([]byte(nil), plain[i:i+32]...))
					}
				}
				d.VMDK.ReadAt(plain, run.Off) // the stored ciphertext
				for i := 0; i+32 <= len(plain); i += 4096 {
					if !vmdk.AllZero(plain[i : i+32]) {
						secrets = append(secrets, append([]byte(nil), plain[i:i+32]...))
					}
				}
				break
			}
		}
		v.Close()
		for _, s := range secrets {
			if len(s) < 6 {
				continue
			}
			for _, enc := range []string{string(s), hex.EncodeToString(s), base64.StdEncoding.EncodeToString(s)[:8], base64.RawURLEncoding.EncodeToString(s)[:8]} {
				if strings.Contains(out, enc) {
					t.Fatalf("the format report holds a secret (%q): %s", enc, out)
				}
			}
		}
	}
}

// keySourcesForTest builds the key sources of a fixture's secrets.
func keySourcesForTest(t *testing.T, fx *fixtures.Fixture) ([]keys.Source, error) {
	t.Helper()
	var srcs []keys.Source
	if f := fx.Manifest.Secrets.PassphraseFile; f != "" {
		p, err := readSecretFile(filepath.Join(fx.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, keys.NewPassphrase(p))
	}
	if f := fx.Manifest.Secrets.KEKFile; f != "" {
		kf, err := keys.OpenKEKFile(filepath.Join(fx.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, kf)
	}
	return srcs, nil
}
