// Package keys holds the key sources (a passphrase, KEK files, NKP backups,
// a KMIP server) and the Resolver that tries them, in turn, for every
// locked key of a VM.
package keys

import "context"

// Source is one place keys come from. Every source has a name; what it can
// open it says by the optional interfaces it implements: KEKSource (a
// key-provider key by provider and key id) and PassphraseSource (a
// passphrase). The Resolver does the unlocking with vmx/keysafe.
type Source interface {
	// Name says where the keys came from, for reports ("passphrase",
	// "KEK file kek.json", "NKP backup backup.p12"). Never a secret.
	Name() string
}

// KEKSource holds key-encryption keys of key providers.
//
// KEK returns the 32-byte key-encryption key that the named key provider
// and key id refer to. It returns an error wrapping keysafe.ErrKeyNotFound
// when this source does not hold that key (the Resolver then tries the next
// source), keysafe.ErrWrongKey when it holds it but cannot open it, and
// keysafe.ErrCorrupt when the key id does not unwrap under the key this
// source holds for it (an NKP key id whose GCM tag fails under the backup's
// KDK of the same id): the Resolver tries the other sources first, and
// reports this only when none opens. Other errors (ErrUnsupported, I/O, a
// server that cannot be reached, ctx done) stop the Resolver. A source that
// asks a server bounds the call with ctx.
type KEKSource interface {
	Source
	KEK(ctx context.Context, provider, keyID string) ([]byte, error)
}

// PassphraseSource holds a passphrase (UTF-8 bytes, as typed).
type PassphraseSource interface {
	Source
	Passphrase() []byte
}
