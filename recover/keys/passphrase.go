package keys

type passphrase struct{ p []byte }

// NewPassphrase returns a source holding a passphrase (UTF-8 bytes, as typed).
func NewPassphrase(p []byte) PassphraseSource { return &passphrase{p: append([]byte(nil), p...)} }

func (s *passphrase) Name() string       { return "passphrase" }
func (s *passphrase) Passphrase() []byte { return s.p }
