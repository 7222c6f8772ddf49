package esxi

import (
	"bytes"
	"errors"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// TestDetect: each kind of host file is recognised with what matters to a
// scan: encrypted or not, the key id, whether the key travels with it
// (mode NONE), and the secrets a plain configuration exposes.
func TestDetect(t *testing.T) {
	env := readTestdata(t, realEnvelope)
	ks := readTestdata(t, realKeyStore)
	state := realState(t)
	plain := tgz(t, file{PathEsxConf, []byte("x")}, file{"etc/ssh/ssh_host_rsa_key", []byte("k")}, file{"etc/vmware/ssl/rui.key", []byte("k")})
	tpmState := tgz(t, file{NameEnvelope, env}, file{NameKeyStore, []byte("mode = \"TPM\"\n")})
	cases := []struct {
		name                                string
		b                                   []byte
		kind                                Kind
		encrypted, keyBeside, plain, sealed bool
		keyID                               string
		secrets                             int
	}{
		{"envelope", env, KindEnvelope, true, false, false, false, realKeyID, 0},
		{"key store", ks, KindKeyStore, false, false, false, false, realKeyID, 0},
		{"vmtar", readTestdata(t, realVMTar), KindVisorTar, false, false, false, false, "", 0},
		{"state", state, KindStateArchive, true, true, false, false, realKeyID, 0},
		{"bundle", tgz(t, file{"Manifest.txt", nil}, file{NameState, state}), KindConfigBundle, true, true, false, false, realKeyID, 0},
		{"tpm state", tpmState, KindStateArchive, true, false, false, true, realKeyID, 0},
		{"plain state", tgz(t, file{NamePlain, plain}), KindStateArchive, false, false, true, false, "", 2},
		{"plain local.tgz", plain, KindPlainConfig, false, false, true, false, "", 2},
		{"other gzip", tgz(t, file{"a", []byte("b")}), KindGzipArchive, false, false, false, false, "", 0},
		{"text", []byte("hello world\n"), KindUnknown, false, false, false, false, "", 0},
		{"vmx-like", []byte("mode = \"x\"\n"), KindUnknown, false, false, false, false, "", 0},
	}
	for _, c := range cases {
		d, err := Detect(bytes.NewReader(c.b), int64(len(c.b)))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if d.Kind != c.kind || d.Encrypted != c.encrypted || d.KeyBeside != c.keyBeside || d.Plain != c.plain || d.Sealed != c.sealed || d.KeyID != c.keyID || len(d.Secrets) != c.secrets || d.Partial {
			t.Errorf("%s: %+v", c.name, d)
		}
		if d.Exposed() != (c.keyBeside || c.plain) {
			t.Errorf("%s: exposed %v", c.name, d.Exposed())
		}
	}
	// A damaged envelope: its kind and the error.
	d, err := Detect(bytes.NewReader(env[:len(env)-100]), int64(len(env)-100))
	if d.Kind != KindEnvelope || !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("damaged: %+v %v", d, err)
	}
}
