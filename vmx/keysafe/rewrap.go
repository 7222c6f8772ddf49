package keysafe

import (
	"bytes"
	"errors"
	"fmt"
	"io"
)

// ErrNotPhrase means a locator holds no passphrase pair (a VM or disk
// locked by a key provider only): there is no passphrase to change. It
// wraps ErrUnsupported.
var ErrNotPhrase = fmt.Errorf("%w: no passphrase pair (not a passphrase VM)", ErrUnsupported)

// RelockOptions tune RelockPhrases.
type RelockOptions struct {
	// Rounds is the PBKDF2 work factor of the new pairs; 0 keeps each
	// pair's own.
	Rounds int
}

// Relocked is what RelockPhrases made.
type Relocked struct {
	// Locator is the new locator; the input is not changed.
	Locator *Locator
	// Key is the key the relocked pairs wrap (the same before and after).
	Key *Key
	// Relocked counts the phrase pairs the old passphrase opened, now
	// locked under the new one.
	Relocked int
	// Kept counts the pairs left as they were: key-provider pairs,
	// phrase pairs of another passphrase, other lockers.
	Kept int
}

// RelockPhrases locks the key of every phrase pair of l that oldPass opens
// under newPass instead (docs/formats.md §4): the same key and KEK cipher, a
// fresh unique id, salt and IV (LockPhrase), the pair's own PBKDF2 rounds
// unless opt.Rounds is set, MAC HMAC-SHA-1. Every other pair is kept. Each
// new pair is proven to open (with the KEK newPass derives) to the same key
// before it is returned.
//
// Errors: ErrNotPhrase when l has no phrase pair; ErrWrongKey when oldPass
// opens none; ErrCorrupt when two pairs that oldPass opens wrap different
// keys or a pair is damaged; ErrUnsupported for work factors above the caps
// (MaxRounds per pair, MaxTotalRounds for the whole change).
func RelockPhrases(l *Locator, oldPass, newPass []byte, opt RelockOptions, rand io.Reader) (*Relocked, error) {
	if l == nil {
		return nil, fmt.Errorf("no key locator: %w", ErrCorrupt)
	}
	if opt.Rounds < 0 || opt.Rounds > MaxRounds {
		return nil, fmt.Errorf("PBKDF2 rounds %d outside 1..%d: %w", opt.Rounds, MaxRounds, ErrUnsupported)
	}
	pairs := l.Pairs()
	var phrases []*Pair
	var total int64
	for i, p := range pairs {
		if p.Locker == nil {
			return nil, fmt.Errorf("pair %d has no locker: %w", i+1, ErrCorrupt)
		}
		if p.Locker.Type != TypePhrase {
			continue
		}
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("pair %d: %w", i+1, err)
		}
		pp, _ := ParsePhraseParams(p.Locker.KeyGenData)
		newRounds := pp.Rounds
		if opt.Rounds != 0 {
			newRounds = opt.Rounds
		}
		// Opening with the old passphrase, locking the new pair.
		total += int64(pp.Rounds) + int64(newRounds)
		phrases = append(phrases, p)
	}
	if len(phrases) == 0 {
		return nil, fmt.Errorf("locked by %s: %w", describePairs(pairs), ErrNotPhrase)
	}
	if total > MaxTotalRounds {
		return nil, fmt.Errorf("changing the passphrase of %d pairs costs %d PBKDF2 rounds, above the cap of %d: %w", len(phrases), total, MaxTotalRounds, ErrUnsupported)
	}
	out := &Relocked{}
	replace := map[*Pair]*Pair{}
	for i, p := range phrases {
		k, err := UnlockPhrase(p, oldPass)
		if err != nil {
			if errors.Is(err, ErrWrongKey) {
				continue
			}
			return nil, fmt.Errorf("passphrase pair %d: %w", i+1, err)
		}
		if out.Key == nil {
			out.Key = k
		} else if k.Cipher != out.Key.Cipher || !bytes.Equal(k.Bytes, out.Key.Bytes) {
			return nil, fmt.Errorf("passphrase pairs 1 and %d of one locator wrap different keys: %w", i+1, ErrCorrupt)
		}
		pp, _ := ParsePhraseParams(p.Locker.KeyGenData)
		rounds := pp.Rounds
		if opt.Rounds != 0 {
			rounds = opt.Rounds
		}
		np, kek, err := lockPhrase(k, newPass, pp.Cipher, rounds, rand)
		if err != nil {
			return nil, err
		}
		// Proven with the KEK just derived (a second PBKDF2 run of the
		// same function would prove nothing more).
		back, err := UnlockPhraseKEK(np, kek)
		if err != nil || back.Cipher != k.Cipher || !bytes.Equal(back.Bytes, k.Bytes) {
			return nil, fmt.Errorf("internal check: the relocked pair does not open with the new passphrase (%v)", err)
		}
		replace[p] = np
	}
	if len(replace) == 0 {
		return nil, fmt.Errorf("the passphrase opens none of the %d passphrase pair(s): %w", len(phrases), ErrWrongKey)
	}
	out.Locator = cloneReplacing(l, replace)
	out.Relocked = len(replace)
	out.Kept = len(pairs) - len(replace)
	return out, nil
}

// describePairs names the lockers of pairs for an error: "fqid KMS/1",
// "no pair".
func describePairs(pairs []*Pair) string {
	if len(pairs) == 0 {
		return "no pair"
	}
	s := ""
	for i, p := range pairs {
		if i > 0 {
			s += ", "
		}
		s += p.Locker.Describe()
	}
	return s
}

// cloneReplacing deep-copies l, putting replace[p] in place of each pair p
// it names.
func cloneReplacing(l *Locator, replace map[*Pair]*Pair) *Locator {
	c := *l
	switch l.Type {
	case TypeList:
		c.List = make([]*Locator, len(l.List))
		for i, e := range l.List {
			c.List[i] = cloneReplacing(e, replace)
		}
	case TypePair:
		if l.Pair != nil {
			if np, ok := replace[l.Pair]; ok {
				c.Pair = np
				break
			}
			p := *l.Pair
			p.Locked = append([]byte(nil), l.Pair.Locked...)
			if p.Locker != nil {
				p.Locker = cloneReplacing(p.Locker, replace)
			}
			c.Pair = &p
		}
	}
	return &c
}
