package keys

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Limits on KEK files (docs/formats.md §11).
const (
	// MaxKEKFileSize is the largest KEK JSON file read.
	MaxKEKFileSize = 1 << 20
	// MaxKEKEntries caps the entries of a JSON file or the files of a
	// KEK folder.
	MaxKEKEntries = 4096
	// KEKLen is the size of a key-provider KEK (AES-256).
	KEKLen = 32
)

// KEKFile is a Source of key-provider KEKs read from a KEK file: a JSON
// object or list of {"provider", "keyId", "key"} entries, or a folder of raw
// 32-byte files named by key id (docs/formats.md §11).
//
// Matching: the provider compares case-insensitively, and an entry without
// a provider (every file of a folder) matches any provider. The key id
// compares exactly, or case-insensitively when both are UUIDs; a folder
// file name may also be the URL-escaped key id (as in a key locator), since
// a base64 key id can hold "/".
type KEKFile struct {
	name    string
	entries []kekEntry
}

type kekEntry struct {
	provider, keyID string
	key             []byte
	where           string // for errors: "entry 3", "file X"
}

type kekJSON struct {
	Provider string  `json:"provider"`
	KeyID    string  `json:"keyId"`
	Key      *string `json:"key"`
}

// OpenKEKFile reads a KEK JSON file or a KEK folder. Damaged input (bad
// JSON, a missing field, a key that is not base64 of 32 bytes, a folder
// file that is not 32 bytes, conflicting duplicates) is keysafe.ErrCorrupt
// naming the entry; more than MaxKEKFileSize or MaxKEKEntries is
// keysafe.ErrUnsupported.
func OpenKEKFile(path string) (*KEKFile, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("KEK file: %w", err)
	}
	if fi.IsDir() {
		return openKEKDir(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("KEK file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxKEKFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("KEK file %s: %w", path, err)
	}
	if len(data) > MaxKEKFileSize {
		return nil, fmt.Errorf("KEK file %s is larger than %d bytes: %w", path, MaxKEKFileSize, keysafe.ErrUnsupported)
	}
	return ParseKEKJSON(path, data)
}

// ParseKEKJSON reads KEK JSON (one object or a list of objects) from data;
// name is the file name used in Name() and errors.
func ParseKEKJSON(name string, data []byte) (*KEKFile, error) {
	if len(data) > MaxKEKFileSize {
		return nil, fmt.Errorf("KEK file %s is larger than %d bytes: %w", name, MaxKEKFileSize, keysafe.ErrUnsupported)
	}
	if bytes.HasPrefix(data, []byte("\xff\xfe")) || bytes.HasPrefix(data, []byte("\xfe\xff")) {
		return nil, fmt.Errorf("KEK file %s is UTF-16 text (PowerShell's default): save it as UTF-8: %w", name, keysafe.ErrCorrupt)
	}
	trimmed := bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // a BOM some editors add
	trimmed = bytes.TrimLeft(trimmed, " \t\r\n")
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var list []kekJSON
	switch {
	case len(trimmed) > 0 && trimmed[0] == '{':
		var one kekJSON
		if err := dec.Decode(&one); err != nil {
			return nil, fmt.Errorf("KEK file %s: %v: %w", name, err, keysafe.ErrCorrupt)
		}
		list = []kekJSON{one}
	case len(trimmed) > 0 && trimmed[0] == '[':
		// MaxKEKFileSize bounds the decoding work; the count is checked after.
		if err := dec.Decode(&list); err != nil {
			return nil, fmt.Errorf("KEK file %s: %v: %w", name, err, keysafe.ErrCorrupt)
		}
	default:
		return nil, fmt.Errorf("KEK file %s: not a JSON object or list: %w", name, keysafe.ErrCorrupt)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("KEK file %s: data after the JSON value: %w", name, keysafe.ErrCorrupt)
	}
	if len(list) > MaxKEKEntries {
		return nil, fmt.Errorf("KEK file %s has %d entries, more than %d: %w", name, len(list), MaxKEKEntries, keysafe.ErrUnsupported)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("KEK file %s holds no key: %w", name, keysafe.ErrCorrupt)
	}
	kf := &KEKFile{name: "KEK file " + name}
	for i, e := range list {
		where := fmt.Sprintf("entry %d", i+1)
		if e.KeyID != "" {
			where += fmt.Sprintf(" (key id %q)", e.KeyID)
		}
		if e.KeyID == "" {
			return nil, fmt.Errorf("KEK file %s: %s has no keyId: %w", name, where, keysafe.ErrCorrupt)
		}
		if e.Key == nil {
			return nil, fmt.Errorf("KEK file %s: %s has no key: %w", name, where, keysafe.ErrCorrupt)
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(*e.Key))
		if err != nil {
			return nil, fmt.Errorf("KEK file %s: %s: key is not base64: %w", name, where, keysafe.ErrCorrupt)
		}
		if len(key) != KEKLen {
			return nil, fmt.Errorf("KEK file %s: %s: key is %d bytes, want %d: %w", name, where, len(key), KEKLen, keysafe.ErrCorrupt)
		}
		if err := kf.add(kekEntry{provider: e.Provider, keyID: e.KeyID, key: key, where: where}); err != nil {
			return nil, fmt.Errorf("KEK file %s: %w", name, err)
		}
	}
	return kf, nil
}

func openKEKDir(dir string) (*KEKFile, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("KEK folder: %w", err)
	}
	defer d.Close()
	ents, err := d.ReadDir(MaxKEKEntries + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("KEK folder %s: %w", dir, err)
	}
	if len(ents) > MaxKEKEntries {
		return nil, fmt.Errorf("KEK folder %s has more than %d files: %w", dir, MaxKEKEntries, keysafe.ErrUnsupported)
	}
	kf := &KEKFile{name: "KEK folder " + dir}
	for _, de := range ents {
		name := de.Name()
		if strings.HasPrefix(name, ".") {
			continue // .DS_Store, editor files
		}
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("KEK folder %s: %w", dir, err)
		}
		if fi.IsDir() {
			continue
		}
		if fi.Size() != KEKLen {
			return nil, fmt.Errorf("KEK folder %s: file %q is %d bytes, want a raw %d-byte key: %w", dir, name, fi.Size(), KEKLen, keysafe.ErrCorrupt)
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("KEK folder %s: %w", dir, err)
		}
		key := make([]byte, KEKLen+1)
		n, err := io.ReadFull(f, key)
		f.Close()
		if n != KEKLen || err != io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("KEK folder %s: file %q changed size while read: %w", dir, name, keysafe.ErrCorrupt)
		}
		if err := kf.add(kekEntry{keyID: name, key: key[:KEKLen], where: fmt.Sprintf("file %q", name)}); err != nil {
			return nil, fmt.Errorf("KEK folder %s: %w", dir, err)
		}
	}
	if len(kf.entries) == 0 {
		return nil, fmt.Errorf("KEK folder %s holds no key file: %w", dir, keysafe.ErrCorrupt)
	}
	return kf, nil
}

