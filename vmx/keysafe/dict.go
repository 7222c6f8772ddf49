package keysafe

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Bounds on crypto dicts.
const (
	// MaxDictLen caps the length of a crypto dict.
	MaxDictLen = 64 << 10
	// MaxDictEntries caps the number of key=value entries of a dict.
	MaxDictEntries = 64
	// MaxRounds caps PBKDF2 rounds: a larger work factor is refused as
	// unsupported before any derivation (VMware uses 10000).
	MaxRounds = 10_000_000
	// MaxTotalRounds caps the PBKDF2 rounds one key safe may ask for over
	// all its phrase pairs (and all the passphrases tried): a list of many
	// pairs, each under MaxRounds with its own salt, would otherwise cost
	// hours before the answer "wrong passphrase".
	MaxTotalRounds = 4 * MaxRounds
	// MaxSaltLen caps the PBKDF2 salt (VMware uses 16 bytes).
	MaxSaltLen = 256
)

// Cipher names used in dicts.
const (
	CipherAES256    = "AES-256"     // 32-byte key
	CipherXTSAES256 = "XTS-AES-256" // 64-byte key
	// Pass2KeyPBKDF2 is the only passphrase KDF VMware uses.
	Pass2KeyPBKDF2 = "PBKDF2-HMAC-SHA-1"
)

// KeyLen returns the key length of a cipher name, or 0 if unknown.
func KeyLen(cipher string) int {
	switch cipher {
	case CipherAES256:
		return 32
	case CipherXTSAES256:
		return 64
	}
	return 0
}

// Entry is one key=value of a crypto dict (value unescaped).
type Entry struct {
	Key, Value string
}

// Dict is a crypto dict "key=value{:key=value}" (docs/formats.md §3), in the
// order written.
type Dict []Entry

// ParseDict parses a crypto dict: split on ':', then on the first '=', then
// URL-unescape the value. Empty, duplicate or key-less entries are refused.
// Errors wrap ErrCorrupt.
func ParseDict(s string) (Dict, error) {
	if len(s) > MaxDictLen {
		return nil, fmt.Errorf("crypto dict is %d bytes, more than %d: %w", len(s), MaxDictLen, ErrCorrupt)
	}
	if s == "" {
		return nil, fmt.Errorf("empty crypto dict: %w", ErrCorrupt)
	}
	parts := strings.Split(s, ":")
	if len(parts) > MaxDictEntries {
		return nil, fmt.Errorf("crypto dict has %d entries, more than %d: %w", len(parts), MaxDictEntries, ErrCorrupt)
	}
	d := make(Dict, 0, len(parts))
	for _, part := range parts {
		k, raw, ok := strings.Cut(part, "=")
		if !ok || k == "" || strings.ContainsAny(k, "%") {
			return nil, fmt.Errorf("crypto dict entry %q is not key=value: %w", part, ErrCorrupt)
		}
		if _, dup := d.Get(k); dup {
			return nil, fmt.Errorf("crypto dict has %q twice: %w", k, ErrCorrupt)
		}
		v, err := Unescape(raw)
		if err != nil {
			return nil, fmt.Errorf("crypto dict value of %q: %v: %w", k, err, ErrCorrupt)
		}
		d = append(d, Entry{k, v})
	}
	return d, nil
}

// Get returns the value of key (exact match) and whether it is present.
func (d Dict) Get(key string) (string, bool) {
	for _, e := range d {
		if e.Key == key {
			return e.Value, true
		}
	}
	return "", false
}

// String writes the dict as VMware does: entries joined by ':', values with
// '%', ':', '=' and every control or non-ASCII byte escaped as %xx (lower
// case). ParseDict(d.String()) gives d back.
func (d Dict) String() string {
	var b strings.Builder
	for i, e := range d {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(e.Key)
		b.WriteByte('=')
		b.WriteString(escapeDictValue(e.Value))
	}
	return b.String()
}

