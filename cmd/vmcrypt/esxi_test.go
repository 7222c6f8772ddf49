package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/recover/esxi"
)

// The real ESXi vectors live in recover/esxi/testdata (SOURCES.md there).
const esxiTestdata = "../../recover/esxi/testdata/"

const (
	esxiRealSHA  = "fe131620351b9fd5fc4aef219bf3211340f3742464c038e1695e7b6667f86952"
	esxiRealKey  = "ae29634dca8627013f7c7cf2d05b4d5cc444d42cd4e8acbaa4fb815dda3b3066"
	esxiRealVMX  = "/vmfs/volumes/5fb27751-02685a39-c989-000c29801686/Fedora 33 Server/Fedora 33 Server.vmx"
	esxiRealSize = 94293
)

func fileSHA(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// esxiRealDir copies the real envelope and key store into a fresh folder.
func esxiRealDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, n := range []string{"local.tgz.ve", "encryption.info"} {
		b, err := os.ReadFile(esxiTestdata + n)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func needPeer(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required as a peer (scripts/peers.sh installs it): %v", name, err)
	}
	return p
}

// TestESXiConfigRealVector: the real configuration decrypts to exactly
// 94293 bytes with the documented sha256, mode 0600, and GNU tar (the
// peer) lists the written local.tgz: esx.conf and vmInventory.xml among
// its 36 members. An existing output needs --force.
func TestESXiConfigRealVector(t *testing.T) {
	dir := esxiRealDir(t)
	out := filepath.Join(t.TempDir(), "out")
	code, stdout, stderr := runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve"), "-o", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lt := filepath.Join(out, "local.tgz")
	st, err := os.Stat(lt)
	if err != nil || st.Size() != esxiRealSize || fileSHA(t, lt) != esxiRealSHA || st.Mode().Perm() != 0o600 {
		t.Fatalf("local.tgz: %v %v", st, err)
	}
	if !strings.Contains(stdout, esxiRealSHA) {
		t.Fatalf("summary does not give the sha256:\n%s", stdout)
	}
	list, err := exec.Command(needPeer(t, "tar"), "tzf", lt).Output()
	if err != nil {
		t.Fatalf("tar tzf: %v", err)
	}
	names := strings.Fields(string(list))
	if len(names) != 36 || !contains(names, "etc/vmware/esx.conf") || !contains(names, "etc/vmware/hostd/vmInventory.xml") || !contains(names, "etc/vmware/ssl/rui.key") {
		t.Fatalf("tar lists %d members: %v", len(names), names)
	}
	if code, _, _ := runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve"), "-o", out); code != exitUsage {
		t.Fatalf("existing output: exit %d", code)
	}
	if code, _, _ := runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve"), "-o", out, "--force", "--json"); code != 0 {
		t.Fatalf("--force: exit %d", code)
	}
	if names := dirNames(t, out); len(names) != 1 {
		t.Fatalf("output folder holds %v", names)
	}
	// The key store named explicitly, from elsewhere.
	ks := filepath.Join(t.TempDir(), "ks.info")
	os.Rename(filepath.Join(dir, "encryption.info"), ks)
	if code, _, stderr := runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve"), "-o", filepath.Join(t.TempDir(), "o"), "--keystore", ks); code != 0 {
		t.Fatalf("--keystore: exit %d: %s", code, stderr)
	}
	// Without it: the key is missing (4), naming the key id; no output.
	o := filepath.Join(t.TempDir(), "o")
	code, _, stderr = runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve"), "-o", o)
	if code != exitKeyNotFound || !strings.Contains(stderr, "7e62cec5-6aef-4d7e-838b-cae32eefd251") {
		t.Fatalf("no key store: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(o); !os.IsNotExist(err) {
		t.Fatal("a failed config left its output folder")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestESXiInspectRealVector: inspect lists the configuration's files, its
// vmInventory.xml, the host name; --json says the same; nothing written.
func TestESXiInspectRealVector(t *testing.T) {
	dir := esxiRealDir(t)
	code, stdout, stderr := runCLI(t, "esxi", "inspect", filepath.Join(dir, "local.tgz.ve"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{esxiRealVMX, "jemoeder.internet.vm", "etc/vmware/hostd/vmInventory.xml", "etc/vmware/esx.conf", "mode NONE", "Files: 36"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect does not say %q", want)
		}
	}
	code, stdout, _ = runCLI(t, "esxi", "inspect", filepath.Join(dir, "local.tgz.ve"), "--json")
	var rep esxiConfigReport
	if code != 0 || json.Unmarshal([]byte(stdout), &rep) != nil {
		t.Fatalf("--json: exit %d: %s", code, stdout)
	}
	if !rep.Opened || rep.Host == nil || len(rep.Host.VMs) != 1 || rep.Host.VMs[0].Path != esxiRealVMX || len(rep.Host.Files) != 36 || rep.Envelope.KeyID != "7e62cec5-6aef-4d7e-838b-cae32eefd251" {
		t.Fatalf("json report: %+v", rep)
	}
	if names := dirNames(t, dir); len(names) != 2 {
		t.Fatalf("inspect wrote into the folder: %v", names)
	}
	// --list: the same files, nothing written.
	code, stdout, _ = runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve"), "--list")
	if code != 0 || !strings.Contains(stdout, "etc/vmware/ssl/rui.key") || !strings.Contains(stdout, "host TLS private key") {
		t.Fatalf("--list: exit %d:\n%s", code, stdout)
	}
	if code, _, _ := runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve")); code != exitUsage {
		t.Fatalf("no -o and no --list: exit %d", code)
	}
}

// TestESXiConfigExtractMatchesTar: --extract writes the same files as GNU
// tar extracting the decrypted local.tgz (the peer), each 0600.
func TestESXiConfigExtractMatchesTar(t *testing.T) {
	dir := esxiRealDir(t)
	ours := filepath.Join(t.TempDir(), "ours")
	if code, _, stderr := runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve"), "-o", ours, "--extract"); code != 0 {
		t.Fatalf("extract: exit %d: %s", code, stderr)
	}
	plain := filepath.Join(t.TempDir(), "p")
	if code, _, _ := runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve"), "-o", plain); code != 0 {
		t.Fatal("config")
	}
	theirs := t.TempDir()
	if out, err := exec.Command(needPeer(t, "tar"), "xzf", filepath.Join(plain, "local.tgz"), "-C", theirs).CombinedOutput(); err != nil {
		t.Fatalf("tar xzf: %v %s", err, out)
	}
	n := 0
	filepath.Walk(theirs, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(theirs, p)
		q := filepath.Join(ours, rel)
		st, err := os.Stat(q)
		if err != nil {
			t.Errorf("%s missing: %v", rel, err)
			return nil
		}
		if fileSHA(t, p) != fileSHA(t, q) || st.Mode().Perm() != 0o600 {
			t.Errorf("%s differs (mode %v)", rel, st.Mode())
		}
		n++
		return nil
	})
	if n != 36 {
		t.Fatalf("%d files compared", n)
	}
	// A non-empty output folder is refused before anything is read.
	if code, _, _ := runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve"), "-o", ours, "--extract"); code != exitUsage {
		t.Fatalf("non-empty outdir: exit %d", code)
	}
}