// add appends e, refusing an entry that names the same key id as an
// earlier one, for a provider they share (an empty provider is every
// provider), with a different key.
func (kf *KEKFile) add(e kekEntry) error {
	for _, o := range kf.entries {
		overlap := o.provider == "" || e.provider == "" || strings.EqualFold(o.provider, e.provider)
		if overlap && sameKeyID(o.canonicalID(), e.canonicalID()) && !bytes.Equal(o.key, e.key) {
			return fmt.Errorf("%s and %s name the same key with different bytes: %w", o.where, e.where, keysafe.ErrCorrupt)
		}
	}
	kf.entries = append(kf.entries, e)
	return nil
}

// Name says where the keys came from.
func (kf *KEKFile) Name() string { return kf.name }

// Len returns the number of keys held.
func (kf *KEKFile) Len() int { return len(kf.entries) }

// KEK returns a copy of the key for (provider, keyID), or a
// *keysafe.KeyNotFoundError.
func (kf *KEKFile) KEK(_ context.Context, provider, keyID string) ([]byte, error) {
	var other string
	for _, e := range kf.entries {
		if !sameKeyID(e.keyID, keyID) && !folderNameMatches(e, keyID) {
			continue
		}
		if e.provider == "" || strings.EqualFold(e.provider, provider) {
			return append([]byte(nil), e.key...), nil
		}
		other = e.provider
	}
	nf := &keysafe.KeyNotFoundError{Provider: provider, KeyID: keyID}
	if other != "" {
		nf.Hint = fmt.Sprintf("%s has this key id for provider %q", kf.name, other)
	}
	return nil, nf
}

// folderNameMatches accepts a folder file named by the URL-escaped key id.
func folderNameMatches(e kekEntry, keyID string) bool {
	if !strings.HasPrefix(e.where, "file ") || !strings.Contains(e.keyID, "%") {
		return false
	}
	u, err := url.PathUnescape(e.keyID)
	return err == nil && u == keyID
}

// canonicalID is the key id an entry answers to: a key file's name
// unescaped (a key id with '/' or '+' is stored as %2F, %2B), else the id.
func (e kekEntry) canonicalID() string {
	if strings.HasPrefix(e.where, "file ") && strings.Contains(e.keyID, "%") {
		if u, err := url.PathUnescape(e.keyID); err == nil {
			return u
		}
	}
	return e.keyID
}

func sameKeyID(a, b string) bool {
	return a == b || (isUUID(a) && isUUID(b) && strings.EqualFold(a, b))
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
