package keysafe

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"io"
)

// Bounds on locked data.
const (
	// MaxLockedLen caps the locked data of a pair (VMware's are 116, 164
	// and 272-288 bytes).
	MaxLockedLen = 4096
	// FQIDKEKLen is the length of a key provider's KEK (AES-256).
	FQIDKEKLen = 32
	// DefaultRounds is the PBKDF2 work factor Workstation uses.
	DefaultRounds = 10000
	// minKeyDictCT is the smallest ciphertext that can hold a key dict:
	// "type=key:cipher=AES-256:key=" plus 44 base64 characters, padded.
	minKeyDictCT = 80
)

// macSpec returns the hash and output length of a MAC name.
func macSpec(name string) (func() hash.Hash, int, error) {
	switch name {
	case MACSHA1:
		return sha1.New, sha1.Size, nil
	case MACSHA256:
		return sha256.New, sha256.Size, nil
	case MACSHA1128:
		return sha1.New, 16, nil
	}
	return nil, 0, fmt.Errorf("MAC %q: %w", name, ErrUnsupported)
}

// Validate checks what can be checked without a key: the locker type, the
// MAC name, the phrase parameters (including the rounds cap) and that the
// locked data has a possible length (IV + at least one block + MAC, in
// whole blocks). It returns ErrUnsupported or ErrCorrupt.
func (p *Pair) Validate() error {
	if p == nil || p.Locker == nil {
		return fmt.Errorf("pair without a locker: %w", ErrCorrupt)
	}
	switch p.Locker.Type {
	case TypePhrase:
		if _, err := ParsePhraseParams(p.Locker.KeyGenData); err != nil {
			return err
		}
	case TypeFQID:
	default:
		return fmt.Errorf("pair locked by a %q locator: %w", p.Locker.Type, ErrUnsupported)
	}
	_, macLen, err := macSpec(p.MAC)
	if err != nil {
		return err
	}
	n := len(p.Locked)
	if n > MaxLockedLen || n < aes.BlockSize+minKeyDictCT+macLen || (n-macLen)%aes.BlockSize != 0 {
		return fmt.Errorf("locked data of %d bytes is impossible for %s (IV, a key dict in whole AES blocks, a %d-byte MAC): %w", n, p.MAC, macLen, ErrCorrupt)
	}
	return nil
}

// DerivePhraseKEK runs PBKDF2-HMAC-SHA1 over the passphrase (UTF-8 bytes
// as typed) with the parameters' salt and rounds; the KEK is 32 bytes for
// AES-256 and 64 for XTS-AES-256. It refuses rounds above MaxRounds.
func DerivePhraseKEK(pp *PhraseParams, passphrase []byte) ([]byte, error) {
	n := KeyLen(pp.Cipher)
	if n == 0 {
		return nil, fmt.Errorf("passphrase cipher %q: %w", pp.Cipher, ErrUnsupported)
	}
	if pp.Rounds < 1 || pp.Rounds > MaxRounds {
		return nil, fmt.Errorf("PBKDF2 rounds %d outside 1..%d: %w", pp.Rounds, MaxRounds, ErrUnsupported)
	}
	return pbkdf2.Key(sha1.New, string(passphrase), pp.Salt, pp.Rounds, n)
}

// UnlockPhrase opens a phrase pair with a passphrase (docs/formats.md §4):
// kek = PBKDF2-HMAC-SHA1(passphrase, salt, rounds, 32|64), locked data =
// IV || AES-256-CBC(kek[:32], PKCS#7(dict)) || HMAC(kek, dict). A wrong
// passphrase is ErrWrongKey; malformed input ErrCorrupt or ErrUnsupported,
// reported before any PBKDF2 work.
func UnlockPhrase(p *Pair, passphrase []byte) (*Key, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Locker.Type != TypePhrase {
		return nil, fmt.Errorf("pair is locked by %q, not a passphrase: %w", p.Locker.Type, ErrUnsupported)
	}
	pp, _ := ParsePhraseParams(p.Locker.KeyGenData)
	kek, err := DerivePhraseKEK(pp, passphrase)
	if err != nil {
		return nil, err
	}
	return UnlockPhraseKEK(p, kek)
}

