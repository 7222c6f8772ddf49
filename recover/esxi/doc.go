// Package esxi reads the host side of VMware ESXi encryption
// (docs/formats.md §16): the host's secure configuration, encrypted core
// dumps, and the visor tar archives of the boot bank.
//
// # Envelope
//
// A DataTransformEnvelope (the configuration's local.tgz.ve, a core dump
// of a host in Host Encryption Mode) is a header block of typed
// attributes (vmware.keyInfo: the key id; vmware.cipherName:
// AES-256-GCM; vmware.keyHash: SHA-256(cipherName || key); vmware.iv),
// the AES-256-GCM ciphertext, and a footer block holding the tag. The
// additional data is the header as stored plus a context string
// ("ESXConfiguration" for the configuration). Parse reads and checks the
// structure without a key; Envelope.CheckKey compares a key with the key
// hash (keysafe.ErrWrongKey, before anything is decrypted);
// Envelope.Decrypt streams the payload in 1 MiB chunks and checks the tag
// at the end, under any of several candidate contexts in one pass; Verify
// checks the tag without decrypting. Writer is the inverse, for fixtures.
//
// crypto/cipher's GCM opens whole messages only; gcm.go runs AES-CTR
// from crypto/cipher with GCM's counter layout and the GHASH of
// crypto/cipher (through Seal with the ciphertext as additional data,
// combined by the field arithmetic of GHASH), proven equal to
// crypto/cipher's GCM on random messages. Bytes written by Decrypt are
// unauthenticated until it returns nil: callers write to a temporary file
// and publish it only then.
//
// # Key store
//
// encryption.info (VMX-like lines): mode NONE derives the key from
// ConfigEncData (PBKDF2-HMAC-SHA256 of data1 and a fixed sentence, salt
// data2, 100000 rounds): obfuscation, not encryption. Any other mode is
// sealed to the host's TPM: KeyStore.Key returns a *SealedError
// (ErrTPMSealed and keysafe.ErrKeyNotFound).
//
// # Host configuration
//
// FindConfig takes a configBundle-*.tgz, a state.tgz, a boot-bank folder,
// a local.tgz.ve (key store beside it or named) or a plain pre-7.0 U2
// local.tgz, and finds the envelope and key store inside. Walk and
// Inspect read the configuration's files without writing anything: the
// tag is verified before any plaintext is parsed and again after the
// decrypting pass. WriteLocalTgz writes local.tgz.
//
// # Tar archives
//
// WalkTar reads a tar stream: a visor tar (ESXi's vmtar, whose member
// data lies at absolute offsets after all the headers) with its own
// header parser, any other tar with archive/tar. Decompress handles gzip
// (standard library) and refuses xz, bzip2 and zstd as unsupported.
// Extract/Extractor extract safely: names checked (no absolute path, no
// "..", no links out, never through a link), writes through an os.Root
// into a staging folder committed only when the whole archive is done,
// devices skipped, sizes capped by Limits.
//
// # Detection
//
// Detect recognises these files for a scan (envelope, key store, visor
// tar, state archive, config bundle, plain configuration) and says
// whether the configuration is exposed: plain, or encrypted under a
// mode NONE key store that travels with it.
//
// # Errors
//
// Structure problems are *FormatError (file, offset, field) wrapping
// keysafe.ErrCorrupt or keysafe.ErrUnsupported; a refused archive member
// is an *UnsafeMemberError (ErrUnsafeMember and keysafe.ErrCorrupt, or
// keysafe.ErrUnsupported for a limit). The package never prints or
// exits.
package esxi
