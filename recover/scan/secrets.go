package scan

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/vmcrypt/vmcrypt/nkp"
)

// maxSecretFileSize caps the key-material candidates read (.p12, .pfx,
// .json): NKP backups and KEK files are a few KiB.
const maxSecretFileSize = 1 << 20

// KeyMaterial is a file of the scanned tree that holds keys: an NKP backup
// (a PKCS#12 holding a KDK: with its password, it opens every VM of that
// key provider) or a KEK file (keys in the clear). Found beside the VMs,
// it undoes their encryption for anyone holding the copy.
type KeyMaterial struct {
	Path   string   `json:"path"`
	Kind   string   `json:"kind"` // "NKP backup" or "KEK file"
	Why    string   `json:"why"`
	KDKIDs []string `json:"kdkIds,omitempty"`
	KeyIDs []string `json:"keyIds,omitempty"`
}

// isSecretCandidate says whether a file name may hold key material.
func isSecretCandidate(name string) bool {
	n := strings.ToLower(name)
	return strings.HasSuffix(n, ".p12") || strings.HasSuffix(n, ".pfx") || strings.HasSuffix(n, ".json")
}

// scanSecret reads a candidate without any password: the KDK ids of an
// NKP backup are in its bag attributes, a KEK file is plain JSON. ok is
// false when the file holds no keys.
func scanSecret(path, rel string) (KeyMaterial, bool) {
	fi, err := os.Stat(path)
	if err != nil || fi.Size() > maxSecretFileSize || fi.Size() == 0 {
		return KeyMaterial{}, false
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return KeyMaterial{}, false
	}
	km := KeyMaterial{Path: rel}
	if strings.HasSuffix(strings.ToLower(path), ".json") {
		var list []struct {
			Provider string  `json:"provider"`
			KeyID    string  `json:"keyId"`
			Key      *string `json:"key"`
		}
		if err := json.Unmarshal(b, &list); err != nil {
			list = list[:0]
			var one struct {
				Provider string  `json:"provider"`
				KeyID    string  `json:"keyId"`
				Key      *string `json:"key"`
			}
			if json.Unmarshal(b, &one) != nil {
				return km, false
			}
			list = append(list, one)
		}
		for _, e := range list {
			if e.KeyID != "" && e.Key != nil {
				km.KeyIDs = append(km.KeyIDs, e.KeyID)
			}
		}
		if len(km.KeyIDs) == 0 {
			return km, false
		}
		km.Kind = "KEK file"
		km.Why = fmt.Sprintf("%d key-provider KEK(s) in the clear: anyone with this copy can open the VMs they lock", len(km.KeyIDs))
		return km, true
	}
	bk, err := nkp.ParseBytes(b)
	if err != nil {
		return km, false
	}
	keys := 0
	for _, c := range bk.Containers {
		for _, bag := range c.Bags {
			if bag.Key {
				keys++
				if bag.FriendlyName != "" {
					km.KDKIDs = append(km.KDKIDs, bag.FriendlyName)
				}
			}
		}
		if c.Type == "encryptedData" {
			keys++
		}
	}
	if keys == 0 {
		return km, false
	}
	km.Kind = "NKP backup"
	km.Why = "a PKCS#12 key store (KDK of a Native Key Provider): with its password, it opens every VM of that provider"
	return km, true
}