// TestESXiFixtureCases: `vmcrypt fixture --esxi` writes its cases; each
// command exits as its manifest says; outputs match the recorded sha256;
// a failure leaves no output and no temp file.
func TestESXiFixtureCases(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fx")
	code, _, stderr := runCLI(t, "fixture", "--esxi", dir, "--seed", "7")
	if code != 0 {
		t.Fatalf("fixture --esxi: exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(filepath.Join(dir, fixtures.ESXiManifestName))
	if err != nil {
		t.Fatal(err)
	}
	var m fixtures.ESXiManifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Cases) < 9 {
		t.Fatalf("%d cases", len(m.Cases))
	}
	for i, cs := range m.Cases {
		outParent := t.TempDir()
		out := filepath.Join(outParent, "out")
		args := strings.Fields(cs.Command)[1:] // drop "vmcrypt"
		for j, a := range args {
			switch {
			case a == "OUT":
				args[j] = out
			case !strings.HasPrefix(a, "-") && j > 1:
				if _, err := os.Stat(filepath.Join(dir, a)); err == nil {
					args[j] = filepath.Join(dir, a)
				}
			}
		}
		code, _, stderr := runCLI(t, args...)
		if code != cs.ExitCode {
			t.Errorf("case %d %q: exit %d, want %d: %s", i, cs.Command, code, cs.ExitCode, stderr)
			continue
		}
		if code != 0 {
			if names := dirNames(t, outParent); len(names) != 0 {
				t.Errorf("case %d %q failed but left %v", i, cs.Command, names)
			}
			continue
		}
		switch args[1] {
		case "config":
			if fileSHA(t, filepath.Join(out, "local.tgz")) != m.Config.LocalTgzSHA256 {
				t.Errorf("case %d: local.tgz differs from the recipe", i)
			}
		case "envelope":
			if fileSHA(t, out) != m.Dump.PayloadSHA256 {
				t.Errorf("case %d: core dump differs from the recipe", i)
			}
		}
	}
	// inspect of the fixture bundle: its VMs and host name, the version
	// from the boot bank's boot.cfg.
	code, stdout, _ := runCLI(t, "esxi", "inspect", filepath.Join(dir, fixtures.ESXiBootBank), "--json")
	var rep esxiConfigReport
	if code != 0 || json.Unmarshal([]byte(stdout), &rep) != nil || rep.Host.HostName != fixtures.ESXiHostName || len(rep.Host.VMs) != 2 ||
		rep.Host.VMs[1].Path != m.Config.VMs[1].Path || rep.Host.Version != "8.0.3-0.0.00000000" {
		t.Fatalf("inspect fixture: exit %d %+v", code, rep.Host)
	}
	// The TPM case: inspect shows the structure, then exits 4.
	code, stdout, _ = runCLI(t, "esxi", "inspect", filepath.Join(dir, "negative", "tpm", "state.tgz"))
	if code != exitKeyNotFound || !strings.Contains(stdout, "sealed to the host's TPM") {
		t.Fatalf("inspect tpm: exit %d:\n%s", code, stdout)
	}
	// A second fixture into the same folder is refused.
	if code, _, _ := runCLI(t, "fixture", "--esxi", dir); code == 0 {
		t.Fatal("a second ESXi fixture overwrote the first")
	}
}

// TestESXiEnvelopeCLI: the generic decryptor with the real vector (the
// context found by itself, or refused when named wrong), a raw key file
// that is wrong (3, nothing written), an envelope at an offset of a larger
// file.
func TestESXiEnvelopeCLI(t *testing.T) {
	dir := esxiRealDir(t)
	ve := filepath.Join(dir, "local.tgz.ve")
	keyFile := filepath.Join(t.TempDir(), "key.hex")
	os.WriteFile(keyFile, []byte(esxiRealKey+"\n"), 0o600)
	out := filepath.Join(t.TempDir(), "plain")
	code, stdout, stderr := runCLI(t, "esxi", "envelope", ve, "-o", out, "--key-hex-file", keyFile)
	if code != 0 || fileSHA(t, out) != esxiRealSHA || !strings.Contains(stdout, `context "ESXConfiguration"`) {
		t.Fatalf("exit %d: %s %s", code, stdout, stderr)
	}
	out2 := filepath.Join(t.TempDir(), "plain")
	if code, _, _ := runCLI(t, "esxi", "envelope", ve, "-o", out2, "--key-hex-file", keyFile, "--context", ""); code != exitCorrupt {
		t.Fatalf("wrong context: exit %d", code)
	}
	if names := dirNames(t, filepath.Dir(out2)); len(names) != 0 {
		t.Fatalf("a failed tag left %v", names)
	}
	bad := strings.Replace(esxiRealKey, "ae", "af", 1)
	os.WriteFile(keyFile, []byte(bad), 0o600)
	if code, _, _ := runCLI(t, "esxi", "envelope", ve, "-o", out2, "--key-hex-file", keyFile); code != exitWrongKey {
		t.Fatalf("wrong key: exit %d", code)
	}
	os.WriteFile(keyFile, []byte("abcd"), 0o600)
	if code, _, _ := runCLI(t, "esxi", "envelope", ve, "-o", out2, "--key-hex-file", keyFile); code != exitUsage {
		t.Fatalf("short key: exit %d", code)
	}
	if names := dirNames(t, filepath.Dir(out2)); len(names) != 0 {
		t.Fatalf("failures left %v", names)
	}
	// Inside a larger file.
	raw, _ := os.ReadFile(ve)
	img := filepath.Join(t.TempDir(), "dump.img")
	os.WriteFile(img, append(append(make([]byte, 8192), raw...), make([]byte, 3*4096)...), 0o644)
	os.WriteFile(keyFile, []byte(esxiRealKey), 0o600)
	if code, _, stderr := runCLI(t, "esxi", "envelope", img, "--offset", "8192", "-o", out2, "--key-hex-file", keyFile); code != 0 || fileSHA(t, out2) != esxiRealSHA {
		t.Fatalf("--offset: exit %d: %s", code, stderr)
	}
	if code, _, _ := runCLI(t, "esxi", "envelope", ve, "-o", ve, "--key-hex-file", keyFile, "--force"); code != exitUsage {
		t.Fatalf("output = input: exit %d", code)
	}
}

// TestESXiBadInputsExit5: every header field out of range, attributes past
// the block, a missing required attribute, an unknown cipher, a key store
// without ConfigEncData: exit 5, the field named; nothing written.
func TestESXiBadInputsExit5(t *testing.T) {
	raw, err := os.ReadFile(esxiTestdata + "local.tgz.ve")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "key.hex")
	os.WriteFile(keyFile, []byte(esxiRealKey), 0o600)
	mut := func(f func(b []byte)) []byte { b := append([]byte(nil), raw...); f(b); return b }
	header := func(drop, cipher string) []byte {
		var attrs []esxi.Attribute
		for _, a := range []esxi.Attribute{
			{Type: esxi.AttrBytes, Name: esxi.AttrIV, Value: esxi.DefaultIV},
			{Type: esxi.AttrString, Name: esxi.AttrKeyInfo, Value: []byte("7e62cec5-6aef-4d7e-838b-cae32eefd251")},
			{Type: esxi.AttrString, Name: esxi.AttrCipherName, Value: []byte(cipher)},
			{Type: esxi.AttrBytes, Name: esxi.AttrKeyHash, Value: make([]byte, 32)},
		} {
			if a.Name != drop {
				attrs = append(attrs, a)
			}
		}
		h, err := esxi.MarshalHeader(attrs)
		if err != nil {
			t.Fatal(err)
		}
		return mut(func(b []byte) { copy(b, h) })
	}
	cases := []struct {
		name, field string
		b           []byte
	}{
		{"version", "header version", mut(func(b []byte) { binary.LittleEndian.PutUint32(b[0x1fc:], 7) })},
		{"header size", "header size", mut(func(b []byte) { binary.LittleEndian.PutUint32(b[0x1f8:], 1000) })},
		{"header size past the end", "header size", mut(func(b []byte) { binary.LittleEndian.PutUint32(b[0x1f8:], 3584+4096*40) })},
		{"attributes past the block", "attributes", mut(func(b []byte) {
			a := esxi.MarshalAttributes([]esxi.Attribute{{Type: esxi.AttrBytes, Name: "n", Value: make([]byte, 4096-0x200-4-2-8)}})
			copy(b[0x200:], a[:len(a)-4])
		})},
		{"missing keyInfo", "attribute vmware.keyInfo", header(esxi.AttrKeyInfo, esxi.CipherAES256GCM)},
		{"missing keyHash", "attribute vmware.keyHash", header(esxi.AttrKeyHash, esxi.CipherAES256GCM)},
		{"unknown cipher", "attribute vmware.cipherName", header("", "AES-128-CCM")},
		{"footer version", "AEAD footer version", mut(func(b []byte) { binary.LittleEndian.PutUint32(b[len(b)-4:], 9) })},
		{"tag size", "AEAD footer tag size", mut(func(b []byte) { binary.LittleEndian.PutUint32(b[len(b)-8:], 8) })},
		{"truncated footer", "size", raw[:len(raw)-100]},
	}
	for _, c := range cases {
		dir := t.TempDir()
		in := filepath.Join(dir, "x.ve")
		os.WriteFile(in, c.b, 0o644)
		out := filepath.Join(dir, "out")
		code, _, stderr := runCLI(t, "esxi", "envelope", in, "-o", out, "--key-hex-file", keyFile)
		if code != exitCorrupt || !strings.Contains(stderr, c.field+":") {
			t.Errorf("%s: exit %d: %s", c.name, code, stderr)
		}
		if names := dirNames(t, dir); len(names) != 1 {
			t.Errorf("%s: left %v", c.name, names)
		}
		code, _, _ = runCLI(t, "esxi", "inspect", in)
		if code != exitCorrupt {
			t.Errorf("%s: inspect exit %d", c.name, code)
		}
	}
	// A key store without ConfigEncData (mode NONE): exit 5.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "local.tgz.ve"), raw, 0o644)
	os.WriteFile(filepath.Join(dir, "encryption.info"), []byte(".encoding = \"UTF-8\"\nincludeKeyCache = \"FALSE\"\nmode = \"NONE\"\n"), 0o644)
	code, _, stderr := runCLI(t, "esxi", "config", filepath.Join(dir, "local.tgz.ve"), "-o", filepath.Join(dir, "out"))
	if code != exitCorrupt || !strings.Contains(stderr, "ConfigEncData") {
		t.Fatalf("no ConfigEncData: exit %d: %s", code, stderr)
	}
	if names := dirNames(t, dir); len(names) != 2 {
		t.Fatalf("left %v", names)
	}
}

