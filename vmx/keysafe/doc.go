// Package keysafe reads and writes VMware key safes: the key-locator
// grammar "vmware:key/..." (docs/formats.md §2), crypto dicts (§3), and the
// locking and unlocking of pairs by a passphrase (§4) or a key provider's
// KEK (§7, a MODEL format).
//
// # Parsing
//
// Parse turns a key safe into a *Locator tree; String writes it back in
// VMware's canonical form, byte for byte for text VMware wrote. ParseDict
// and Dict.String handle the key=value dicts inside (phrase parameters,
// wrapped keys).
//
// # Unlocking
//
// Pair.Validate checks a pair without a key (lengths, MAC name, PBKDF2 work
// factor capped at MaxRounds). UnlockPhrase and UnlockFQID open a pair and
// return the *Key it wraps; LockPhrase and LockFQID are their inverses.
//
// # Errors
//
// Every failure wraps one of ErrWrongKey (a MAC or padding mismatch: the
// key is wrong), ErrKeyNotFound, ErrCorrupt (bad encoding, impossible
// length) or ErrUnsupported (unknown cipher, KDF or MAC, work factor above
// the cap). A corrupt key safe is never reported as a wrong key.
package keysafe
