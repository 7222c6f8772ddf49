package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// kekSource is a test source holding KEKs by provider/keyId.
type kekSource struct {
	name  string
	keks  map[string][]byte
	err   error // returned by KEK when set
	calls atomic.Int32
}

func (s *kekSource) Name() string { return s.name }
func (s *kekSource) KEK(_ context.Context, provider, keyID string) ([]byte, error) {
	s.calls.Add(1)
	if s.err != nil {
		return nil, s.err
	}
	if k, ok := s.keks[provider+"/"+keyID]; ok {
		return k, nil
	}
	return nil, &keysafe.KeyNotFoundError{Provider: provider, KeyID: keyID}
}

func randKey(t *testing.T, cipher string) *keysafe.Key {
	b := make([]byte, keysafe.KeyLen(cipher))
	rand.Read(b)
	return &keysafe.Key{Cipher: cipher, Bytes: b}
}

func workstation(t *testing.T) *keysafe.Locator {
	b, err := os.ReadFile("../../vmx/testdata/vectors/workstation-encrypted.vmx")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`encryption\.keySafe = "([^"]*)"`).FindSubmatch(b)
	l, err := keysafe.Parse(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestResolverPhrase(t *testing.T) {
	l := workstation(t)
	r := NewResolver(NewPassphrase([]byte("nope")), NewPassphrase([]byte("password")))
	k, op, err := r.Open(context.Background(), l)
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Bytes) != 32 || op.Locker != "phrase" || op.Source != "passphrase" || op.Pair != 0 {
		t.Fatalf("%+v %+v", k, op)
	}
	if _, _, err := NewResolver(NewPassphrase([]byte("nope"))).Open(context.Background(), l); !errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	var kn *keysafe.KeyNotFoundError
	if _, _, err := NewResolver().Open(context.Background(), l); !errors.As(err, &kn) || kn.Provider != "passphrase" {
		t.Fatalf("no source: %v", err)
	}
}

func TestResolverFQIDAndList(t *testing.T) {
	key := randKey(t, keysafe.CipherXTSAES256)
	kek1, kek2 := make([]byte, 32), make([]byte, 32)
	rand.Read(kek1)
	rand.Read(kek2)
	p1, _ := keysafe.LockFQID(key, "KMS", "id-1", kek1, rand.Reader)
	p2, err := keysafe.LockPhrase(key, []byte("pw"), keysafe.CipherAES256, 1000, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	l, err := keysafe.Parse(keysafe.NewList(p1, p2).String())
	if err != nil {
		t.Fatal(err)
	}
	// The fqid pair opens with the right KEK file.
	src := &kekSource{name: "KEK file a.json", keks: map[string][]byte{"KMS/id-1": kek1}}
	k, op, err := NewResolver(NewPassphrase([]byte("bad")), src).Open(context.Background(), l)
	if err != nil || !bytes.Equal(k.Bytes, key.Bytes) || op.Locker != "fqid KMS/id-1" || op.Source != "KEK file a.json" || op.Pair != 0 {
		t.Fatalf("fqid: %v %+v", err, op)
	}
	// No KEK, right passphrase: the second pair opens.
	k, op, err = NewResolver(&kekSource{name: "empty"}, NewPassphrase([]byte("pw"))).Open(context.Background(), l)
	if err != nil || !bytes.Equal(k.Bytes, key.Bytes) || op.Pair != 1 || op.Locker != "phrase" {
		t.Fatalf("phrase in list: %v %+v", err, op)
	}
	// A wrong KEK under the right name: wrong key (exit 3).
	bad := &kekSource{name: "bad", keks: map[string][]byte{"KMS/id-1": kek2}}
	if _, _, err := NewResolver(bad).Open(context.Background(), l); !errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("wrong KEK: %v", err)
	}
	// Nothing supplied: key not found, naming the fqid provider and key id.
	var kn *keysafe.KeyNotFoundError
	if _, _, err := NewResolver(&kekSource{name: "empty"}).Open(context.Background(), l); !errors.As(err, &kn) || kn.Provider != "KMS" || kn.KeyID != "id-1" {
		t.Fatalf("missing: %v", err)
	}
	// A source whose key does not unwrap the key id (ErrCorrupt) gives way
	// to a source that opens it, and is the answer when none does.
	broken := &kekSource{name: "broken", err: keysafe.ErrCorrupt}
	if _, op, err := NewResolver(broken, src).Open(context.Background(), l); err != nil || op.Source != src.Name() {
		t.Fatalf("corrupt source then right one: %v %+v", err, op)
	}
	if _, _, err := NewResolver(broken, bad).Open(context.Background(), l); !errors.Is(err, keysafe.ErrCorrupt) || !strings.HasPrefix(err.Error(), "broken: ") {
		t.Fatalf("corrupt and wrong sources: %v", err)
	}
	// Unsupported (or I/O) from a source stops at once.
	odd := &kekSource{name: "odd", err: keysafe.ErrUnsupported}
	if _, _, err := NewResolver(odd, src).Open(context.Background(), l); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("unsupported source: %v", err)
	}
	// A source saying wrong key moves on.
	other := &kekSource{name: "other backup", err: keysafe.ErrWrongKey}
	if _, _, err := NewResolver(other, src).Open(context.Background(), l); err != nil {
		t.Fatalf("wrong-key source then right one: %v", err)
	}
	if _, _, err := NewResolver(other).Open(context.Background(), l); !errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("only a wrong-key source: %v", err)
	}
}