// TestESXiVMTarCLI: the real visor tar lists and extracts its members with
// the listed contents; a hostile archive extracts nothing (exit 5); xz is
// refused as unsupported (exit 5).
func TestESXiVMTarCLI(t *testing.T) {
	vgz := esxiTestdata + "test.vgz"
	code, stdout, _ := runCLI(t, "esxi", "vmtar", vgz)
	if code != 0 || !strings.Contains(stdout, "visor tar (none), 6 members") || !strings.Contains(stdout, "test/subdir/file4") {
		t.Fatalf("list: exit %d:\n%s", code, stdout)
	}
	out := filepath.Join(t.TempDir(), "x")
	if code, _, stderr := runCLI(t, "esxi", "vmtar", vgz, "-o", out); code != 0 {
		t.Fatalf("extract: exit %d: %s", code, stderr)
	}
	want := map[string]string{"test/file1": strings.Repeat("a", 512) + "\n", "test/file2": strings.Repeat("b", 1024) + "\n",
		"test/file3": strings.Repeat("c", 2048) + "\n", "test/subdir/file4": strings.Repeat("f", 2048) + "\n"}
	for n, w := range want {
		b, err := os.ReadFile(filepath.Join(out, filepath.FromSlash(n)))
		if err != nil || string(b) != w {
			t.Fatalf("%s: %d bytes, %v", n, len(b), err)
		}
	}
	// Hostile: each member kind on its own.
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	os.Mkdir(outside, 0o700)
	hostile := []struct {
		name string
		hdr  tar.Header
	}{
		{"absolute", tar.Header{Name: filepath.Join(outside, "evil"), Typeflag: tar.TypeReg, Size: 1}},
		{"dotdot", tar.Header{Name: "../outside/evil", Typeflag: tar.TypeReg, Size: 1}},
		{"symlink out", tar.Header{Name: "l", Linkname: "../outside", Typeflag: tar.TypeSymlink}},
		{"hard link out", tar.Header{Name: "h", Linkname: "../outside/evil", Typeflag: tar.TypeLink}},
		{"10 GB", tar.Header{Name: "big", Typeflag: tar.TypeReg, Size: 10_000_000_000}},
	}
	for _, h := range hostile {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		tw.WriteHeader(&tar.Header{Name: "ok", Typeflag: tar.TypeReg, Size: 2, Mode: 0o644})
		tw.Write([]byte("ok"))
		h.hdr.Mode = 0o644
		tw.WriteHeader(&h.hdr)
		if h.hdr.Size > 0 && h.hdr.Size < 10 {
			tw.Write(make([]byte, h.hdr.Size))
		}
		tw.Flush() // the 10 GB member's data is missing: the claim alone must stop it
		arch := filepath.Join(base, "a.tar")
		os.WriteFile(arch, b.Bytes(), 0o644)
		o := filepath.Join(base, "o")
		code, _, stderr := runCLI(t, "esxi", "vmtar", arch, "-o", o)
		if code != exitCorrupt {
			t.Errorf("%s: exit %d: %s", h.name, code, stderr)
		}
		if names := dirNames(t, outside); len(names) != 0 {
			t.Errorf("%s: wrote outside: %v", h.name, names)
		}
		if names := dirNames(t, base); len(names) != 2 { // outside, a.tar
			t.Errorf("%s: left %v", h.name, names)
			os.RemoveAll(o)
		}
		// Listing shows it, marked unsafe, and exits 0 (10 GB: the data
		// is missing, so the list fails as truncated).
		code, stdout, _ := runCLI(t, "esxi", "vmtar", arch, "--list")
		if h.name != "10 GB" && (code != 0 || !strings.Contains(stdout, "UNSAFE")) {
			t.Errorf("%s: list exit %d:\n%s", h.name, code, stdout)
		}
	}
	// xz: unsupported (5), naming the way out.
	xzFile := filepath.Join(base, "s.v00")
	os.WriteFile(xzFile, []byte("\xfd7zXZ\x00\x00\x04rest"), 0o644)
	code, _, stderr := runCLI(t, "esxi", "vmtar", xzFile)
	if code != exitCorrupt || !strings.Contains(stderr, "xz -dc") {
		t.Fatalf("xz: exit %d: %s", code, stderr)
	}
}

// TestESXiFixtureJSON: --json prints the manifest; it names every case.
func TestESXiFixtureJSON(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fx")
	code, stdout, _ := runCLI(t, "fixture", "--esxi", dir, "--json")
	var m fixtures.ESXiManifest
	if code != 0 || json.Unmarshal([]byte(stdout), &m) != nil {
		t.Fatalf("exit %d: %s", code, stdout)
	}
	var exits []int
	for _, c := range m.Cases {
		exits = append(exits, c.ExitCode)
	}
	sort.Ints(exits)
	if len(exits) != 9 || exits[0] != 0 || exits[len(exits)-1] != 5 {
		t.Fatalf("cases %v", exits)
	}
	if code, _, _ := runCLI(t, "fixture", "--esxi", filepath.Join(t.TempDir(), "y"), "--provider", "kms"); code != exitUsage {
		t.Fatalf("--esxi with --provider: exit %d", code)
	}
}