// UnlockPhraseKEK is UnlockPhrase with the PBKDF2 output already derived
// (DerivePhraseKEK), so callers can cache it.
func UnlockPhraseKEK(p *Pair, kek []byte) (*Key, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Locker.Type != TypePhrase {
		return nil, fmt.Errorf("pair is locked by %q, not a passphrase: %w", p.Locker.Type, ErrUnsupported)
	}
	if len(kek) < 32 {
		return nil, fmt.Errorf("passphrase KEK of %d bytes: %w", len(kek), ErrUnsupported)
	}
	return open(p, kek[:32], kek)
}

// UnlockFQID opens a key-provider pair with the provider's 32-byte KEK.
//
// MODEL (docs/formats.md §7): locked data = IV || AES-256-CBC(KEK,
// PKCS#7(plain)) || HMAC-SHA256(KEK, plain), plain one or more crypto dicts
// (one per line), the type=key one the config key (bundle.go). Any length
// 16 + 16n + 32 is read. A MAC mismatch is ErrWrongKey.
func UnlockFQID(p *Pair, kek []byte) (*Key, error) {
	k, _, err := UnlockFQIDBundle(p, kek)
	return k, err
}

// open decrypts and authenticates the locked data of a validated pair and
// parses its key dict.
func open(p *Pair, encKey, macKey []byte) (*Key, error) {
	dict, err := openPlain(p, encKey, macKey)
	if err != nil {
		return nil, err
	}
	k, err := ParseKeyDict(string(dict))
	if err != nil {
		return nil, fmt.Errorf("key safe opened but holds a bad key dict: %w", err)
	}
	return k, nil
}

// openPlain decrypts and authenticates the locked data of a validated
// pair.
func openPlain(p *Pair, encKey, macKey []byte) ([]byte, error) {
	newMAC, macLen, _ := macSpec(p.MAC)
	iv := p.Locked[:aes.BlockSize]
	ct := p.Locked[aes.BlockSize : len(p.Locked)-macLen]
	tag := p.Locked[len(p.Locked)-macLen:]
	dict, ok := cbcOpen(encKey, iv, ct)
	// With a wrong key the padding is almost always wrong: that is a wrong
	// key, not corruption (the MAC covers the plaintext, so nothing can
	// tell them apart before decrypting).
	if !ok {
		return nil, fmt.Errorf("bad padding after decryption: %w", ErrWrongKey)
	}
	m := hmac.New(newMAC, macKey)
	m.Write(dict)
	if !hmac.Equal(m.Sum(nil)[:macLen], tag) {
		return nil, fmt.Errorf("MAC mismatch: %w", ErrWrongKey)
	}
	return dict, nil
}

// cbcOpen decrypts AES-256-CBC and strips PKCS#7 padding strictly. ok is
// false on bad padding.
func cbcOpen(key, iv, ct []byte) ([]byte, bool) {
	blk, err := aes.NewCipher(key)
	if err != nil || len(ct) == 0 || len(ct)%aes.BlockSize != 0 {
		return nil, false
	}
	pt := make([]byte, len(ct))
	cipher.NewCBCDecrypter(blk, iv).CryptBlocks(pt, ct)
	n := int(pt[len(pt)-1])
	if n < 1 || n > aes.BlockSize {
		return nil, false
	}
	var bad byte
	for _, c := range pt[len(pt)-n:] {
		bad |= c ^ byte(n)
	}
	if bad != 0 {
		return nil, false
	}
	return pt[:len(pt)-n], true
}

// CBCOpen decrypts AES-256-CBC data and removes strict PKCS#7 padding; ok
// is false on a bad key length, bad length or bad padding. Shared with
// encryption.data (package vmx).
func CBCOpen(key, iv, ct []byte) (pt []byte, ok bool) { return cbcOpen(key, iv, ct) }

// CBCSeal pads plaintext with PKCS#7 and encrypts it with AES-256-CBC.
func CBCSeal(key, iv, pt []byte) ([]byte, error) {
	blk, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	n := aes.BlockSize - len(pt)%aes.BlockSize
	buf := make([]byte, len(pt)+n)
	copy(buf, pt)
	for i := len(pt); i < len(buf); i++ {
		buf[i] = byte(n)
	}
	cipher.NewCBCEncrypter(blk, iv).CryptBlocks(buf, buf)
	return buf, nil
}

