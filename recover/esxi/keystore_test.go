package esxi

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// TestKeyStoreWriterReproducesRealFile: MarshalKeyStore with the real
// file's keyId, data1 and data2 writes the real encryption.info byte for
// byte, and the key it yields is the documented one.
func TestKeyStoreWriterReproducesRealFile(t *testing.T) {
	real := readTestdata(t, realKeyStore)
	dec := func(s string) []byte {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	got := MarshalKeyStore(false, dec("fmLOxWrvTX6Di8rjLu/SUQ=="), dec("Uz8MFZfqTbWN2jIHbFPhag=="), dec("IDcZE41aR+uxDv7Iz8zJSA=="))
	if !bytes.Equal(got, real) {
		t.Fatalf("MarshalKeyStore:\n%s\nreal:\n%s", got, real)
	}
	k, err := DeriveKeyStoreKey(dec("Uz8MFZfqTbWN2jIHbFPhag=="), dec("IDcZE41aR+uxDv7Iz8zJSA=="))
	if err != nil || string(k) != string(realKey(t)) {
		t.Fatalf("derived %x, %v", k, err)
	}
}

func TestKeyStoreSealed(t *testing.T) {
	for _, mode := range []string{"TPM", "TPM2"} {
		ks, err := ParseKeyStore("encryption.info", []byte("mode = \""+mode+"\"\nincludeKeyCache = \"TRUE\"\nConfigEncData = \"keyId=fmLOxWrvTX6Di8rjLu/SUQ%3d%3d:sealed=AAAA:version=1\"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if !ks.Sealed() || !ks.IncludeKeyCache || ks.KeyID != realKeyID {
			t.Fatalf("%+v", ks)
		}
		_, err = ks.Key()
		var se *SealedError
		if !errors.Is(err, ErrTPMSealed) || !errors.Is(err, keysafe.ErrKeyNotFound) || !errors.As(err, &se) || se.Mode != mode {
			t.Fatalf("sealed key: %v", err)
		}
	}
	// Sealed without ConfigEncData parses too (nothing to derive anyway).
	if ks, err := ParseKeyStore("e", []byte("mode = \"TPM\"\n")); err != nil || !ks.Sealed() {
		t.Fatalf("%v %v", ks, err)
	}
}

// TestBadKeyStores: each refused with its sentinel and field.
func TestBadKeyStores(t *testing.T) {
	const ced = `ConfigEncData = "keyId=fmLOxWrvTX6Di8rjLu/SUQ%3d%3d:data1=Uz8MFZfqTbWN2jIHbFPhag%3d%3d:data2=IDcZE41aR+uxDv7Iz8zJSA%3d%3d:version=1"`
	cases := []struct {
		name, text string
		want       error
		field      string
	}{
		{"no ConfigEncData", "mode = \"NONE\"\nincludeKeyCache = \"FALSE\"\n", keysafe.ErrCorrupt, "ConfigEncData"},
		{"empty", "", keysafe.ErrCorrupt, "key store"},
		{"no mode", ced + "\n", keysafe.ErrCorrupt, "mode"},
		{"empty mode", "mode = \"\"\n" + ced, keysafe.ErrCorrupt, "mode"},
		{"mode twice", "mode = \"NONE\"\nmode = \"NONE\"\n" + ced, keysafe.ErrCorrupt, "mode"},
		{"includeKeyCache", "mode = \"NONE\"\nincludeKeyCache = \"MAYBE\"\n" + ced, keysafe.ErrCorrupt, "includeKeyCache"},
		{"dict", "mode = \"NONE\"\nConfigEncData = \"keyId\"\n", keysafe.ErrCorrupt, "ConfigEncData"},
		{"keyId", "mode = \"NONE\"\n" + strings.Replace(ced, "fmLOxWrvTX6Di8rjLu/SUQ%3d%3d", "AAAA", 1), keysafe.ErrCorrupt, "ConfigEncData keyId"},
		{"no keyId", "mode = \"NONE\"\n" + strings.Replace(ced, "keyId=", "keyid=", 1), keysafe.ErrCorrupt, "ConfigEncData keyId"},
		{"version 2", "mode = \"NONE\"\n" + strings.Replace(ced, "version=1", "version=2", 1), keysafe.ErrUnsupported, "ConfigEncData version"},
		{"no version", "mode = \"NONE\"\n" + strings.Replace(ced, ":version=1", "", 1), keysafe.ErrCorrupt, "ConfigEncData version"},
		{"no data1", "mode = \"NONE\"\n" + strings.Replace(ced, "data1=", "datax=", 1), keysafe.ErrCorrupt, "ConfigEncData data1"},
		{"bad data2", "mode = \"NONE\"\n" + strings.Replace(ced, "data2=IDcZ", "data2=!DcZ", 1), keysafe.ErrCorrupt, "ConfigEncData data2"},
		{"too large", "mode = \"NONE\"\n" + ced + "\n#" + strings.Repeat("x", MaxKeyStoreSize), keysafe.ErrUnsupported, "key store"},
	}
	for _, c := range cases {
		_, err := ParseKeyStore("encryption.info", []byte(c.text))
		if !errors.Is(err, c.want) || fieldOf(err) != c.field {
			t.Errorf("%s: got %v (field %q), want %v at %q", c.name, err, fieldOf(err), c.want, c.field)
		}
	}
}
