// Package keys holds the key sources (a passphrase, KEK files, NKP backups)
// and the Resolver that tries them, in turn, for every locked key of a VM.
package keys

// Source is one place keys come from. A source answers two questions; the
// Resolver does the unlocking with vmx/keysafe.
//
// KEK returns the 32-byte key-encryption key that the named key provider
// and key id refer to. It returns an error wrapping keysafe.ErrKeyNotFound
// when this source does not hold that key (the Resolver then tries the next
// source), keysafe.ErrWrongKey when it holds it but cannot open it, and
// keysafe.ErrCorrupt when the key id does not unwrap under the key this
// source holds for it (an NKP key id whose GCM tag fails under the backup's
// KDK of the same id): the Resolver tries the other sources first, and
// reports this only when none opens. Other errors (ErrUnsupported, I/O)
// stop the Resolver.
type Source interface {
	// Name says where the keys came from, for reports ("passphrase",
	// "KEK file kek.json", "NKP backup backup.p12"). Never a secret.
	Name() string
	// Passphrase returns the passphrase bytes (UTF-8) and true if this
	// source is a passphrase.
	Passphrase() ([]byte, bool)
	// KEK looks up a key-provider key.
	KEK(provider, keyID string) ([]byte, error)
}
