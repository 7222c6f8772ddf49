package esxi

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

type file struct {
	name string
	data []byte
}

// tgz makes a gzip tar of files.
func tgz(t testing.TB, files ...file) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.data)), ModTime: time.Unix(1628667885, 0), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(f.data)
	}
	tw.Close()
	zw.Close()
	return b.Bytes()
}

func write(t testing.TB, p string, b []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func realState(t testing.TB) []byte {
	return tgz(t, file{NameEnvelope, readTestdata(t, realEnvelope)}, file{NameKeyStore, readTestdata(t, realKeyStore)})
}

// TestFindConfigEveryForm: the real configuration is found and decrypts
// to the documented bytes from a bundle, a state.tgz, a boot-bank folder,
// and the envelope with encryption.info beside it or named.
func TestFindConfigEveryForm(t *testing.T) {
	dir := t.TempDir()
	state := realState(t)
	bundle := tgz(t, file{"Manifest.txt", []byte("UUID=x\n")}, file{NameState, state})
	forms := map[string]struct{ path, ks, kind string }{
		"bundle": {write(t, filepath.Join(dir, "b", "configBundle-h.tgz"), bundle), "", "config bundle"},
		"state":  {write(t, filepath.Join(dir, "s", NameState), state), "", "state archive"},
		"folder": {filepath.Dir(write(t, filepath.Join(dir, "bootbank", NameState), state)), "", "boot bank folder"},
		"beside": {write(t, filepath.Join(dir, "e", NameEnvelope), readTestdata(t, realEnvelope)), "", "envelope"},
		"named":  {write(t, filepath.Join(dir, "n", "cfg.ve"), readTestdata(t, realEnvelope)), realKeyStore, "envelope"},
	}
	write(t, filepath.Join(dir, "e", NameKeyStore), readTestdata(t, realKeyStore))
	write(t, filepath.Join(dir, "bootbank", NameBootCfg), []byte("bootstate=0\nbuild=7.0.2-0.0.17867351\n"))
	for name, f := range forms {
		h, err := FindConfig(f.path, f.ks)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h.Kind != f.kind || !h.Encrypted() || h.KeyStore == nil || h.KeyStore.KeyID != realKeyID {
			t.Fatalf("%s: %+v", name, h)
		}
		var out bytes.Buffer
		res, err := h.WriteLocalTgz(&out, nil)
		if err != nil || res.Context != ContextConfiguration || sha(out.Bytes()) != realPlainSHA {
			t.Fatalf("%s: %v %v", name, res, err)
		}
		h.Close()
	}
}

// TestInspectRealConfiguration: the real configuration's files, its
// vmInventory.xml, host name and version.
func TestInspectRealConfiguration(t *testing.T) {
	p := write(t, filepath.Join(t.TempDir(), NameState), realState(t))
	h, err := FindConfig(p, "")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	hi, err := h.Inspect()
	if err != nil {
		t.Fatal(err)
	}
	if len(hi.Files) != 36 || !hi.HasEsxConf || !hi.HasVMList {
		t.Fatalf("%d files", len(hi.Files))
	}
	if len(hi.VMs) != 1 || hi.VMs[0].ID != "2" || hi.VMs[0].Path != "/vmfs/volumes/5fb27751-02685a39-c989-000c29801686/Fedora 33 Server/Fedora 33 Server.vmx" {
		t.Fatalf("VMs %+v", hi.VMs)
	}
	if hi.HostName != "jemoeder.internet.vm" || hi.Version != "7.0.2" || hi.SystemUUID != "5fb27665-83f4-b1f5-3e9f-000c29801686" {
		t.Fatalf("host %q version %q uuid %q", hi.HostName, hi.Version, hi.SystemUUID)
	}
	secrets := map[string]string{}
	for _, f := range hi.Secrets() {
		secrets[f.Name] = f.Secret
	}
	for _, n := range []string{"etc/vmware/ssl/rui.key", "etc/ssh/ssh_host_rsa_key", "etc/ssh/ssh_host_ecdsa_key", "etc/shadow"} {
		if secrets[n] == "" {
			t.Errorf("%s not flagged as a secret (%v)", n, secrets)
		}
	}
	if secrets["etc/ssh/ssh_host_rsa_key.pub"] != "" {
		t.Error("a public key flagged as a secret")
	}
}

// TestConfigNegatives: a key store of another id is the wrong key (3), a
// TPM store sealed (4), no store a missing key naming the id (4), a
// damaged envelope corrupt (5); a plain local.tgz is copied as is.
func TestConfigNegatives(t *testing.T) {
	dir := t.TempDir()
	env := readTestdata(t, realEnvelope)
	other := MarshalKeyStore(false, bytes.Repeat([]byte{1}, 16), []byte("0123456789abcdef"), []byte("fedcba9876543210"))
	tpm := []byte("mode = \"TPM\"\nincludeKeyCache = \"TRUE\"\n")
	sameIDWrongKey := bytes.Replace(readTestdata(t, realKeyStore), []byte("data1=Uz8M"), []byte("data1=Uz8N"), 1)
	flipped := append([]byte(nil), env...)
	flipped[BlockSize+100] ^= 1
	cases := []struct {
		name  string
		files []file
		want  error
	}{
		{"other key id", []file{{NameEnvelope, env}, {NameKeyStore, other}}, keysafe.ErrWrongKey},
		{"same id, other key", []file{{NameEnvelope, env}, {NameKeyStore, sameIDWrongKey}}, keysafe.ErrWrongKey},
		{"tpm", []file{{NameEnvelope, env}, {NameKeyStore, tpm}}, ErrTPMSealed},
		{"no key store", []file{{NameEnvelope, env}}, keysafe.ErrKeyNotFound},
		{"flipped", []file{{NameEnvelope, flipped}, {NameKeyStore, readTestdata(t, realKeyStore)}}, keysafe.ErrCorrupt},
	}
	for _, c := range cases {
		p := write(t, filepath.Join(dir, c.name, NameState), tgz(t, c.files...))
		h, err := FindConfig(p, "")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		_, err = h.WriteLocalTgz(io.Discard, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: WriteLocalTgz: %v", c.name, err)
		}
		if _, err := h.Inspect(); !errors.Is(err, c.want) {
			t.Errorf("%s: Inspect: %v", c.name, err)
		}
		h.Close()
	}
	var nf *keysafe.KeyNotFoundError
	h, _ := FindConfig(write(t, filepath.Join(dir, "nf", NameState), tgz(t, file{NameEnvelope, env})), "")
	if _, err := h.WriteLocalTgz(io.Discard, nil); !errors.As(err, &nf) || nf.KeyID != realKeyID {
		t.Fatalf("missing key store: %v", err)
	}
	// A plain (pre-7.0 U2) configuration: copied as is.
	plain := tgz(t, file{PathEsxConf, []byte("/adv/Misc/HostName = \"old\"\n")})
	for _, p := range []string{
		write(t, filepath.Join(dir, "plain", NameState), tgz(t, file{NamePlain, plain})),
		write(t, filepath.Join(dir, "plain2", NamePlain), plain),
	} {
		h, err := FindConfig(p, "")
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		if res, err := h.WriteLocalTgz(&out, nil); err != nil || res != nil || !bytes.Equal(out.Bytes(), plain) || h.Encrypted() {
			t.Fatalf("plain: %v %v", res, err)
		}
		hi, err := h.Inspect()
		if err != nil || hi.HostName != "old" {
			t.Fatalf("plain inspect: %v %+v", err, hi)
		}
	}
	// Nothing there.
	if _, err := FindConfig(write(t, filepath.Join(dir, "none", NameState), tgz(t, file{"x", []byte("y")})), ""); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("empty state: %v", err)
	}
}

