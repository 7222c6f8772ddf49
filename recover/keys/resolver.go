package keys

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Opened says which source opened which locker of a key safe.
type Opened struct {
	Source string // Source.Name() of the source that opened it
	Locker string // "phrase" or "fqid <provider>/<keyId>"
	Pair   int    // index of the pair in the locator's Pairs()
}

// Resolver tries the supplied key sources, in turn, for every pair of a
// locator. It caches PBKDF2 results per (passphrase, salt, rounds, key
// length), so opening a VMX and many disks that share a passphrase costs
// one derivation per distinct salt. A Resolver is safe for concurrent use.
type Resolver struct {
	srcs []Source

	mu          sync.Mutex
	cache       map[[32]byte]*derivation
	derivations atomic.Int64 // PBKDF2 runs, for tests and reports
}

type derivation struct {
	once sync.Once
	kek  []byte
	err  error
}

// NewResolver returns a Resolver over the sources, tried in the order given.
func NewResolver(srcs ...Source) *Resolver {
	return &Resolver{srcs: srcs, cache: map[[32]byte]*derivation{}}
}

// Sources returns the resolver's sources.
func (r *Resolver) Sources() []Source { return r.srcs }

// phraseKEK derives (once) the PBKDF2 output for a passphrase and phrase
// parameters.
func (r *Resolver) phraseKEK(pp *keysafe.PhraseParams, pass []byte) ([]byte, error) {
	h := sha256.New()
	var n [8]byte
	for _, part := range [][]byte{pass, pp.Salt, []byte(pp.Pass2Key), []byte(pp.Cipher)} {
		binary.LittleEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	binary.LittleEndian.PutUint64(n[:], uint64(pp.Rounds))
	h.Write(n[:])
	var id [32]byte
	h.Sum(id[:0])

	r.mu.Lock()
	d := r.cache[id]
	if d == nil {
		d = &derivation{}
		r.cache[id] = d
	}
	r.mu.Unlock()
	d.once.Do(func() {
		r.derivations.Add(1)
		d.kek, d.err = keysafe.DerivePhraseKEK(pp, pass)
	})
	return d.kek, d.err
}

// passphrases counts the sources that hold a passphrase.
func (r *Resolver) passphrases() int {
	n := 0
	for _, s := range r.srcs {
		if _, ok := s.(PassphraseSource); ok {
			n++
		}
	}
	return n
}

// Open unwraps the key a locator holds (a pair, or a list of pairs: several
// ways to open the same key). For each pair it tries every source that can
// open it: a phrase locker with every passphrase source, an fqid locker
// with every source's KEK(provider, keyID). A wrong key, a source that
// lacks the key, or one whose key does not unwrap the key id (ErrCorrupt)
// moves on to the next; corrupt or unsupported input stops at once (every
// pair is validated before any key work).
//
// When nothing opens: the first ErrCorrupt of a source, else ErrWrongKey if
// some source held a candidate that failed the MAC; otherwise a *keysafe.KeyNotFoundError naming the first
// locker's provider and key id (provider "passphrase" for a phrase locker).
func (r *Resolver) Open(ctx context.Context, l *keysafe.Locator) (*keysafe.Key, Opened, error) {
	if l == nil {
		return nil, Opened{}, fmt.Errorf("no key locator: %w", keysafe.ErrCorrupt)
	}
	pairs := l.Pairs()
	if len(pairs) == 0 {
		return nil, Opened{}, fmt.Errorf("key safe holds no locked key (%s locator): %w", l.Type, keysafe.ErrUnsupported)
	}
	usable := 0
	var rounds int64 // PBKDF2 rounds of the distinct phrase pairs
	seen := map[string]bool{}
	for i, p := range pairs {
		if p.Locker == nil {
			return nil, Opened{}, fmt.Errorf("key safe pair %d has no locker: %w", i+1, keysafe.ErrCorrupt)
		}
		if t := p.Locker.Type; t != keysafe.TypePhrase && t != keysafe.TypeFQID {
			continue // ldap, script, role...: not openable offline; others may be
		}
		if err := p.Validate(); err != nil {
			return nil, Opened{}, fmt.Errorf("key safe pair %d: %w", i+1, err)
		}
		if p.Locker.Type == keysafe.TypePhrase && !seen[p.Locker.KeyGenData] {
			seen[p.Locker.KeyGenData] = true
			pp, err := keysafe.ParsePhraseParams(p.Locker.KeyGenData)
			if err != nil {
				return nil, Opened{}, fmt.Errorf("key safe pair %d: %w", i+1, err)
			}
			rounds += int64(pp.Rounds)
		}
		usable++
	}
	if n := int64(r.passphrases()); rounds*n > keysafe.MaxTotalRounds {
		return nil, Opened{}, fmt.Errorf("key safe asks for %d PBKDF2 rounds over %d phrase pairs and %d passphrase(s), above the cap of %d: %w",
			rounds*n, len(seen), n, keysafe.MaxTotalRounds, keysafe.ErrUnsupported)
	}
	if usable == 0 {
		return nil, Opened{}, fmt.Errorf("key safe holds no passphrase or key-provider pair (first locker: %s): %w", pairs[0].Locker.Type, keysafe.ErrUnsupported)
	}
	var wrong, corrupt error
	notFound := notFoundFor(pairs)
	sourceHint := false
	// A source that says more than "not found" (a KMS key that exists but
	// is not active, a permission refused) is kept, so that the answer
	// names it rather than a generic missing key.
	var detailed error
	for i, p := range pairs {
		switch p.Locker.Type {
		case keysafe.TypePhrase:
			pp, err := keysafe.ParsePhraseParams(p.Locker.KeyGenData)
			if err != nil {
				return nil, Opened{}, err
			}
			for _, s := range r.srcs {
				ps, ok := s.(PassphraseSource)
				if !ok {
					continue
				}
				if err := ctx.Err(); err != nil {
					return nil, Opened{}, err
				}
				kek, err := r.phraseKEK(pp, ps.Passphrase())
				if err != nil {
					return nil, Opened{}, fmt.Errorf("%s: %w", s.Name(), err)
				}
				k, err := keysafe.UnlockPhraseKEK(p, kek)
				if err == nil {
					return k, Opened{Source: s.Name(), Locker: p.Locker.Describe(), Pair: i}, nil
				}
				if errors.Is(err, keysafe.ErrWrongKey) {
					wrong = fmt.Errorf("the %s does not open the key safe (%w)", s.Name(), err)
					continue
				}
				return nil, Opened{}, err
			}
		case keysafe.TypeFQID:
			prov, kid := p.Locker.KeyServerID, p.Locker.KeyID
			for _, src := range r.srcs {
				s, ok := src.(KEKSource)
				if !ok {
					continue
				}
				kek, err := s.KEK(ctx, prov, kid)
				if err != nil {
					var kn *keysafe.KeyNotFoundError
					// The first hint a source gives (it holds the key id
					// for another provider; the VM needs another KDK than
					// the backup's) says more than the generic one.
					if errors.As(err, &kn) && kn.Hint != "" && notFound.Provider == prov && notFound.KeyID == kid && !sourceHint {
						notFound.Hint, sourceHint = kn.Hint, true
					}
					switch {
					case errors.Is(err, keysafe.ErrKeyNotFound):
						if _, bare := err.(*keysafe.KeyNotFoundError); !bare && detailed == nil {
							detailed = fmt.Errorf("%s: %w", s.Name(), err)
						}
						continue
					case errors.Is(err, keysafe.ErrWrongKey):
						wrong = fmt.Errorf("%s: %w", s.Name(), err)
						continue
					case errors.Is(err, keysafe.ErrCorrupt):
						// This source holds the key id but it does not
						// unwrap (an altered key id, or another key under
						// the same id): another source may still open it.
						if corrupt == nil {
							corrupt = fmt.Errorf("%s: %w", s.Name(), err)
						}
						continue
					}
					return nil, Opened{}, fmt.Errorf("%s: %w", s.Name(), err)
				}
				k, err := keysafe.UnlockFQID(p, kek)
				if err == nil {
					return k, Opened{Source: s.Name(), Locker: p.Locker.Describe(), Pair: i}, nil
				}
				if errors.Is(err, keysafe.ErrWrongKey) {
					// The key id matched exactly: the key is likely the
					// right one and the real layout may differ from the
					// model (docs/formats.md §7).
					wrong = fmt.Errorf("the key %s/%s from %s does not open the key safe under vmcrypt's model of key-provider pairs; the key id matched, so the key may be right and the layout differ from the model (%w)", prov, kid, s.Name(), err)
					continue
				}
				return nil, Opened{}, err
			}
		}
	}
	if corrupt != nil {
		return nil, Opened{}, corrupt
	}
	if wrong != nil {
		return nil, Opened{}, wrong
	}
	if detailed != nil {
		return nil, Opened{}, detailed
	}
	return nil, Opened{}, notFound
}

// notFoundFor names the key that is missing: the first fqid locker, or
// else the first phrase locker (provider "passphrase").
func notFoundFor(pairs []*keysafe.Pair) *keysafe.KeyNotFoundError {
	for _, p := range pairs {
		if p.Locker.Type == keysafe.TypeFQID {
			e := &keysafe.KeyNotFoundError{Provider: p.Locker.KeyServerID, KeyID: p.Locker.KeyID,
				Hint: "a KEK file or KMS holding this key id opens it"}
			if kid, err := nkp.ParseKeyIDString(p.Locker.KeyID); err == nil {
				e.Hint = "a Native Key Provider key id: the NKP backup of KDK " + kid.KDKID.String() + " opens it"
			}
			return e
		}
	}
	for _, p := range pairs {
		if p.Locker.Type == keysafe.TypePhrase {
			return &keysafe.KeyNotFoundError{Provider: "passphrase", KeyID: p.Locker.UniqueID,
				Hint: "the VM is locked by a passphrase"}
		}
	}
	return &keysafe.KeyNotFoundError{Provider: "unknown", KeyID: "unknown"}
}
