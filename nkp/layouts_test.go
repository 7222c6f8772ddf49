package nkp

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Other layouts docs/formats.md §10 says to accept: the bags inside a
// pkcs7-encryptedData container (as keytool writes certificates and
// OpenSSL writes everything), a plain keyBag, and a secretBag whose secret
// is a plain PrivateKeyInfo.

func friendly(id UUID) []byte {
	return set(seq(mustOID(oidFriendlyName), set(bmpString(id.String()))))
}

// layout builds a backup holding kdk in one of the layouts.
func layout(t testing.TB, kind string, kdk *KDK, password []byte) []byte {
	t.Helper()
	salt, iv, macSalt := bytes.Repeat([]byte{1}, 20), bytes.Repeat([]byte{2}, 16), bytes.Repeat([]byte{3}, 20)
	pki := privateKeyInfo(kdk.Key)
	var authSafe []byte
	switch kind {
	case "encryptedData keyBag":
		sc := seq(seq(mustOID(oidKeyBag), explicit0(pki), friendly(kdk.ID)))
		alg, ct, err := pbes2Encrypt(password, sc, salt, iv, 100)
		if err != nil {
			t.Fatal(err)
		}
		ed := seq(integer(0), seq(mustOID(oidData), alg, der(2, 0, false, ct)))
		authSafe = seq(seq(mustOID(oidEncryptedData), explicit0(ed)))
	case "data keyBag":
		authSafe = seq(seq(mustOID(oidData), explicit0(octet(seq(seq(mustOID(oidKeyBag), explicit0(pki), friendly(kdk.ID)))))))
	case "secretBag plain":
		bag := seq(mustOID(oidSecretBag), explicit0(seq(mustOID(oidKeyBag), explicit0(octet(pki)))), friendly(kdk.ID))
		authSafe = seq(seq(mustOID(oidData), explicit0(octet(seq(bag)))))
	case "pkcs8ShroudedKeyBag":
		alg, ct, err := pbes2Encrypt(password, pki, salt, iv, 100)
		if err != nil {
			t.Fatal(err)
		}
		bag := seq(mustOID(oidShroudedKeyBag), explicit0(seq(alg, octet(ct))), friendly(kdk.ID))
		authSafe = seq(seq(mustOID(oidData), explicit0(octet(seq(bag)))))
	default:
		t.Fatalf("layout %q", kind)
	}
	return pfx(authSafe, password, macSalt, 100)
}

var layoutKinds = []string{"encryptedData keyBag", "data keyBag", "secretBag plain", "pkcs8ShroudedKeyBag"}

func TestLayouts(t *testing.T) {
	dir := t.TempDir()
	for _, kind := range layoutKinds {
		kdk := newTestKDK(t, "")
		raw := layout(t, kind, kdk, []byte("pw"))
		b, err := ParseBytes(raw)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		got, err := b.Open([]byte("pw"))
		if err != nil || len(got) != 1 || got[0].ID != kdk.ID || !bytes.Equal(got[0].Key, kdk.Key) {
			t.Fatalf("%s: %v", kind, err)
		}
		if _, err := b.Open([]byte("pw2")); !errors.Is(err, keysafe.ErrWrongKey) {
			t.Fatalf("%s wrong password: %v", kind, err)
		}
		// Truncations stay corrupt in every layout.
		for n := 0; n < len(raw); n += 5 {
			if _, err := ParseBytes(raw[:n]); !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatalf("%s cut at %d: %v", kind, n, err)
			}
		}
		// OpenSSL reads each layout and checks its MAC (peer).
		f := filepath.Join(dir, strings.ReplaceAll(kind, " ", "-")+".p12")
		os.WriteFile(f, raw, 0o600)
		out := run(t, "openssl", "pkcs12", "-info", "-nokeys", "-nocerts", "-in", f, "-passin", "pass:pw")
		want := map[string][]string{
			"encryptedData keyBag": {"PKCS7 Encrypted data: PBES2", "Key bag"},
			"data keyBag":          {"PKCS7 Data", "Key bag"},
			"secretBag plain":      {"Secret bag", "friendlyName: " + kdk.ID.String()},
			"pkcs8ShroudedKeyBag":  {"Shrouded Keybag: PBES2"},
		}[kind]
		for _, w := range append(want, "MAC: sha256") {
			if !strings.Contains(out, w) {
				t.Fatalf("%s: openssl does not say %q:\n%s", kind, w, out)
			}
		}
	}
	// The MAC-covered encrypted container: a flipped ciphertext byte with
	// the right password fails the MAC and the container: a wrong password
	// as far as anyone can tell, never a KDK.
	kdk := newTestKDK(t, "")
	raw := layout(t, "encryptedData keyBag", kdk, []byte("pw"))
	b, _ := ParseBytes(raw)
	ct := b.Containers[0].ciphertext
	i := bytes.Index(raw, ct) + len(ct) - 1
	raw[i] ^= 1
	b, err := ParseBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open([]byte("pw")); err == nil {
		t.Fatal("damaged container opened")
	}
}
