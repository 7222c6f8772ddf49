package vmx

import (
	"crypto/aes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Setting names of an encrypted VMX.
const (
	KeyKeySafe     = "encryption.keySafe"
	KeyBundle      = "encryption.bundle" // the vSphere API's name, accepted in place of keySafe
	KeyData        = "encryption.data"
	KeyDataFileKey = "dataFileKey"
	KeyCryptoState = "cryptoState"
)

// dataMACLen is the HMAC-SHA1 length at the end of encryption.data.
const dataMACLen = sha1.Size

// PlainHeaderKeys are the settings an encrypted VMX keeps outside
// encryption.data (docs/formats.md §1), besides encryption.* itself; keys
// starting with "vtpm." are plain too.
var PlainHeaderKeys = []string{
	".encoding", "displayName", "guestOS.detailed.data", "guestInfo.detailed.data",
	"vmx.encryptionType", "encryptedVM.guid", "managedvm.autoAddVTPM",
}

// IsPlainHeaderKey says whether VMware keeps key plain in an encrypted VMX.
func IsPlainHeaderKey(key string) bool {
	if len(key) >= 5 && strings.EqualFold(key[:5], "vtpm.") {
		return true
	}
	for _, k := range PlainHeaderKeys {
		if strings.EqualFold(k, key) {
			return true
		}
	}
	return false
}

// isEncryptionKey reports encryption.keySafe, encryption.bundle, encryption.data.
func isEncryptionKey(key string) bool {
	return strings.EqualFold(key, KeyKeySafe) || strings.EqualFold(key, KeyBundle) || strings.EqualFold(key, KeyData)
}

// Encryption returns the key-safe text (encryption.keySafe, or
// encryption.bundle) and the encryption.data text. ok is false when the
// file has no key safe (not encrypted). A key safe or data given twice, or
// data without a key safe, is ErrCorrupt.
func (f *File) Encryption() (keySafe, data string, ok bool, err error) {
	for _, k := range []string{KeyKeySafe, KeyBundle, KeyData} {
		if f.Count(k) > 1 {
			return "", "", false, fmt.Errorf("VMX has %s %d times: %w", k, f.Count(k), keysafe.ErrCorrupt)
		}
	}
	ks, hasKS := f.Get(KeyKeySafe)
	bundle, hasBundle := f.Get(KeyBundle)
	data, hasData := f.Get(KeyData)
	switch {
	case hasKS && hasBundle && ks != bundle:
		return "", "", false, fmt.Errorf("VMX has both %s and %s and they differ: %w", KeyKeySafe, KeyBundle, keysafe.ErrCorrupt)
	case !hasKS && hasBundle:
		ks, hasKS = bundle, true
	}
	for _, k := range []string{KeyKeySafe, KeyBundle, KeyData} {
		if i := f.find(k); i >= 0 && f.Lines[i].Unterminated {
			return "", "", false, fmt.Errorf("%s is truncated (its quote is not closed: the file was cut short): %w", f.Lines[i].Key, keysafe.ErrCorrupt)
		}
	}
	if !hasKS {
		if hasData {
			return "", "", false, fmt.Errorf("VMX has %s but no key safe: %w", KeyData, keysafe.ErrCorrupt)
		}
		return "", "", false, nil
	}
	return ks, data, true, nil
}

// KeySafe parses the key safe of an encrypted VMX. It returns (nil, nil)
// when the file is not encrypted.
func (f *File) KeySafe() (*keysafe.Locator, error) {
	ks, _, ok, err := f.Encryption()
	if err != nil || !ok {
		return nil, err
	}
	l, err := keysafe.Parse(ks)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyKeySafe, err)
	}
	return l, nil
}

// DecryptData decrypts encryption.data with the VM's config key
// (docs/formats.md §5): b64 = IV(16) || AES-256-CBC(configKey[:32], PKCS#7(vmxText))
// || HMAC-SHA1(configKey, vmxText). The key has already been proven by the
// key safe's MAC, so bad padding or a MAC mismatch here is ErrCorrupt,
// never a wrong key. The length is checked before decrypting.
func DecryptData(configKey *keysafe.Key, b64 string) ([]byte, error) {
	if configKey == nil || len(configKey.Bytes) < 32 {
		return nil, fmt.Errorf("config key too short: %w", keysafe.ErrUnsupported)
	}
	if len(b64) > MaxFileSize {
		return nil, fmt.Errorf("%s of %d characters is larger than %d: %w", KeyData, len(b64), MaxFileSize, keysafe.ErrCorrupt)
	}
	if b64 == "" {
		return nil, fmt.Errorf("%s is missing or empty: %w", KeyData, keysafe.ErrCorrupt)
	}
	if strings.ContainsAny(b64, "\r\n") {
		return nil, fmt.Errorf("%s holds a newline: %w", KeyData, keysafe.ErrCorrupt)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("%s is not valid base64 (%v): %w", KeyData, err, keysafe.ErrCorrupt)
	}
	n := len(raw)
	if n < aes.BlockSize*2+dataMACLen || (n-dataMACLen)%aes.BlockSize != 0 {
		return nil, fmt.Errorf("%s is %d bytes: not IV + whole AES blocks + a 20-byte MAC: %w", KeyData, n, keysafe.ErrCorrupt)
	}
	iv, ct, tag := raw[:aes.BlockSize], raw[aes.BlockSize:n-dataMACLen], raw[n-dataMACLen:]
	text, ok := keysafe.CBCOpen(configKey.Bytes[:32], iv, ct)
	if !ok {
		return nil, fmt.Errorf("%s does not decrypt (bad padding) although the key safe opened: %w", KeyData, keysafe.ErrCorrupt)
	}
	m := hmac.New(sha1.New, configKey.Bytes)
	m.Write(text)
	if !hmac.Equal(m.Sum(nil), tag) {
		return nil, fmt.Errorf("%s fails its MAC although the key safe opened: %w", KeyData, keysafe.ErrCorrupt)
	}
	return text, nil
}

// EncryptData is the inverse of DecryptData: it returns the base64 text of
// encryption.data for vmxText under configKey, with a random IV.
func EncryptData(configKey *keysafe.Key, vmxText []byte, rand io.Reader) (string, error) {
	if configKey == nil || len(configKey.Bytes) < 32 {
		return "", fmt.Errorf("config key too short: %w", keysafe.ErrUnsupported)
	}
	iv := make([]byte, aes.BlockSize)
	if _, err := io.ReadFull(rand, iv); err != nil {
		return "", err
	}
	ct, err := keysafe.CBCSeal(configKey.Bytes[:32], iv, vmxText)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha1.New, configKey.Bytes)
	m.Write(vmxText)
	out := append(append(iv, ct...), m.Sum(nil)...)
	return base64.StdEncoding.EncodeToString(out), nil
}

// DataFileKey parses the dataFileKey setting of decrypted settings: the key
// of the VM's encrypted data files (.nvram, .vswp, .vmsn, .vmem). It
// returns (nil, nil) when the setting is absent.
func (f *File) DataFileKey() (*keysafe.Key, error) {
	v, ok := f.Get(KeyDataFileKey)
	if !ok {
		return nil, nil
	}
	k, err := keysafe.ParseKeyDict(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyDataFileKey, err)
	}
	return k, nil
}
