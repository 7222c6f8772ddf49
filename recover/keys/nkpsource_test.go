package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

func writeBackup(t *testing.T, dir string, kdk *nkp.KDK, password string) string {
	t.Helper()
	raw, err := nkp.Marshal(kdk, []byte(password), &nkp.WriteOptions{Iterations: 1000})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, kdk.ID.String()+".p12")
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func newKDK(t *testing.T) *nkp.KDK {
	k, err := nkp.NewKDK("nkp-test")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestNKPSource: a VM key locked by an NKP key id opens through the
// Resolver with the right backup; the backup of another KDK answers
// "not found" and names the KDK the VM needs; a wrong backup password
// fails when the source is made; a damaged key id is corrupt.
func TestNKPSource(t *testing.T) {
	dir := t.TempDir()
	kdk, otherKDK := newKDK(t), newKDK(t)
	good := writeBackup(t, dir, kdk, "pw")
	other := writeBackup(t, dir, otherKDK, "")

	kek := rand32(t)
	kid, err := kdk.Wrap(kek)
	if err != nil {
		t.Fatal(err)
	}
	key := &keysafe.Key{Cipher: keysafe.CipherXTSAES256, Bytes: append(rand32(t), rand32(t)...)}
	pair, err := keysafe.LockFQID(key, "local", kid.String(), kek, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Round trip through the key-safe text, as a VMX carries it.
	loc, err := keysafe.Parse(keysafe.NewList(pair).String())
	if err != nil {
		t.Fatal(err)
	}

	src, err := OpenNKPBackup(good, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if ids := src.KDKIDs(); len(ids) != 1 || ids[0] != kdk.ID {
		t.Fatalf("KDK ids %v", ids)
	}
	otherSrc, err := OpenNKPBackup(other, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, op, err := NewResolver(otherSrc, src).Open(context.Background(), loc)
	if err != nil || !bytes.Equal(got.Bytes, key.Bytes) || op.Source != src.Name() {
		t.Fatalf("open: %v %+v", err, op)
	}

	// The other backup: not found, and the hint names the KDK needed.
	_, _, err = NewResolver(otherSrc).Open(context.Background(), loc)
	var nf *keysafe.KeyNotFoundError
	if !errors.As(err, &nf) || nf.KeyID != kid.String() || !strings.Contains(nf.Hint, kdk.ID.String()) {
		t.Fatalf("other KDK: %v", err)
	}

	// Wrong password: at once, ErrWrongKey.
	if _, err := OpenNKPBackup(good, []byte("pw2")); !errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("wrong password: %v", err)
	}
	// Truncated backup: corrupt.
	raw, _ := os.ReadFile(good)
	cut := filepath.Join(dir, "cut.p12")
	os.WriteFile(cut, raw[:len(raw)/2], 0o600)
	if _, err := OpenNKPBackup(cut, []byte("pw")); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}

	// Key ids the backup cannot hold: not found.
	for _, id := range []string{"a4e7494f-da55-4917-9d90-560c5078866b", "", "AAAA"} {
		if _, err := src.KEK(context.Background(), "KMS", id); !errors.As(err, &nf) || nf.KeyID != id {
			t.Fatalf("%q: %v", id, err)
		}
	}
	// Right KDK id, damaged wrapped key: corrupt (not a wrong key: the
	// password was proven by the MAC).
	b := kid.Bytes()
	b[0x40] ^= 1
	bad, _ := nkp.ParseKeyID(b)
	if _, err := src.KEK(context.Background(), "local", bad.String()); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("damaged key id: %v", err)
	}
	if got, err := src.KEK(context.Background(), "any-provider-name", kid.String()); err != nil || !bytes.Equal(got, kek) {
		t.Fatalf("provider must not matter: %v", err)
	}
	// Another backup holding a different key under the same KDK id: the
	// GCM tag fails under it, and the right backup still opens the VM in
	// either order; alone it is corrupt, named once.
	clashKDK := newKDK(t)
	clashKDK.ID = kdk.ID
	clashDir := t.TempDir()
	clashPath := filepath.Join(clashDir, "clash.p12")
	if err := os.Rename(writeBackup(t, clashDir, clashKDK, "pw"), clashPath); err != nil {
		t.Fatal(err)
	}
	clash, err := OpenNKPBackup(clashPath, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if clash.Name() == src.Name() {
		t.Fatalf("both sources are named %q", clash.Name())
	}
	for _, order := range [][]Source{{clash, src}, {src, clash}} {
		if got, op, err := NewResolver(order...).Open(context.Background(), loc); err != nil || !bytes.Equal(got.Bytes, key.Bytes) || op.Source != src.Name() {
			t.Fatalf("%s first: %v %+v", order[0].Name(), err, op)
		}
	}
	_, _, err = NewResolver(clash).Open(context.Background(), loc)
	if !errors.Is(err, keysafe.ErrCorrupt) || strings.Count(err.Error(), clash.Name()) != 1 {
		t.Fatalf("clashing KDK alone: %v", err)
	}
}