// TestWalkReverifies: the decrypting pass checks the tag again, so data
// changed after the first check is refused.
func TestWalkReverifies(t *testing.T) {
	env := readTestdata(t, realEnvelope)
	e, err := parseBytes(t, env)
	if err != nil {
		t.Fatal(err)
	}
	// A reader whose data changes after the first full pass.
	fr := &flipAfter{b: env, after: int64(len(env)) - 2*BlockSize, off: BlockSize + 7}
	e.r = fr
	h := &HostConfig{Envelope: e, EnvelopeFrom: "x", KeyStore: mustKS(t)}
	if err := h.Walk(func(*Entry, io.Reader) error { return nil }); !errors.Is(err, keysafe.ErrCorrupt) || fieldOf(err) != "GCM tag" {
		t.Fatalf("changed data: %v", err)
	}
}

func mustKS(t testing.TB) *KeyStore {
	ks, err := ParseKeyStore(realKeyStore, readTestdata(t, realKeyStore))
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// flipAfter serves b, flipping the byte at off once more than after
// bytes of data have been read.
type flipAfter struct {
	b       []byte
	after   int64
	off     int
	read    int64
	flipped bool
}

func (f *flipAfter) ReadAt(p []byte, off int64) (int, error) {
	if f.read > f.after && !f.flipped {
		f.b = append([]byte(nil), f.b...)
		f.b[f.off] ^= 1
		f.flipped = true
	}
	n := copy(p, f.b[off:])
	f.read += int64(n)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
