package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func rand32(t testing.TB) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKEKFileJSON(t *testing.T) {
	dir := t.TempDir()
	k1, k2, k3 := rand32(t), rand32(t), rand32(t)
	obj := writeFile(t, dir, "one.json", fmt.Sprintf(`{"provider": "KMS", "keyId": "a4e7494f-da55-4917-9d90-560c5078866b", "key": %q}`, b64(k1)))
	list := writeFile(t, dir, "list.json", fmt.Sprintf(`[
	  {"provider": "KMS", "keyId": "a4e7494f-da55-4917-9d90-560c5078866b", "key": %q},
	  {"provider": "vault", "keyId": "key-2", "key": %q},
	  {"keyId": "any-provider", "key": %q}
	]`, b64(k1), b64(k2), b64(k3)))

	one, err := OpenKEKFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := one.KEK(context.Background(), "kms", "A4E7494F-DA55-4917-9D90-560C5078866B"); err != nil || !bytes.Equal(got, k1) {
		t.Fatalf("case-insensitive provider and UUID: %v", err)
	}
	kf, err := OpenKEKFile(list)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		provider, keyID string
		want            []byte
	}{
		{"KMS", "a4e7494f-da55-4917-9d90-560c5078866b", k1},
		{"Vault", "key-2", k2},
		{"whatever", "any-provider", k3},
		{"KMS", "key-2", nil},      // key id known for another provider
		{"vault", "KEY-2", nil},    // non-UUID key ids compare exactly
		{"KMS", "missing-id", nil}, // not held
	}
	for _, c := range cases {
		got, err := kf.KEK(context.Background(), c.provider, c.keyID)
		if c.want != nil {
			if err != nil || !bytes.Equal(got, c.want) {
				t.Fatalf("%s/%s: %v", c.provider, c.keyID, err)
			}
			continue
		}
		var nf *keysafe.KeyNotFoundError
		if !errors.As(err, &nf) || nf.Provider != c.provider || nf.KeyID != c.keyID {
			t.Fatalf("%s/%s: %v, want KeyNotFoundError", c.provider, c.keyID, err)
		}
	}
	// The returned key is a copy.
	got, _ := kf.KEK(context.Background(), "vault", "key-2")
	got[0] ^= 1
	if again, _ := kf.KEK(context.Background(), "vault", "key-2"); !bytes.Equal(again, k2) {
		t.Fatal("KEK returned the internal slice")
	}
}

func TestKEKFileRefusals(t *testing.T) {
	dir := t.TempDir()
	k := b64(rand32(t))
	cases := []struct {
		name, content string
		want          error
	}{
		{"short key", `{"keyId": "x", "key": "` + b64(make([]byte, 31)) + `"}`, keysafe.ErrCorrupt},
		{"long key", `[{"keyId": "x", "key": "` + k + `"}, {"keyId": "y", "key": "` + b64(make([]byte, 64)) + `"}]`, keysafe.ErrCorrupt},
		{"not base64", `{"keyId": "x", "key": "!!!"}`, keysafe.ErrCorrupt},
		{"no key id", `{"provider": "KMS", "key": "` + k + `"}`, keysafe.ErrCorrupt},
		{"no key", `{"provider": "KMS", "keyId": "x"}`, keysafe.ErrCorrupt},
		{"unknown field", `{"keyId": "x", "key": "` + k + `", "kye": 1}`, keysafe.ErrCorrupt},
		{"trailing data", `{"keyId": "x", "key": "` + k + `"} {}`, keysafe.ErrCorrupt},
		{"empty list", `[]`, keysafe.ErrCorrupt},
		{"not JSON", `keyId=x`, keysafe.ErrCorrupt},
		{"truncated", `[{"keyId": "x", "key": "` + k, keysafe.ErrCorrupt},
		{"conflict", `[{"keyId": "x", "key": "` + k + `"}, {"keyId": "x", "key": "` + b64(rand32(t)) + `"}]`, keysafe.ErrCorrupt},
		{"UTF-16", "\xff\xfe{\x00}\x00", keysafe.ErrCorrupt},
		{"too large", `[` + strings.Repeat(" ", MaxKEKFileSize) + `]`, keysafe.ErrUnsupported},
		{"too many", `[` + strings.Repeat(`{"keyId": "x", "key": "`+k+`"},`, MaxKEKEntries) + `{"keyId": "x", "key": "` + k + `"}]`, keysafe.ErrUnsupported},
	}
	for _, c := range cases {
		p := writeFile(t, dir, "f.json", c.content)
		_, err := OpenKEKFile(p)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// A BOM, then white space, then the object (Notepad, PowerShell 7).
	if _, err := OpenKEKFile(writeFile(t, dir, "bom.json", "\xef\xbb\xbf\r\n  {\"keyId\": \"x\", \"key\": \""+k+"\"}\r\n")); err != nil {
		t.Fatalf("BOM and white space: %v", err)
	}
	// Identical duplicates are harmless.
	p := writeFile(t, dir, "dup.json", `[{"keyId": "x", "key": "`+k+`"}, {"keyId": "x", "key": "`+k+`"}]`)
	if _, err := OpenKEKFile(p); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKEKFile(filepath.Join(dir, "missing.json")); err == nil || errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestKEKFolder(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := rand32(t), rand32(t)
	nkpID := "ASEAAgEA/x+y=" // a key id with "/" is stored URL-escaped
	os.WriteFile(filepath.Join(dir, "a4e7494f-da55-4917-9d90-560c5078866b"), k1, 0o600)
	os.WriteFile(filepath.Join(dir, url.PathEscape(nkpID)), k2, 0o600)
	os.WriteFile(filepath.Join(dir, ".DS_Store"), []byte("junk"), 0o600)
	os.Mkdir(filepath.Join(dir, "sub"), 0o700)
	kf, err := OpenKEKFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if kf.Len() != 2 {
		t.Fatalf("%d keys", kf.Len())
	}
	if got, err := kf.KEK(context.Background(), "anything", "a4e7494f-da55-4917-9d90-560c5078866b"); err != nil || !bytes.Equal(got, k1) {
		t.Fatal(err)
	}
	if got, err := kf.KEK(context.Background(), "local", nkpID); err != nil || !bytes.Equal(got, k2) {
		t.Fatal(err)
	}
	if _, err := kf.KEK(context.Background(), "KMS", "other"); !errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatal(err)
	}
	// The same key id stored raw and escaped, with different bytes: which
	// one answered would depend on the folder's order, so it is refused.
	clash := t.TempDir()
	os.WriteFile(filepath.Join(clash, "AQEA+key"), k1, 0o600)
	os.WriteFile(filepath.Join(clash, "AQEA%2Bkey"), k2, 0o600)
	if _, err := OpenKEKFile(clash); !errors.Is(err, keysafe.ErrCorrupt) || !strings.Contains(err.Error(), "same key") {
		t.Fatalf("raw and escaped names of one key id: %v", err)
	}
	// A file of the wrong size is corrupt, naming the file.
	os.WriteFile(filepath.Join(dir, "bad-key"), make([]byte, 33), 0o600)
	if _, err := OpenKEKFile(dir); !errors.Is(err, keysafe.ErrCorrupt) || !strings.Contains(err.Error(), "bad-key") {
		t.Fatalf("wrong-size file: %v", err)
	}
	if _, err := OpenKEKFile(t.TempDir()); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("empty folder: %v", err)
	}
}