func TestResolverCorruptNeverWrongKey(t *testing.T) {
	l := workstation(t)
	l.Pairs()[0].Locked = l.Pairs()[0].Locked[:90]
	if _, _, err := NewResolver(NewPassphrase([]byte("password"))).Open(context.Background(), l); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("truncated blob: %v", err)
	}
	l = workstation(t)
	l.Pairs()[0].Locker.KeyGenData = "pass2key=PBKDF2-HMAC-SHA-1:cipher=AES-256:rounds=999999999:salt=AAAAAAAAAAAAAAAAAAAAAA%3d%3d"
	if _, _, err := NewResolver().Open(context.Background(), l); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("rounds above cap with no source: %v", err)
	}
	if _, _, err := NewResolver().Open(context.Background(), &keysafe.Locator{Type: keysafe.TypeNull}); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("null locator: %v", err)
	}
}

// Opening the same pair many times runs PBKDF2 once.
func TestResolverCache(t *testing.T) {
	key := randKey(t, keysafe.CipherAES256)
	p, _ := keysafe.LockPhrase(key, []byte("pw"), keysafe.CipherAES256, 200000, rand.Reader)
	l := keysafe.NewList(p)
	r := NewResolver(NewPassphrase([]byte("pw")))
	if _, _, err := r.Open(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	if len(r.cache) != 1 {
		t.Fatalf("cache has %d entries", len(r.cache))
	}
	for i := 0; i < 50; i++ {
		if _, _, err := r.Open(context.Background(), l); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.cache) != 1 || r.derivations.Load() != 1 {
		t.Fatalf("cache has %d entries, %d derivations after reopening", len(r.cache), r.derivations.Load())
	}
	// Another salt (another pair) is another derivation.
	p2, _ := keysafe.LockPhrase(key, []byte("pw"), keysafe.CipherAES256, 1000, rand.Reader)
	if _, _, err := r.Open(context.Background(), keysafe.NewList(p2)); err != nil {
		t.Fatal(err)
	}
	if len(r.cache) != 2 {
		t.Fatalf("cache has %d entries, want 2", len(r.cache))
	}
}

func BenchmarkResolverReopen(b *testing.B) {
	key := &keysafe.Key{Cipher: keysafe.CipherAES256, Bytes: make([]byte, 32)}
	p, _ := keysafe.LockPhrase(key, []byte("pw"), keysafe.CipherAES256, 10000, rand.Reader)
	l := keysafe.NewList(p)
	r := NewResolver(NewPassphrase([]byte("pw")))
	for b.Loop() {
		if _, _, err := r.Open(context.Background(), l); err != nil {
			b.Fatal(err)
		}
	}
}

// Many goroutines opening the same key safe (the VMX and its disks in
// parallel) share one PBKDF2 run.
func TestResolverConcurrent(t *testing.T) {
	key := randKey(t, keysafe.CipherXTSAES256)
	p, _ := keysafe.LockPhrase(key, []byte("pw"), keysafe.CipherXTSAES256, 20000, rand.Reader)
	l := keysafe.NewList(p)
	r := NewResolver(NewPassphrase([]byte("pw")))
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		go func() {
			k, _, err := r.Open(context.Background(), l)
			if err == nil && !bytes.Equal(k.Bytes, key.Bytes) {
				err = errors.New("wrong key bytes")
			}
			errs <- err
		}()
	}
	for i := 0; i < 16; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := r.derivations.Load(); n != 1 {
		t.Fatalf("%d PBKDF2 runs, want 1", n)
	}
}

// An unusable locker type (ldap) next to a phrase pair does not stop the
// phrase pair; alone it is unsupported.
func TestResolverSkipsOfflineLockers(t *testing.T) {
	key := randKey(t, keysafe.CipherAES256)
	p, _ := keysafe.LockPhrase(key, []byte("pw"), keysafe.CipherAES256, 1000, rand.Reader)
	ldap := &keysafe.Pair{Locker: &keysafe.Locator{Type: keysafe.TypeLDAP, UniqueID: "u", Server: "s", Domain: "d", Port: 389, Path: "p"}, MAC: keysafe.MACSHA1, Locked: make([]byte, 116)}
	if _, op, err := NewResolver(NewPassphrase([]byte("pw"))).Open(context.Background(), keysafe.NewList(ldap, p)); err != nil || op.Pair != 1 {
		t.Fatalf("%v %+v", err, op)
	}
	if _, _, err := NewResolver(NewPassphrase([]byte("pw"))).Open(context.Background(), keysafe.NewList(ldap)); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("ldap only: %v", err)
	}
}

// A key safe of many phrase pairs, each under MaxRounds with its own salt,
// is refused as unsupported before any derivation; the same pairs without
// a passphrase to try cost nothing and report the missing key.
func TestResolverTotalRoundsCap(t *testing.T) {
	key := randKey(t, keysafe.CipherXTSAES256)
	var pairs []*keysafe.Pair
	for range 5 {
		p, err := keysafe.LockPhrase(key, []byte("pw"), keysafe.CipherXTSAES256, 1, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		kg := regexp.MustCompile(`rounds=1(:|$)`).ReplaceAllString(p.Locker.KeyGenData, "rounds=10000000$1")
		if kg == p.Locker.KeyGenData {
			t.Fatalf("no rounds in %q", kg)
		}
		p.Locker.KeyGenData = kg
		pairs = append(pairs, p)
	}
	r := NewResolver(NewPassphrase([]byte("pw")))
	_, _, err := r.Open(context.Background(), keysafe.NewList(pairs...))
	if !errors.Is(err, keysafe.ErrUnsupported) || r.derivations.Load() != 0 {
		t.Fatalf("5 pairs of 10M rounds: %v after %d derivations", err, r.derivations.Load())
	}
	if _, _, err := NewResolver(&kekSource{name: "k"}).Open(context.Background(), keysafe.NewList(pairs...)); !errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("no passphrase: %v", err)
	}
}
