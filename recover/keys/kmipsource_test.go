package keys

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/recover/keys/kmip"
	"github.com/vmcrypt/vmcrypt/recover/keys/kmip/kmiptest"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

func TestMain(m *testing.M) { kmiptest.Main(m) }

// stubKMS plays a *kmip.Client: keys by id, a KeyError for others, or a
// connection error while down.
type stubKMS struct {
	keys  map[string][]byte
	down  atomic.Bool
	gets  atomic.Int32
	delay time.Duration
}

func (s *stubKMS) Servers() []string { return []string{"kms-a:5696", "kms-b:5696"} }
func (s *stubKMS) Close() error      { return nil }
func (s *stubKMS) Get(ctx context.Context, uid string) (*kmip.Key, error) {
	s.gets.Add(1)
	time.Sleep(s.delay)
	if s.down.Load() {
		return nil, &kmip.ConnError{Server: "kms-a:5696", Err: errors.New("connection refused")}
	}
	k, ok := s.keys[uid]
	if !ok {
		return nil, &kmip.KeyError{Server: "kms-a:5696", KeyID: uid, Reason: kmip.ReasonItemNotFound}
	}
	return &kmip.Key{ID: uid, Material: append([]byte(nil), k...), Server: "kms-a:5696"}, nil
}

func TestKMIPSourceCache(t *testing.T) {
	kms := &stubKMS{keys: map[string][]byte{"44": bytes.Repeat([]byte{4}, 32), "45": bytes.Repeat([]byte{5}, 32)},
		delay: 20 * time.Millisecond}
	src := newKMIPSource(kms, "")
	ctx := context.Background()
	// Many concurrent asks for two keys and a missing one: one Get each.
	var wg sync.WaitGroup
	for i := 0; i < 30; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			id := []string{"44", "45", "46"}[i%3]
			k, err := src.KEK(ctx, "KMS", id)
			switch id {
			case "46":
				var ke *kmip.KeyError
				if !errors.Is(err, keysafe.ErrKeyNotFound) || !errors.As(err, &ke) || ke.Provider != "KMS" {
					t.Errorf("missing key: %v", err)
				}
			default:
				if err != nil || !bytes.Equal(k, kms.keys[id]) {
					t.Errorf("key %s: %v", id, err)
				}
			}
		}(i)
	}
	wg.Wait()
	if n := kms.gets.Load(); n != 3 || src.Gets() != 3 {
		t.Fatalf("%d Gets for 3 distinct key ids", n)
	}
	// The answer names each caller's provider (a renamed provider).
	_, err := src.KEK(ctx, "Renamed", "46")
	var kn *keysafe.KeyNotFoundError
	if !errors.As(err, &kn) || kn.Provider != "Renamed" || kn.KeyID != "46" || kn.Hint == "" {
		t.Fatalf("kept answer for another provider: %v", err)
	}
	// A copy each time: the caller may zero it.
	k, _ := src.KEK(ctx, "KMS", "44")
	clear(k)
	if k2, _ := src.KEK(ctx, "KMS", "44"); !bytes.Equal(k2, kms.keys["44"]) {
		t.Fatal("zeroing a returned key changed the kept one")
	}
	if kms.gets.Load() != 3 {
		t.Fatal("a kept key was asked again")
	}
	// Close zeroes the kept keys.
	kept := src.cache["44"].key
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kept, make([]byte, 32)) {
		t.Fatal("Close left a key in memory")
	}
	if _, err := src.KEK(ctx, "KMS", "44"); !errors.Is(err, kmip.ErrClosed) {
		t.Fatalf("KEK after Close: %v", err)
	}
}

// TestKMIPSourceNotKept: a connection failure is not kept: the next call
// asks again, and it stops the Resolver (not a missing key).
func TestKMIPSourceNotKept(t *testing.T) {
	kms := &stubKMS{keys: map[string][]byte{"44": bytes.Repeat([]byte{4}, 32)}}
	kms.down.Store(true)
	src := newKMIPSource(kms, "")
	_, err := src.KEK(context.Background(), "KMS", "44")
	var ce *kmip.ConnError
	if !errors.As(err, &ce) || errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("server down: %v", err)
	}
	kms.down.Store(false)
	if k, err := src.KEK(context.Background(), "KMS", "44"); err != nil || len(k) != 32 {
		t.Fatalf("server back: %v", err)
	}
	if kms.gets.Load() != 2 {
		t.Fatalf("%d Gets", kms.gets.Load())
	}
}

