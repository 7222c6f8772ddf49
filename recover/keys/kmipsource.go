package keys

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/recover/keys/kmip"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// KMIPSource is a key source that asks a KMS cluster over KMIP for the
// key-encryption keys of a Standard Key Provider: the fqid key id is the
// KMIP Unique Identifier (docs/formats.md §14).
//
// It answers for one key provider name, or for any when none is given;
// NKP key ids (which name a KDK, not a KMS key) are never sent. Each
// distinct key id is asked once for the life of the source: the key, or
// the server's answer that it will not give it, is kept in memory (never
// written, never logged) until Close zeroes it. Connection failures are
// not kept: the next call asks again.
//
// KEK errors: a *kmip.KeyError (errors.Is keysafe.ErrKeyNotFound; also
// kmip.ErrPermissionDenied, kmip.ErrKeyNotActive or kmip.ErrKeyNotAES256)
// with the provider filled in and a Hint naming the server; a
// *keysafe.KeyNotFoundError for a provider or key id this source does not
// answer for; a *kmip.ConnError, *kmip.ClusterError or *kmip.ResultError
// when no server answered properly (the Resolver stops on these).
type KMIPSource struct {
	name     string
	provider string
	client   keyGetter

	mu     sync.Mutex
	cache  map[string]*kmipEntry
	closed bool
	gets   atomic.Int64
}

// keyGetter is what KMIPSource needs of a *kmip.Client.
type keyGetter interface {
	Get(ctx context.Context, uid string) (*kmip.Key, error)
	Servers() []string
	Close() error
}

type kmipEntry struct {
	done chan struct{} // closed when key/err are set
	key  []byte
	err  error // a *kmip.KeyError or *keysafe.KeyNotFoundError; other errors are not kept
}

// NewKMIPSource returns a source over the client. provider is the key
// provider name the cluster answers for ("" for any). The source owns the
// client: Close closes it.
func NewKMIPSource(c *kmip.Client, provider string) *KMIPSource {
	return newKMIPSource(c, provider)
}

func newKMIPSource(c keyGetter, provider string) *KMIPSource {
	name := "KMS " + strings.Join(c.Servers(), ", ")
	if provider != "" {
		name += fmt.Sprintf(" (key provider %q)", provider)
	}
	return &KMIPSource{name: name, provider: provider, client: c, cache: map[string]*kmipEntry{}}
}

// Name says where the keys come from: the servers, and the provider when
// one is set.
func (s *KMIPSource) Name() string { return s.name }

// Provider returns the key provider name the source answers for ("" for
// any).
func (s *KMIPSource) Provider() string { return s.provider }

// Gets returns the number of keys asked of the servers (one per distinct
// key id, plus retries after connection failures).
func (s *KMIPSource) Gets() int64 { return s.gets.Load() }

// KEK returns (a copy of) the AES-256 key the cluster holds under keyID.
func (s *KMIPSource) KEK(ctx context.Context, provider, keyID string) ([]byte, error) {
	if s.provider != "" && provider != s.provider {
		return nil, &keysafe.KeyNotFoundError{Provider: provider, KeyID: keyID,
			Hint: fmt.Sprintf("%s answers for key provider %q, not %q", s.name, s.provider, provider)}
	}
	if _, err := nkp.ParseKeyIDString(keyID); err == nil {
		// A Native Key Provider key id: no KMS holds it. No hint: the
		// Resolver's own (the NKP backup of its KDK) says more.
		return nil, &keysafe.KeyNotFoundError{Provider: provider, KeyID: keyID}
	}
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, kmip.ErrClosed
		}
		e := s.cache[keyID]
		if e == nil {
			e = &kmipEntry{done: make(chan struct{})}
			s.cache[keyID] = e
			s.mu.Unlock()
			return s.fetch(ctx, e, provider, keyID)
		}
		s.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, kmip.ErrClosed
		}
		if s.cache[keyID] == e {
			k, err := answer(e, provider)
			s.mu.Unlock()
			return k, err
		}
		s.mu.Unlock()
		// The fetch failed without an answer (not kept): ask again, unless
		// this caller's context is done too.
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// fetch asks the cluster for keyID and settles e.
func (s *KMIPSource) fetch(ctx context.Context, e *kmipEntry, provider, keyID string) ([]byte, error) {
	s.gets.Add(1)
	k, err := s.client.Get(ctx, keyID)
	var ke *kmip.KeyError
	var kn *keysafe.KeyNotFoundError
	s.mu.Lock()
	defer s.mu.Unlock()
	defer close(e.done)
	switch {
	case err == nil:
		e.key = k.Material // the entry owns it; Close zeroes it
	case errors.As(err, &ke):
		e.err = ke
	case errors.As(err, &kn): // an id no server can hold
		e.err = kn
	default:
		delete(s.cache, keyID) // not an answer: not kept
		return nil, err
	}
	if s.closed { // closed while asking
		clear(e.key)
		return nil, kmip.ErrClosed
	}
	return answer(e, provider)
}

// answer returns a kept entry to one caller (s.mu held): a copy of the
// key, or a copy of the server's answer naming the caller's provider.
func answer(e *kmipEntry, provider string) ([]byte, error) {
	switch err := e.err.(type) {
	case *kmip.KeyError:
		c := *err
		c.Provider = provider
		return nil, &c
	case *keysafe.KeyNotFoundError:
		c := *err
		c.Provider = provider
		return nil, &c
	}
	return append([]byte(nil), e.key...), nil
}

// Close zeroes the keys kept and closes the client.
func (s *KMIPSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, e := range s.cache {
		clear(e.key) // nil while a fetch is in flight: fetch clears it when it lands
	}
	s.cache = nil
	return s.client.Close()
}