// escapeDictValue escapes what VMware escapes in dict values: '=' (as the
// vectors show, "%3d"), ':' and '%' (structure), and bytes outside the
// printable ASCII range. '/', '+' and '-' stay literal.
func escapeDictValue(v string) string {
	const hexd = "0123456789abcdef"
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '%' || c == ':' || c == '=' || c <= ' ' || c >= 0x7f {
			b.WriteByte('%')
			b.WriteByte(hexd[c>>4])
			b.WriteByte(hexd[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// Key is an unwrapped key: the config key of a VM, a disk key, or a data
// file key.
type Key struct {
	Cipher string // CipherAES256 or CipherXTSAES256
	Bytes  []byte // 32 or 64 bytes
}

// NewKey checks the length of b against cipher and returns a copy as a Key.
func NewKey(cipher string, b []byte) (*Key, error) {
	n := KeyLen(cipher)
	if n == 0 {
		return nil, fmt.Errorf("cipher %q: %w", cipher, ErrUnsupported)
	}
	if len(b) != n {
		return nil, fmt.Errorf("%s key is %d bytes, want %d: %w", cipher, len(b), n, ErrCorrupt)
	}
	return &Key{Cipher: cipher, Bytes: append([]byte(nil), b...)}, nil
}

// ParseKeyDict parses a wrapped-key dict "type=key:cipher=C:key=<b64>".
// An unknown cipher is ErrUnsupported; a missing field, bad base64 or a key
// of the wrong length is ErrCorrupt.
func ParseKeyDict(s string) (*Key, error) {
	d, err := ParseDict(s)
	if err != nil {
		return nil, err
	}
	if t, _ := d.Get("type"); t != "key" {
		return nil, fmt.Errorf("key dict type is %q, want \"key\": %w", t, ErrCorrupt)
	}
	c, ok := d.Get("cipher")
	if !ok {
		return nil, fmt.Errorf("key dict has no cipher: %w", ErrCorrupt)
	}
	kb64, ok := d.Get("key")
	if !ok {
		return nil, fmt.Errorf("key dict has no key: %w", ErrCorrupt)
	}
	if KeyLen(c) == 0 {
		return nil, fmt.Errorf("key dict cipher %q: %w", c, ErrUnsupported)
	}
	kb, err := decodeB64(kb64)
	if err != nil {
		return nil, fmt.Errorf("key dict key is not base64: %w", ErrCorrupt)
	}
	return NewKey(c, kb)
}

// Dict returns the wrapped-key dict as VMware writes it:
// "type=key:cipher=<C>:key=<b64, '=' written %3d>".
func (k *Key) Dict() string {
	return Dict{{"type", "key"}, {"cipher", k.Cipher}, {"key", base64.StdEncoding.EncodeToString(k.Bytes)}}.String()
}

// PhraseParams are the key-generation parameters of a phrase locator.
type PhraseParams struct {
	Pass2Key string // PBKDF2-HMAC-SHA-1
	Cipher   string // AES-256 or XTS-AES-256: KEK length 32 or 64
	Rounds   int
	Salt     []byte
}

// ParsePhraseParams parses a phrase locator's keyGenData dict, e.g.
// "pass2key=PBKDF2-HMAC-SHA-1:cipher=AES-256:rounds=10000:salt=<b64>" (any
// order). An unknown pass2key or cipher, or rounds above MaxRounds, is
// ErrUnsupported; a missing field, bad number or bad salt is ErrCorrupt.
func ParsePhraseParams(keyGenData string) (*PhraseParams, error) {
	d, err := ParseDict(keyGenData)
	if err != nil {
		return nil, err
	}
	var pp PhraseParams
	var ok [4]bool
	pp.Pass2Key, ok[0] = d.Get("pass2key")
	pp.Cipher, ok[1] = d.Get("cipher")
	rounds, ok2 := d.Get("rounds")
	salt, ok3 := d.Get("salt")
	ok[2], ok[3] = ok2, ok3
	for i, name := range []string{"pass2key", "cipher", "rounds", "salt"} {
		if !ok[i] {
			return nil, fmt.Errorf("passphrase parameters have no %s: %w", name, ErrCorrupt)
		}
	}
	if pp.Pass2Key != Pass2KeyPBKDF2 {
		return nil, fmt.Errorf("passphrase KDF %q: %w", pp.Pass2Key, ErrUnsupported)
	}
	if KeyLen(pp.Cipher) == 0 {
		return nil, fmt.Errorf("passphrase cipher %q: %w", pp.Cipher, ErrUnsupported)
	}
	if rounds == "" || len(rounds) > 12 || strings.TrimLeft(rounds, "0123456789") != "" {
		return nil, fmt.Errorf("PBKDF2 rounds %q is not a number: %w", rounds, ErrCorrupt)
	}
	n, err := strconv.ParseInt(rounds, 10, 64)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("PBKDF2 rounds %q is not a positive number: %w", rounds, ErrCorrupt)
	}
	if n > MaxRounds {
		return nil, fmt.Errorf("PBKDF2 rounds %d above the cap of %d: %w", n, MaxRounds, ErrUnsupported)
	}
	pp.Rounds = int(n)
	if len(salt) > MaxSaltLen*2 {
		return nil, fmt.Errorf("PBKDF2 salt too long: %w", ErrCorrupt)
	}
	if pp.Salt, err = decodeB64(salt); err != nil || len(pp.Salt) == 0 || len(pp.Salt) > MaxSaltLen {
		return nil, fmt.Errorf("PBKDF2 salt is not base64 of 1..%d bytes: %w", MaxSaltLen, ErrCorrupt)
	}
	return &pp, nil
}

// String writes the parameters as VMware does (pass2key, cipher, rounds,
// salt in that order).
func (pp *PhraseParams) String() string {
	return Dict{
		{"pass2key", pp.Pass2Key}, {"cipher", pp.Cipher},
		{"rounds", strconv.Itoa(pp.Rounds)}, {"salt", base64.StdEncoding.EncodeToString(pp.Salt)},
	}.String()
}
