package nkp

import (
	"encoding/asn1"
	"errors"
	"fmt"
	"strings"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// KDKSize is the size of a Key Derivation Key (AES-256).
const KDKSize = 32

// KDK is a Key Derivation Key read from a backup or made by NewKDK.
type KDK struct {
	// ID is the KDK id; in a backup, the entry's friendlyName.
	ID UUID
	// Key is the 32-byte AES-256 key. Secret.
	Key []byte
	// Provider is the key provider's name when the backup stores it, else "".
	Provider string
}

// Open checks password against the backup's MAC and decrypts its key
// entries, returning every KDK (an NKP backup holds one). Password is the
// UTF-8 password as typed; nil or empty is the empty password.
//
// Errors: keysafe.ErrWrongKey when the MAC fails and no entry opens (wrong
// password, or an entry damaged so it cannot be told from one);
// keysafe.ErrCorrupt when the MAC fails but an entry opens with the
// password (the password is right, the file damaged), or when the backup
// holds no KDK; keysafe.ErrUnsupported for unknown algorithms or keys other
// than 32-byte AES keys named by a UUID.
func (b *Backup) Open(password []byte) ([]KDK, error) {
	cands := bmpCandidates(password)
	bmp := cands[0]
	macOK := false
	if b.mac != nil {
		for _, c := range cands {
			if b.mac.verify(c, b.authSafe) {
				bmp, macOK = c, true
				break
			}
		}
	}
	kdks, opened, err := b.decryptAll(password, bmp)
	if !b.hasKeyEntry() {
		return nil, corruptf("file", "no key entry (secret key bag) found")
	}
	if b.mac != nil && !macOK {
		if opened > 0 {
			return nil, corruptf("macData", "the MAC does not match although the password opens the key entry: the file was changed, or its store password differs from this key password")
		}
		// A MAC we can compute failed and nothing opened: the password
		// is wrong, whatever else the file holds that we cannot read
		// (a legacy RC2 certificate container, say).
		return nil, fmt.Errorf("NKP backup: the password does not match the backup's MAC: %w", keysafe.ErrWrongKey)
	}
	if err != nil {
		if errors.Is(err, errDecrypt) {
			return nil, fmt.Errorf("NKP backup: the key entry does not decrypt with this password: %w", keysafe.ErrWrongKey)
		}
		return nil, err
	}
	if len(kdks) == 0 {
		return nil, corruptf("file", "no key entry (secret key bag) found")
	}
	return kdks, nil
}

// hasKeyEntry reports whether the file has a key bag or an encrypted
// container that may hold one.
func (b *Backup) hasKeyEntry() bool {
	for _, c := range b.Containers {
		if c.Type == "encryptedData" {
			return true
		}
		for _, bag := range c.Bags {
			if bag.Key {
				return true
			}
		}
	}
	return false
}

// decryptAll walks every container and bag; opened counts the encrypted
// items that decrypted with the password.
func (b *Backup) decryptAll(password, bmp []byte) (kdks []KDK, opened int, err error) {
	var firstErr error
	keep := func(e error) {
		if firstErr == nil || errors.Is(firstErr, errDecrypt) && !errors.Is(e, errDecrypt) {
			firstErr = e
		}
	}
	nbags := 0
	for _, c := range b.Containers {
		nbags += len(c.Bags)
	}
	work := b.work() // within MaxTotalIterations (checked by Parse)
	for i, c := range b.Containers {
		bags := c.Bags
		if c.Type == "encryptedData" {
			field := fmt.Sprintf("AuthenticatedSafe[%d]", i)
			if c.pbe == nil {
				keep(unsupportedf(field, "encryption %s is not supported", c.Encryption.Scheme))
				continue
			}
			plain, err := c.pbe.decrypt(password, bmp, c.ciphertext)
			if err == nil {
				bags, err = parseSafeContents(plain, field, &nbags)
				if err != nil {
					// Garbage after a lucky padding check is a wrong password too.
					err = fmt.Errorf("%w: %w", errDecrypt, err)
				} else if work += bagsWork(bags); work > MaxTotalIterations {
					err = unsupportedf(field, "its key entries bring the KDF iterations of the backup to %d, more than the %d cap", work, MaxTotalIterations)
				}
			}
			if err != nil {
				keep(err)
				continue
			}
			opened++
		}
		for j := range bags {
			bag := &bags[j]
			if !bag.Key {
				continue
			}
			field := fmt.Sprintf("AuthenticatedSafe[%d] bag[%d]", i, j)
			pki := bag.plain
			if bag.sealed != nil {
				if bag.pbe == nil {
					keep(unsupportedf(field, "key encryption %s is not supported", bag.Encryption.Scheme))
					continue
				}
				var err error
				if pki, err = bag.pbe.decrypt(password, bmp, bag.sealed); err != nil {
					keep(err)
					continue
				}
			}
			key, err := parsePrivateKeyInfo(pki, field)
			if err != nil {
				if bag.sealed != nil && errors.Is(err, keysafe.ErrCorrupt) {
					err = fmt.Errorf("%w: %w", errDecrypt, err)
				}
				keep(err)
				continue
			}
			if bag.sealed != nil {
				opened++
			}
			id, err := ParseUUID(bag.FriendlyName)
			if err != nil {
				keep(unsupportedf(field+" friendlyName", "alias %q is not a KDK id (a UUID)", bag.FriendlyName))
				continue
			}
			if len(key) != KDKSize {
				keep(unsupportedf(field, "AES key of %d bytes, want %d", len(key), KDKSize))
				continue
			}
			kdks = append(kdks, KDK{ID: id, Key: key, Provider: bag.Provider})
		}
	}
	if len(kdks) > 0 {
		return kdks, opened, nil
	}
	return nil, opened, firstErr
}

// parsePrivateKeyInfo returns the key of a PKCS#8 PrivateKeyInfo holding an
// AES key (algorithm 2.16.840.1.101.3.4.1 or one of its modes).
func parsePrivateKeyInfo(b []byte, field string) ([]byte, error) {
	field += " PrivateKeyInfo"
	body, err := whole(b, field)
	if err != nil {
		return nil, err
	}
	v, big, body, err := smallInt(body, field+" version")
	if err != nil {
		return nil, err
	}
	if big || v > 1 {
		return nil, corruptf(field+" version", "%d", v)
	}
	alg, params, body, err := algorithm(body, field+" algorithm")
	if err != nil {
		return nil, err
	}
	if err := nullParams(params, field+" algorithm"); err != nil {
		return nil, err
	}
	key, _, err := octets(body, field+" privateKey")
	if err != nil {
		return nil, err
	}
	// Optional attributes [0] / publicKey [1] after the key are ignored.
	if !isAES(alg) {
		return nil, unsupportedf(field+" algorithm", "%v is not an AES key", alg)
	}
	return key, nil
}

func isAES(o asn1.ObjectIdentifier) bool {
	return len(o) >= len(oidAESArc) && o[:len(oidAESArc)].Equal(oidAESArc)
}

// UUID is a 16-byte identifier (a KDK id), in RFC 4122 byte order.
type UUID [16]byte

// String formats u as lower-case 8-4-4-4-12 hex.
func (u UUID) String() string {
	const hx = "0123456789abcdef"
	var s strings.Builder
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			s.WriteByte('-')
		}
		s.WriteByte(hx[c>>4])
		s.WriteByte(hx[c&15])
	}
	return s.String()
}

// ParseUUID reads an 8-4-4-4-12 hex UUID, either case.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if len(s) != 36 {
		return u, fmt.Errorf("%q is not a UUID: %w", s, keysafe.ErrCorrupt)
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if s[i] != '-' {
				return u, fmt.Errorf("%q is not a UUID: %w", s, keysafe.ErrCorrupt)
			}
			i++
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return u, fmt.Errorf("%q is not a UUID: %w", s, keysafe.ErrCorrupt)
		}
		u[j] = hi<<4 | lo
		j++
		i += 2
	}
	return u, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