// TestKMIPSourceFilters: another provider, and NKP key ids, are not asked.
func TestKMIPSourceFilters(t *testing.T) {
	kms := &stubKMS{keys: map[string][]byte{"44": bytes.Repeat([]byte{4}, 32)}}
	src := newKMIPSource(kms, "KMS")
	var kn *keysafe.KeyNotFoundError
	if _, err := src.KEK(context.Background(), "Other", "44"); !errors.As(err, &kn) || kn.Provider != "Other" || kn.Hint == "" {
		t.Fatalf("another provider: %v", err)
	}
	if _, err := src.KEK(context.Background(), "KMS", "44"); err != nil {
		t.Fatal(err)
	}
	var id nkp.KeyID
	nkpID := id.String()
	if _, err := nkp.ParseKeyIDString(nkpID); err != nil {
		t.Fatalf("test NKP key id: %v", err)
	}
	any := newKMIPSource(kms, "")
	if _, err := any.KEK(context.Background(), "NKP", nkpID); !errors.As(err, &kn) || kn.Hint != "" {
		t.Fatalf("NKP key id: %v", err)
	}
	if kms.gets.Load() != 1 {
		t.Fatalf("%d Gets, want 1 (only provider KMS, key 44)", kms.gets.Load())
	}
	if src.Provider() != "KMS" || src.Name() == any.Name() {
		t.Fatalf("names %q %q", src.Name(), any.Name())
	}
}

// TestKMIPSourceContext: a caller waiting for another's fetch leaves when
// its own context ends.
func TestKMIPSourceContext(t *testing.T) {
	kms := &stubKMS{keys: map[string][]byte{"44": bytes.Repeat([]byte{4}, 32)}, delay: 500 * time.Millisecond}
	src := newKMIPSource(kms, "")
	go src.KEK(context.Background(), "KMS", "44")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := src.KEK(ctx, "KMS", "44"); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 300*time.Millisecond {
		t.Fatalf("waiting caller: %v after %v", err, time.Since(start))
	}
}

// TestKMIPSourcePyKMIP: against PyKMIP, a VM key locked under a KMS key
// (fqid provider/Unique Identifier) opens through the Resolver exactly as
// with a KEK file; a key id the KMS lacks is key-not-supplied with the
// server's hint; a stopped KMS stops the Resolver.
func TestKMIPSourcePyKMIP(t *testing.T) {
	s := kmiptest.Shared(t)
	uids := s.CreateKeys(t, 2, kmiptest.CreateOptions{})
	keks := s.Keys(t, nil, uids...)
	c, err := kmip.NewClient(kmip.Config{Servers: []string{s.Addr}, Certificate: s.PKI.Client.TLS(), RootCAs: s.PKI.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	src := NewKMIPSource(c, "KMS-Cluster")
	defer src.Close()

	vmKey := randKey(t, keysafe.CipherXTSAES256)
	lock := func(keyID string, kek []byte) *keysafe.Locator {
		p, err := keysafe.LockFQID(vmKey, "KMS-Cluster", keyID, kek, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		l, err := keysafe.Parse(keysafe.NewList(p).String())
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	r := NewResolver(src)
	for i, uid := range uids {
		k, op, err := r.Open(context.Background(), lock(uid, keks[i]))
		if err != nil || !bytes.Equal(k.Bytes, vmKey.Bytes) || op.Source != src.Name() {
			t.Fatalf("key %s: %v %+v", uid, err, op)
		}
	}
	// The KMS's key 0 does not open a pair locked under another KEK with its id: wrong key.
	other := make([]byte, 32)
	rand.Read(other)
	if _, _, err := r.Open(context.Background(), lock(uids[0], other)); !errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("wrong KEK: %v", err)
	}
	var kn *keysafe.KeyNotFoundError
	if _, _, err := r.Open(context.Background(), lock("424242", other)); !errors.As(err, &kn) || kn.KeyID != "424242" || kn.Provider != "KMS-Cluster" || kn.Hint == "" {
		t.Fatalf("missing key: %v", err)
	}
	if src.Gets() != 3 {
		t.Fatalf("%d Gets for 3 distinct key ids", src.Gets())
	}

	// A client pointing at nothing: the Resolver stops with a connection error.
	c2, err := kmip.NewClient(kmip.Config{Servers: []string{"127.0.0.1:1"}, Certificate: s.PKI.Client.TLS(), RootCAs: s.PKI.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	dead := NewKMIPSource(c2, "")
	defer dead.Close()
	_, _, err = NewResolver(dead).Open(context.Background(), lock(uids[0], keks[0]))
	var ce *kmip.ConnError
	if !errors.As(err, &ce) || errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("unreachable KMS: %v", err)
	}
}
