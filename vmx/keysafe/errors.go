package keysafe

import (
	"errors"
	"fmt"
)

// The error vocabulary of everything that handles keys (key safes, NKP
// backups, key sources, encrypted data). Callers branch with errors.Is; the
// CLI maps each to one exit code.
var (
	// ErrWrongKey: a key, passphrase or password was supplied but does not
	// open the data (a MAC or tag mismatch on a key wrapper).
	ErrWrongKey = errors.New("wrong key or passphrase")
	// ErrKeyNotFound: no supplied source holds the key a locator names.
	ErrKeyNotFound = errors.New("key not supplied")
	// ErrCorrupt: the input is damaged (bad encoding, impossible length,
	// a MAC failure on data after its key was proven right).
	ErrCorrupt = errors.New("corrupt input")
	// ErrUnsupported: well-formed input that vmcrypt does not handle
	// (unknown cipher, KDF, version), or a work factor above a cap.
	ErrUnsupported = errors.New("unsupported input")
)

// KeyNotFoundError names the key that no supplied source holds.
// errors.Is(err, ErrKeyNotFound) is true for it.
type KeyNotFoundError struct {
	Provider string // key provider (KMS cluster) name, or "passphrase"
	KeyID    string // key id as the locator names it
	Hint     string // optional: what would open it (e.g. "NKP backup of KDK ...")
}

func (e *KeyNotFoundError) Error() string {
	s := fmt.Sprintf("key not supplied: provider %q, key id %q", e.Provider, e.KeyID)
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

// Is makes errors.Is(err, ErrKeyNotFound) true.
func (e *KeyNotFoundError) Is(target error) bool { return target == ErrKeyNotFound }