// seal builds locked data IV || CBC(encKey, dict) || MAC(macKey, dict).
func seal(k *Key, macName string, encKey, macKey []byte, rand io.Reader) ([]byte, error) {
	if KeyLen(k.Cipher) == 0 || len(k.Bytes) != KeyLen(k.Cipher) {
		return nil, fmt.Errorf("key of %d bytes for cipher %q: %w", len(k.Bytes), k.Cipher, ErrUnsupported)
	}
	newMAC, macLen, err := macSpec(macName)
	if err != nil {
		return nil, err
	}
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rand, iv); err != nil {
		return nil, err
	}
	dict := []byte(k.Dict())
	ct, err := CBCSeal(encKey, iv, dict)
	if err != nil {
		return nil, err
	}
	m := hmac.New(newMAC, macKey)
	m.Write(dict)
	out := append(iv, ct...)
	return append(out, m.Sum(nil)[:macLen]...), nil
}

// LockPhrase wraps k under a passphrase as Workstation does: a phrase
// locker with a random 8-byte unique id and 16-byte salt, PBKDF2 with
// rounds (DefaultRounds when 0) and a KEK for cipher (AES-256 or
// XTS-AES-256), MAC HMAC-SHA-1.
func LockPhrase(k *Key, passphrase []byte, cipherName string, rounds int, rand io.Reader) (*Pair, error) {
	p, _, err := lockPhrase(k, passphrase, cipherName, rounds, rand)
	return p, err
}

// lockPhrase is LockPhrase that also returns the KEK it derived.
func lockPhrase(k *Key, passphrase []byte, cipherName string, rounds int, rand io.Reader) (*Pair, []byte, error) {
	if rounds == 0 {
		rounds = DefaultRounds
	}
	if KeyLen(cipherName) == 0 {
		return nil, nil, fmt.Errorf("passphrase cipher %q: %w", cipherName, ErrUnsupported)
	}
	if rounds < 1 || rounds > MaxRounds {
		return nil, nil, fmt.Errorf("PBKDF2 rounds %d outside 1..%d: %w", rounds, MaxRounds, ErrUnsupported)
	}
	id := make([]byte, 8)
	salt := make([]byte, 16)
	if _, err := io.ReadFull(rand, id); err != nil {
		return nil, nil, err
	}
	if _, err := io.ReadFull(rand, salt); err != nil {
		return nil, nil, err
	}
	pp := &PhraseParams{Pass2Key: Pass2KeyPBKDF2, Cipher: cipherName, Rounds: rounds, Salt: salt}
	kek, err := DerivePhraseKEK(pp, passphrase)
	if err != nil {
		return nil, nil, err
	}
	locked, err := seal(k, MACSHA1, kek[:32], kek, rand)
	if err != nil {
		return nil, nil, err
	}
	return &Pair{
		Locker: &Locator{Type: TypePhrase, UniqueID: base64.StdEncoding.EncodeToString(id), KeyGenData: pp.String()},
		MAC:    MACSHA1,
		Locked: locked,
	}, kek, nil
}

// LockFQID wraps k under a key provider's KEK: an fqid locker with a null
// unique id, the provider name and key id, MAC HMAC-SHA-256.
//
// MODEL (docs/formats.md §7): the inverse of UnlockFQID.
func LockFQID(k *Key, provider, keyID string, kek []byte, rand io.Reader) (*Pair, error) {
	if len(kek) != FQIDKEKLen {
		return nil, fmt.Errorf("KEK of %d bytes, want %d: %w", len(kek), FQIDKEKLen, ErrUnsupported)
	}
	if provider == "" || keyID == "" {
		return nil, fmt.Errorf("fqid locker needs a provider and a key id: %w", ErrUnsupported)
	}
	locked, err := seal(k, MACSHA256, kek, kek, rand)
	if err != nil {
		return nil, err
	}
	return &Pair{
		Locker: &Locator{Type: TypeFQID, UniqueID: NullField, KeyServerID: provider, KeyID: keyID},
		MAC:    MACSHA256,
		Locked: locked,
	}, nil
}

// Describe returns a one-line description of a locker for reports:
// "phrase", "fqid <provider>/<keyId>", or the type name.
func (l *Locator) Describe() string {
	switch l.Type {
	case TypeFQID:
		return "fqid " + l.KeyServerID + "/" + l.KeyID
	case TypePhrase:
		return "phrase"
	}
	return string(l.Type)
}
