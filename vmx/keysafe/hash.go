package keysafe

import (
	"crypto/aes"
	"encoding/hex"
	"fmt"
	"strconv"
)

// HashcatLine returns the hashcat mode 27400 line of a phrase pair
// (docs/formats.md §6): $vmx$0$<rounds>$<salt hex>$<IV hex><first block hex>.
// It is valid for AES-256 and XTS-AES-256 key safes.
func HashcatLine(p *Pair) (string, error) {
	pp, err := phrasePair(p)
	if err != nil {
		return "", err
	}
	return "$vmx$0$" + strconv.Itoa(pp.Rounds) + "$" + hex.EncodeToString(pp.Salt) + "$" +
		hex.EncodeToString(p.Locked[:2*aes.BlockSize]), nil
}

// JohnLine returns the John the Ripper "vmx" line of a phrase pair:
// $vmx$1$0$0$<rounds>$<salt hex>$<blob hex>. John handles only 116-byte
// AES-256 blobs; anything else is ErrUnsupported.
func JohnLine(p *Pair) (string, error) {
	pp, err := phrasePair(p)
	if err != nil {
		return "", err
	}
	if pp.Cipher != CipherAES256 || p.MAC != MACSHA1 || len(p.Locked) != 116 {
		return "", fmt.Errorf("john's vmx format holds only 116-byte AES-256 key safes, this one is %s with %d bytes: %w", pp.Cipher, len(p.Locked), ErrUnsupported)
	}
	return "$vmx$1$0$0$" + strconv.Itoa(pp.Rounds) + "$" + hex.EncodeToString(pp.Salt) + "$" +
		hex.EncodeToString(p.Locked), nil
}

func phrasePair(p *Pair) (*PhraseParams, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if p.Locker.Type != TypePhrase {
		return nil, fmt.Errorf("pair locked by %q has no passphrase to crack: %w", p.Locker.Type, ErrUnsupported)
	}
	return ParsePhraseParams(p.Locker.KeyGenData)
}
