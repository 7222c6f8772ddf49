package keysafe

import (
	"crypto/aes"
	"crypto/hmac"
	"encoding/base64"
	"fmt"
	"io"
	"strings"
)

// Key-provider bundles (MODEL, docs/formats.md §7). The real fqid bundles
// on record carry 272 and 288 bytes of locked data, 85-115 bytes more than
// one key dict: their plaintext holds more than the config key. The model
// reads a plaintext of one or more crypto dicts separated by newlines; the
// one with type=key is the config key, the others are reported by their
// type only (never their values).

// MaxBundleEntries caps the dicts of one bundle plaintext.
const MaxBundleEntries = 64

// UnlockFQIDBundle opens an fqid pair with the KEK, as UnlockFQID, and also
// returns the types of the other entries of the bundle ("type" values, or
// "?" for a dict without one).
func UnlockFQIDBundle(p *Pair, kek []byte) (*Key, []string, error) {
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	if p.Locker.Type != TypeFQID {
		return nil, nil, fmt.Errorf("pair is locked by %q, not a key provider: %w", p.Locker.Type, ErrUnsupported)
	}
	if len(kek) != FQIDKEKLen {
		return nil, nil, fmt.Errorf("KEK of %d bytes, want %d: %w", len(kek), FQIDKEKLen, ErrWrongKey)
	}
	plain, err := openPlain(p, kek, kek)
	if err != nil {
		return nil, nil, err
	}
	return parseBundle(string(plain))
}

// parseBundle finds the one type=key dict among the bundle's entries.
func parseBundle(s string) (*Key, []string, error) {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' || r == 0 })
	if len(lines) > MaxBundleEntries {
		return nil, nil, fmt.Errorf("key-provider bundle of %d entries, more than %d: %w", len(lines), MaxBundleEntries, ErrCorrupt)
	}
	var key *Key
	var others []string
	for i, l := range lines {
		d, err := ParseDict(l)
		if err != nil {
			return nil, nil, fmt.Errorf("key-provider bundle entry %d: %w", i+1, err)
		}
		t, ok := d.Get("type")
		if !ok {
			t = "?"
		}
		if t != "key" {
			others = append(others, t)
			continue
		}
		if key != nil {
			return nil, nil, fmt.Errorf("key-provider bundle holds more than one type=key entry: %w", ErrCorrupt)
		}
		if key, err = ParseKeyDict(l); err != nil {
			return nil, nil, fmt.Errorf("key safe opened but holds a bad key dict: %w", err)
		}
	}
	if key == nil {
		return nil, nil, fmt.Errorf("key-provider bundle opened but holds no type=key entry (entries: %s): %w", strings.Join(others, ", "), ErrCorrupt)
	}
	return key, others, nil
}

// LockFQIDBundle wraps k like LockFQID, with extra entries after the key
// dict so that the locked data is exactly lockedLen bytes (16 + 16n + 32,
// at least what the key dict alone needs): the shape of the real bundles
// (272 and 288 bytes), for fixtures. The extra entry is
// "type=nonce:value=<b64 random>".
func LockFQIDBundle(k *Key, provider, keyID string, kek []byte, lockedLen int, rand io.Reader) (*Pair, error) {
	if len(kek) != FQIDKEKLen {
		return nil, fmt.Errorf("KEK of %d bytes, want %d: %w", len(kek), FQIDKEKLen, ErrUnsupported)
	}
	if provider == "" || keyID == "" {
		return nil, fmt.Errorf("fqid locker needs a provider and a key id: %w", ErrUnsupported)
	}
	macLen := 32
	ctLen := lockedLen - aes.BlockSize - macLen
	if lockedLen > MaxLockedLen || ctLen <= 0 || ctLen%aes.BlockSize != 0 {
		return nil, fmt.Errorf("locked data of %d bytes is not 16 + 16n + 32: %w", lockedLen, ErrUnsupported)
	}
	plain := k.Dict()
	if len(plain) >= ctLen {
		return nil, fmt.Errorf("a %d-byte bundle cannot hold the %d-byte key dict: %w", lockedLen, len(plain), ErrUnsupported)
	}
	if room := ctLen - 1 - len(plain); room > 0 { // PKCS#7 pads 1..16 bytes
		// "\ntype=nonce:value=" + base64: fill up to the last block.
		prefix := "\ntype=nonce:value="
		want := room - len(prefix)
		if want >= 4 {
			n := want / 4 * 3
			raw := make([]byte, n)
			if _, err := io.ReadFull(rand, raw); err != nil {
				return nil, err
			}
			v := base64.StdEncoding.EncodeToString(raw)
			v = strings.ReplaceAll(v, "=", "%3d")
			if len(prefix)+len(v) <= room {
				plain += prefix + v
			}
		}
	}
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rand, iv); err != nil {
		return nil, err
	}
	ct, err := CBCSeal(kek, iv, []byte(plain))
	if err != nil {
		return nil, err
	}
	if len(ct) != ctLen {
		return nil, fmt.Errorf("bundle of %d bytes came out as %d: %w", lockedLen, aes.BlockSize+len(ct)+macLen, ErrUnsupported)
	}
	newMAC, _, _ := macSpec(MACSHA256)
	m := hmac.New(newMAC, kek)
	m.Write([]byte(plain))
	locked := append(append(iv, ct...), m.Sum(nil)...)
	return &Pair{
		Locker: &Locator{Type: TypeFQID, UniqueID: NullField, KeyServerID: provider, KeyID: keyID},
		MAC:    MACSHA256,
		Locked: locked,
	}, nil
}
