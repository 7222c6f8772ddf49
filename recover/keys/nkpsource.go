package keys

import (
	"context"
	"fmt"
	"os"

	"github.com/vmcrypt/vmcrypt/nkp"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// NKPBackup is a Source that opens Native Key Provider key ids with the
// KDK of an NKP backup (.p12). The backup is opened (password checked, KDK
// decrypted) when the source is made, so a wrong password fails at once.
//
// KEK(provider, keyID) ignores the provider (NKP key ids name their KDK
// themselves, and providers get renamed) and:
//   - a keyID that is not base64 of a 105-byte NKP key id: a
//     *keysafe.KeyNotFoundError (this backup cannot hold it);
//   - a key id of another KDK: a *keysafe.KeyNotFoundError whose Hint names
//     the KDK id the VM needs and the one this backup holds;
//   - the right KDK id but a GCM tag that fails: keysafe.ErrCorrupt. The
//     backup's password was already proven by its MAC, so the failure is a
//     damaged key id (or another KDK that reuses the id), not a wrong key.
type NKPBackup struct {
	name string
	kdks []nkp.KDK
}

// OpenNKPBackup reads and opens the backup at path with password (UTF-8;
// empty allowed). Errors: keysafe.ErrWrongKey for a wrong password,
// keysafe.ErrCorrupt for a damaged file, keysafe.ErrUnsupported for
// unknown algorithms or iteration counts above nkp.MaxIterations.
func OpenNKPBackup(path string, password []byte) (*NKPBackup, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("NKP backup: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("NKP backup: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("NKP backup %s is not a regular file: %w", path, keysafe.ErrCorrupt)
	}
	b, err := nkp.Parse(f, fi.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	kdks, err := b.Open(password)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return NewNKPSource("NKP backup "+path, kdks), nil // the path as given: two backup.p12 files stay apart
}

// NewNKPSource returns a source over KDKs already read (name is for
// reports).
func NewNKPSource(name string, kdks []nkp.KDK) *NKPBackup {
	return &NKPBackup{name: name, kdks: append([]nkp.KDK(nil), kdks...)}
}

// Name says where the keys came from.
func (s *NKPBackup) Name() string { return s.name }

// KDKs returns the KDKs of the backup (ids and provider names; the keys
// are secret).
func (s *NKPBackup) KDKs() []nkp.KDK { return s.kdks }

// KDKIDs returns the ids of the backup's KDKs.
func (s *NKPBackup) KDKIDs() []nkp.UUID {
	ids := make([]nkp.UUID, len(s.kdks))
	for i, k := range s.kdks {
		ids[i] = k.ID
	}
	return ids
}

// KEK unwraps the KEK that an NKP key id carries.
func (s *NKPBackup) KEK(_ context.Context, provider, keyID string) ([]byte, error) {
	kid, err := nkp.ParseKeyIDString(keyID)
	if err != nil {
		return nil, &keysafe.KeyNotFoundError{Provider: provider, KeyID: keyID}
	}
	for i := range s.kdks {
		if s.kdks[i].ID != kid.KDKID {
			continue
		}
		kek, err := s.kdks[i].Unwrap(kid)
		if err != nil {
			return nil, err // the Resolver names the source
		}
		return kek, nil
	}
	have := "no KDK"
	if len(s.kdks) > 0 {
		have = "KDK " + s.kdks[0].ID.String()
	}
	return nil, &keysafe.KeyNotFoundError{Provider: provider, KeyID: keyID,
		Hint: fmt.Sprintf("needs the NKP backup of KDK %s; %s holds %s", kid.KDKID, s.name, have)}
}