// TestResolverWithKEKFile: a key locked by a KMS key (fqid pair) opens
// through the Resolver with the matching KEK file entry, and without it
// fails with a KeyNotFoundError naming the provider and key id.
func TestResolverWithKEKFile(t *testing.T) {
	dir := t.TempDir()
	kek := rand32(t)
	key := &keysafe.Key{Cipher: keysafe.CipherXTSAES256, Bytes: append(rand32(t), rand32(t)...)}
	pair, err := keysafe.LockFQID(key, "KMS", "a4e7494f-da55-4917-9d90-560c5078866b", kek, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	loc := keysafe.NewList(pair)
	good := writeFile(t, dir, "good.json", `{"provider": "KMS", "keyId": "a4e7494f-da55-4917-9d90-560c5078866b", "key": "`+b64(kek)+`"}`)
	other := writeFile(t, dir, "other.json", `{"provider": "KMS", "keyId": "some-other-key", "key": "`+b64(kek)+`"}`)
	wrong := writeFile(t, dir, "wrong.json", `{"provider": "KMS", "keyId": "a4e7494f-da55-4917-9d90-560c5078866b", "key": "`+b64(rand32(t))+`"}`)
	open := func(p string) *KEKFile {
		kf, err := OpenKEKFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return kf
	}
	got, op, err := NewResolver(open(other), open(good)).Open(context.Background(), loc)
	if err != nil || !bytes.Equal(got.Bytes, key.Bytes) || op.Source != "KEK file "+good {
		t.Fatalf("open: %v %+v", err, op)
	}
	_, _, err = NewResolver(open(other)).Open(context.Background(), loc)
	var nf *keysafe.KeyNotFoundError
	if !errors.As(err, &nf) || nf.KeyID != "a4e7494f-da55-4917-9d90-560c5078866b" || nf.Provider != "KMS" {
		t.Fatalf("missing entry: %v", err)
	}
	if _, _, err := NewResolver(open(wrong)).Open(context.Background(), loc); !errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("wrong KEK bytes: %v", err)
	}
}

// FuzzKEKJSON: the KEK JSON reader never panics, fails only with the
// sentinels, and every key it returns is 32 bytes.
func FuzzKEKJSON(f *testing.F) {
	k := b64(make([]byte, 32))
	f.Add([]byte(`{"provider": "KMS", "keyId": "a4e7494f-da55-4917-9d90-560c5078866b", "key": "` + k + `"}`))
	f.Add([]byte(`[{"keyId": "x", "key": "` + k + `"}, {"provider": "p", "keyId": "y", "key": "` + k + `"}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := ParseKEKJSON("fuzz.json", data)
		if err != nil {
			if kf != nil || !(errors.Is(err, keysafe.ErrCorrupt) || errors.Is(err, keysafe.ErrUnsupported)) {
				t.Fatalf("%v", err)
			}
			return
		}
		for _, e := range kf.entries {
			got, err := kf.KEK(context.Background(), e.provider, e.keyID)
			if err != nil || len(got) != KEKLen {
				t.Fatalf("entry %s: %v", e.where, err)
			}
		}
	})
}

// A KEK file that holds the key id under another provider name: the
// missing-key error says so (the source's hint), not the generic "a KEK
// file with this key id opens it".
func TestResolverHintFromSource(t *testing.T) {
	key := randKey(t, keysafe.CipherXTSAES256)
	kek := rand32(t)
	p, err := keysafe.LockFQID(key, "vmcrypt-kms", "id-7", kek, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kf, err := ParseKEKJSON("other.json", []byte(`{"provider": "other-kms", "keyId": "id-7", "key": "`+b64(kek)+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = NewResolver(kf).Open(context.Background(), keysafe.NewList(p))
	var nf *keysafe.KeyNotFoundError
	if !errors.As(err, &nf) {
		t.Fatalf("want a KeyNotFoundError, got %v", err)
	}
	if !strings.Contains(nf.Hint, "other-kms") {
		t.Fatalf("%v (hint %q)", err, nf.Hint)
	}
}
