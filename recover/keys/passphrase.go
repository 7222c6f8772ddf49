package keys

import "github.com/vmcrypt/vmcrypt/vmx/keysafe"

type passphrase struct{ p []byte }

// NewPassphrase returns a source holding a passphrase (UTF-8 bytes, as typed).
func NewPassphrase(p []byte) Source { return &passphrase{p: append([]byte(nil), p...)} }

func (s *passphrase) Name() string               { return "passphrase" }
func (s *passphrase) Passphrase() ([]byte, bool) { return s.p, true }
func (s *passphrase) KEK(provider, keyID string) ([]byte, error) {
	return nil, &keysafe.KeyNotFoundError{Provider: provider, KeyID: keyID}
}
