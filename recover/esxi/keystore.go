package esxi

import (
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Key store (encryption.info) constants (docs/formats.md §16).
const (
	// MaxKeyStoreSize caps an encryption.info file (real ones are ~200
	// bytes).
	MaxKeyStoreSize = 64 << 10
	// ModeNone is the key store mode of a host without a TPM: the key is
	// derived from the file itself (obfuscation, not encryption).
	ModeNone = "NONE"
	// KeyStoreKDFRounds is the PBKDF2-HMAC-SHA256 iteration count of
	// mode NONE.
	KeyStoreKDFRounds = 100000
	// ObfuscationSuffix is appended to data1 to form the PBKDF2 password
	// in mode NONE.
	ObfuscationSuffix = "This is obfuscation, not encryption. If you want encryption, use TPM."
	// maxKeyStoreBlob caps data1 and data2 (16 bytes each in real files).
	maxKeyStoreBlob = 1024
	keyIDLen        = 16
)

// KeyStore is a parsed encryption.info.
type KeyStore struct {
	File            string `json:"file"`
	Mode            string `json:"mode"`            // "NONE", or a TPM mode
	IncludeKeyCache bool   `json:"includeKeyCache"` // the host persists VM keys (Key Persistence)
	// IncludeKeyCacheSet says whether includeKeyCache was present.
	IncludeKeyCacheSet bool `json:"includeKeyCacheSet"`
	// KeyID is the key id as a UUID (the 16 bytes of keyId in RFC 4122
	// order), "" when ConfigEncData has none.
	KeyID string `json:"keyId,omitempty"`
	// Version is ConfigEncData's version ("1").
	Version string `json:"version,omitempty"`
	// HasConfigEncData says whether ConfigEncData was present.
	HasConfigEncData bool `json:"hasConfigEncData"`

	data1, data2 []byte
}

// Sealed reports whether the key is sealed to a TPM (a mode other than
// NONE).
func (ks *KeyStore) Sealed() bool { return !strings.EqualFold(ks.Mode, ModeNone) }

// ReadKeyStore reads a key store of the given size from r.
func ReadKeyStore(file string, r io.ReaderAt, size int64) (*KeyStore, error) {
	if size > MaxKeyStoreSize {
		return nil, unsupportedf(file, -1, "key store", "%d bytes, more than the %d allowed", size, MaxKeyStoreSize)
	}
	b := make([]byte, size)
	if err := readFullAt(r, b, 0); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return ParseKeyStore(file, b)
}

// ParseKeyStore parses encryption.info (VMX-like lines). Mode is
// required; in mode NONE so is ConfigEncData with keyId, data1, data2 and
// version 1. A TPM mode parses (ConfigEncData optional); Key then returns
// a *SealedError. Errors wrap keysafe.ErrCorrupt or ErrUnsupported and
// name the field.
func ParseKeyStore(file string, b []byte) (*KeyStore, error) {
	if len(b) > MaxKeyStoreSize {
		return nil, unsupportedf(file, -1, "key store", "%d bytes, more than the %d allowed", len(b), MaxKeyStoreSize)
	}
	f, err := vmx.ParseBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	ks := &KeyStore{File: file}
	seen := map[string]bool{}
	var modeSet bool
	var ced string
	for _, l := range f.Lines {
		if l.Kind != vmx.Setting {
			continue
		}
		k := strings.ToLower(l.Key)
		switch k {
		case "mode", "includekeycache", "configencdata":
		default:
			continue
		}
		if seen[k] {
			return nil, corruptf(file, -1, l.Key, "appears twice")
		}
		seen[k] = true
		switch k {
		case "mode":
			ks.Mode, modeSet = l.Value, true
		case "includekeycache":
			ks.IncludeKeyCacheSet = true
			switch strings.ToUpper(l.Value) {
			case "TRUE":
				ks.IncludeKeyCache = true
			case "FALSE":
			default:
				return nil, corruptf(file, -1, "includeKeyCache", "%q is not TRUE or FALSE", l.Value)
			}
		case "configencdata":
			ks.HasConfigEncData, ced = true, l.Value
		}
	}
	if !modeSet {
		if !ks.HasConfigEncData {
			return nil, corruptf(file, -1, "key store", "neither mode nor ConfigEncData: not an ESXi encryption.info")
		}
		return nil, corruptf(file, -1, "mode", "required setting missing")
	}
	if ks.Mode == "" {
		return nil, corruptf(file, -1, "mode", "empty")
	}
	if !ks.HasConfigEncData {
		if ks.Sealed() {
			return ks, nil
		}
		return nil, corruptf(file, -1, "ConfigEncData", "required in mode %s but missing", ModeNone)
	}
	d, err := keysafe.ParseDict(ced)
	if err != nil {
		return nil, &FormatError{File: file, Offset: -1, Field: "ConfigEncData", Msg: err.Error(), Err: keysafe.ErrCorrupt}
	}
	if v, ok := d.Get("keyId"); ok {
		id, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(id) != keyIDLen {
			return nil, corruptf(file, -1, "ConfigEncData keyId", "not base64 of %d bytes", keyIDLen)
		}
		ks.KeyID = uuidString(id)
	}
	ks.Version, _ = d.Get("version")
	if ks.Sealed() {
		return ks, nil // a sealed blob's fields are not known
	}
	if ks.KeyID == "" {
		return nil, corruptf(file, -1, "ConfigEncData keyId", "missing")
	}
	if ks.Version != "1" {
		if ks.Version == "" {
			return nil, corruptf(file, -1, "ConfigEncData version", "missing")
		}
		return nil, unsupportedf(file, -1, "ConfigEncData version", "%q, want 1", ks.Version)
	}
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{"data1", &ks.data1}, {"data2", &ks.data2}} {
		v, ok := d.Get(f.name)
		if !ok {
			return nil, corruptf(file, -1, "ConfigEncData "+f.name, "missing")
		}
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil || len(b) == 0 || len(b) > maxKeyStoreBlob {
			return nil, corruptf(file, -1, "ConfigEncData "+f.name, "not base64 of 1 to %d bytes", maxKeyStoreBlob)
		}
		*f.dst = b
	}
	return ks, nil
}

