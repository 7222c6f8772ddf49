package vmx

import (
	"bytes"
	"fmt"
	"io"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Decrypted is an encrypted VMX opened with its config key.
type Decrypted struct {
	// Header is the outer file without its encryption.* lines: the
	// settings VMware keeps plain.
	Header *File
	// Text is the decrypted encryption.data, exactly as stored.
	Text []byte
	// Settings is Text parsed.
	Settings *File
}

// Decrypt opens the encryption.data of f with the config key that its key
// safe wraps (see keysafe and recover/keys.Resolver).
func Decrypt(f *File, configKey *keysafe.Key) (*Decrypted, error) {
	_, data, ok, err := f.Encryption()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("VMX is not encrypted (no %s): %w", KeyKeySafe, keysafe.ErrUnsupported)
	}
	text, err := DecryptData(configKey, data)
	if err != nil {
		return nil, err
	}
	settings, err := ParseBytes(text)
	if err != nil {
		return nil, err
	}
	h := &File{BOM: f.BOM}
	for _, l := range f.Lines {
		if l.Kind == Setting && isEncryptionKey(l.Key) {
			continue
		}
		h.Lines = append(h.Lines, l)
	}
	return &Decrypted{Header: h, Text: text, Settings: settings}, nil
}

// Bytes returns the decrypted VMX as `vmx decrypt` writes it: the plain
// header lines as they are, then the decrypted text as it is.
func (d *Decrypted) Bytes() []byte {
	b := d.Header.Bytes()
	if n := len(d.Header.Lines); n > 0 && d.Header.Lines[n-1].EOL == "" {
		b = append(b, d.Header.EOL()...)
	}
	return append(b, d.Text...)
}

// Recovered returns the VMX of the recovered (plain) VM, docs/formats.md §5:
// the plain header lines and the decrypted settings, without encryption.*,
// dataFileKey and cryptoState, so that it opens as an ordinary VM. Every
// other line is kept as written.
func (d *Decrypted) Recovered() []byte {
	s := &File{Lines: append([]Line(nil), d.Settings.Lines...)}
	s.Delete(KeyDataFileKey)
	s.Delete(KeyCryptoState)
	for _, k := range []string{KeyKeySafe, KeyBundle, KeyData} {
		s.Delete(k)
	}
	b := d.Header.Bytes()
	if n := len(d.Header.Lines); n > 0 && d.Header.Lines[n-1].EOL == "" {
		b = append(b, d.Header.EOL()...)
	}
	return append(b, s.Bytes()...)
}

// Get looks a setting up in the decrypted settings, then in the plain
// header.
func (d *Decrypted) Get(key string) (string, bool) {
	if v, ok := d.Settings.Get(key); ok {
		return v, true
	}
	return d.Header.Get(key)
}

// EncryptOptions tune Encrypt.
type EncryptOptions struct {
	// Cipher of the new config key (and of a new dataFileKey):
	// keysafe.CipherAES256 (default, Workstation) or CipherXTSAES256.
	Cipher string
	// ConfigKey, if set, is used instead of a random one (fixtures).
	ConfigKey *keysafe.Key
	// DataFileKey, if set and the settings have none, is added instead
	// of a random one.
	DataFileKey *keysafe.Key
}

// Lock wraps a new config key into a key safe; see keysafe.LockPhrase and
// keysafe.LockFQID, and keysafe.NewList.
type Lock func(configKey *keysafe.Key) (*keysafe.Locator, error)

// Split divides a plain VMX into the settings VMware keeps plain (see
// IsPlainHeaderKey, wherever they are) and the body text that goes into
// encryption.data: every other line, as written.
func Split(plain *File) (header *File, body []byte) {
	header = &File{BOM: plain.BOM}
	rest := &File{}
	for _, l := range plain.Lines {
		if l.Kind == Setting && IsPlainHeaderKey(l.Key) {
			header.Lines = append(header.Lines, l)
		} else {
			rest.Lines = append(rest.Lines, l)
		}
	}
	return header, rest.Bytes()
}

// Encrypt is the inverse of Decrypt: it keeps the plain header lines
// (Split), moves the rest into encryption.data under a new config key, adds
// dataFileKey and cryptoState = "encrypted" to the encrypted settings when
// absent, and writes encryption.keySafe (from lock) and encryption.data
// after the header. Decrypt(Encrypt(x)).Bytes() gives x back when x already
// held dataFileKey and cryptoState.
func Encrypt(plain *File, lock Lock, opt EncryptOptions, rand io.Reader) (*File, *keysafe.Key, error) {
	if _, _, enc, err := plain.Encryption(); err != nil || enc {
		if err == nil {
			err = fmt.Errorf("VMX is already encrypted: %w", keysafe.ErrUnsupported)
		}
		return nil, nil, err
	}
	cipherName := opt.Cipher
	if cipherName == "" {
		cipherName = keysafe.CipherAES256
	}
	if keysafe.KeyLen(cipherName) == 0 {
		return nil, nil, fmt.Errorf("cipher %q: %w", cipherName, keysafe.ErrUnsupported)
	}
	newKey := func() (*keysafe.Key, error) {
		b := make([]byte, keysafe.KeyLen(cipherName))
		if _, err := io.ReadFull(rand, b); err != nil {
			return nil, err
		}
		return &keysafe.Key{Cipher: cipherName, Bytes: b}, nil
	}
	configKey := opt.ConfigKey
	if configKey == nil {
		var err error
		if configKey, err = newKey(); err != nil {
			return nil, nil, err
		}
	}
	header, body := Split(plain)
	settings, err := ParseBytes(body)
	if err != nil {
		return nil, nil, err
	}
	eol := plain.EOL()
	add := func(k, v string) {
		if len(body) > 0 && body[len(body)-1] != '\n' {
			body = append(body, eol...)
		}
		body = append(body, SettingLine(k, v, eol).Raw+eol...)
	}
	if _, ok := settings.Get(KeyDataFileKey); !ok {
		dfk := opt.DataFileKey
		if dfk == nil {
			if dfk, err = newKey(); err != nil {
				return nil, nil, err
			}
		}
		add(KeyDataFileKey, dfk.Dict())
	} else if _, err := settings.DataFileKey(); err != nil {
		return nil, nil, err
	}
	if _, ok := settings.Get(KeyCryptoState); !ok {
		add(KeyCryptoState, "encrypted")
	}
	ks, err := lock(configKey)
	if err != nil {
		return nil, nil, err
	}
	data, err := EncryptData(configKey, body, rand)
	if err != nil {
		return nil, nil, err
	}
	out := &File{BOM: header.BOM, Lines: append([]Line(nil), header.Lines...)}
	if n := len(out.Lines); n > 0 && out.Lines[n-1].EOL == "" {
		out.Lines[n-1].EOL = eol
	}
	out.Lines = append(out.Lines, SettingLine(KeyKeySafe, ks.String(), eol), SettingLine(KeyData, data, eol))
	return out, configKey, nil
}

// hasPrefixFold reports whether s starts with prefix, ignoring case.
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && bytes.EqualFold([]byte(s[:len(prefix)]), []byte(prefix))
}
