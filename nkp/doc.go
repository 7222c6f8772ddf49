// Package nkp reads and writes vSphere Native Key Provider (NKP) backups and
// the self-describing NKP key ids that name key-encryption keys (KEKs).
//
// # Backups (docs/formats.md §10, MODEL)
//
// An NKP backup is a PKCS#12 keystore (.p12) holding one Key Derivation Key
// (KDK, 32 bytes) as a secret key, in the layout Java's
// `keytool -genseckey -storetype PKCS12` writes. The model is vmcrypt's:
// VMware has not published the backup format, so every path through this
// package is a "modelled format".
//
// Reading is three steps:
//
//   - [Parse] walks the file's structure without the password: containers,
//     bags, attributes (friendlyName = KDK id), algorithms and iteration
//     counts. It refuses oversized input, too many bags, too deep nesting
//     and iteration counts above [MaxIterations] before any KDF work.
//   - [Backup.Open] checks the password against the MAC (the PKCS#12 KDF of
//     RFC 7292 appendix B, password as BMPString with a trailing 00 00) and
//     decrypts the key entries (PBES2/PBKDF2/AES-CBC, password as UTF-8, or
//     the legacy pbeWithSHAAnd3-KeyTripleDES-CBC).
//   - [KDK.Unwrap] opens a KEK from an NKP key id (AES-256-GCM).
//
// Errors wrap the sentinels of vmx/keysafe: a MAC that fails is
// keysafe.ErrWrongKey (wrong password); damaged structure is
// keysafe.ErrCorrupt; unknown algorithms and work factors above the caps are
// keysafe.ErrUnsupported. One case cannot be told apart: a byte changed
// inside the encrypted key entry itself (its salt, IV, iteration count or
// ciphertext) makes both the MAC and the entry fail, exactly as a wrong
// password does, and is reported as keysafe.ErrWrongKey. When the MAC fails
// but the entry decrypts, the password is proven right and the file is
// reported corrupt.
//
// # Key ids (docs/formats.md §10, layout PUBLIC, crypto MODEL)
//
// A 105-byte key id carries the KDK id and the KEK wrapped with
// AES-256-GCM under the KDK; see [KeyID].
//
// # Writing
//
// [Marshal] writes a backup in keytool's modern layout (PBES2 with
// PBKDF2-HMAC-SHA256 and AES-256-CBC, HMAC-SHA256 MAC, friendlyName = KDK id,
// localKeyID "Time <ms>" as Java writes it). [NewKDK] and [KDK.Wrap] make new
// KDKs and key ids, for fixtures and demos.
package nkp