// Key derives the host configuration key of a mode NONE store:
// PBKDF2-HMAC-SHA256(data1 || ObfuscationSuffix, data2, 100000, 32). A
// sealed store returns a *SealedError (ErrTPMSealed, keysafe.ErrKeyNotFound).
func (ks *KeyStore) Key() ([]byte, error) {
	if ks.Sealed() {
		return nil, &SealedError{File: ks.File, Mode: ks.Mode, KeyID: ks.KeyID}
	}
	return DeriveKeyStoreKey(ks.data1, ks.data2)
}

// MarshalKeyStore writes a mode NONE key store for keyID (16 bytes) with
// data1 and data2, as ESXi lays it out; the key it yields is
// DeriveKeyStoreKey(data1, data2).
func MarshalKeyStore(includeKeyCache bool, keyID, data1, data2 []byte) []byte {
	d := keysafe.Dict{
		{Key: "keyId", Value: base64.StdEncoding.EncodeToString(keyID)},
		{Key: "data1", Value: base64.StdEncoding.EncodeToString(data1)},
		{Key: "data2", Value: base64.StdEncoding.EncodeToString(data2)},
		{Key: "version", Value: "1"},
	}
	kc := "FALSE"
	if includeKeyCache {
		kc = "TRUE"
	}
	return fmt.Appendf(nil, ".encoding = \"UTF-8\"\nincludeKeyCache = %q\nmode = %q\nConfigEncData = %q\n", kc, ModeNone, d.String())
}

// DeriveKeyStoreKey is the mode NONE derivation on its own.
func DeriveKeyStoreKey(data1, data2 []byte) ([]byte, error) {
	return pbkdf2.Key(sha256.New, string(data1)+ObfuscationSuffix, data2, KeyStoreKDFRounds, keySize)
}

// uuidString formats 16 bytes as a UUID in the order stored (RFC 4122).
func uuidString(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
