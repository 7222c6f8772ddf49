package nkp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Key id layout (docs/formats.md §10; layout PUBLIC, GCM wrapping MODEL).
const (
	// KeyIDSize is the size of an NKP key id.
	KeyIDSize = 105
	// KEKSize is the size of the key a key id wraps (AES-256).
	KEKSize = 32
	// DefaultParam is the trailing u32 seen in real key ids.
	DefaultParam = 100000

	keyIDVersion   = 1
	keyIDHeaderLen = 33
	offKDKID       = 0x07
	offLens        = 0x17
	offCipherName  = 0x21
	offIV          = 0x29 // the AAD is bytes 0x00..0x28, everything before the IV
	gcmIVSize      = 12
	gcmTagSize     = 16
	paramSize      = 4
	maxKeyIDText   = 4 * ((KeyIDSize + 2) / 3) // b64 of 105 bytes: 140 chars
)

var (
	keyIDConst  = [4]byte{0x02, 0x01, 0x00, 0x21}
	cipherName  = [8]byte{'A', 'E', 'S', '-', '2', '5', '6', 0}
	keyIDLength = [5]uint16{8, gcmIVSize, gcmTagSize, KEKSize, paramSize}
)

// KeyID is a parsed 105-byte NKP key id:
//
//	0x00 u8 version = 1, 0x01 u16 headerLen = 33, 0x03 02 01 00 21,
//	0x07 KDK id (16), 0x17 u16 lengths 8, 12, 16, 32, 4, 0x21 "AES-256\0",
//	0x29 IV(12) || wrapped KEK(32) || tag(16) || u32 param
//
// All integers are little-endian.
type KeyID struct {
	KDKID   UUID
	IV      [gcmIVSize]byte
	Wrapped [KEKSize]byte
	Tag     [gcmTagSize]byte
	Param   uint32
}

// ParseKeyID parses the raw 105 bytes of a key id. Anything else (other
// size, version, constants or lengths) is keysafe.ErrCorrupt: it is not an
// NKP key id.
func ParseKeyID(b []byte) (*KeyID, error) {
	if len(b) != KeyIDSize {
		return nil, fmt.Errorf("NKP key id: %d bytes, want %d: %w", len(b), KeyIDSize, keysafe.ErrCorrupt)
	}
	if b[0] != keyIDVersion {
		return nil, fmt.Errorf("NKP key id: version %d, want %d: %w", b[0], keyIDVersion, keysafe.ErrCorrupt)
	}
	if h := binary.LittleEndian.Uint16(b[1:]); h != keyIDHeaderLen {
		return nil, fmt.Errorf("NKP key id: header length %d, want %d: %w", h, keyIDHeaderLen, keysafe.ErrCorrupt)
	}
	if [4]byte(b[3:7]) != keyIDConst {
		return nil, fmt.Errorf("NKP key id: constants % x at offset 3, want % x: %w", b[3:7], keyIDConst, keysafe.ErrCorrupt)
	}
	for i, want := range keyIDLength {
		if got := binary.LittleEndian.Uint16(b[offLens+2*i:]); got != want {
			return nil, fmt.Errorf("NKP key id: length field %d at offset %#x is %d, want %d: %w", i, offLens+2*i, got, want, keysafe.ErrCorrupt)
		}
	}
	if [8]byte(b[offCipherName:offIV]) != cipherName {
		return nil, fmt.Errorf("NKP key id: cipher %q, want \"AES-256\": %w", b[offCipherName:offIV], keysafe.ErrCorrupt)
	}
	k := &KeyID{KDKID: UUID(b[offKDKID:offLens])}
	p := b[offIV:]
	copy(k.IV[:], p)
	copy(k.Wrapped[:], p[gcmIVSize:])
	copy(k.Tag[:], p[gcmIVSize+KEKSize:])
	k.Param = binary.LittleEndian.Uint32(p[gcmIVSize+KEKSize+gcmTagSize:])
	return k, nil
}

// ParseKeyIDString parses a key id as it appears in an fqid locator once
// unescaped: standard base64 of the 105 bytes (unpadded accepted too).
func ParseKeyIDString(s string) (*KeyID, error) {
	if len(s) > maxKeyIDText+2 {
		return nil, fmt.Errorf("NKP key id: %d characters, too long: %w", len(s), keysafe.ErrCorrupt)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("NKP key id: not base64: %w", keysafe.ErrCorrupt)
		}
	}
	return ParseKeyID(b)
}

// Bytes returns the 105-byte encoding.
func (k *KeyID) Bytes() []byte {
	b := make([]byte, 0, KeyIDSize)
	b = append(b, keyIDVersion)
	b = binary.LittleEndian.AppendUint16(b, keyIDHeaderLen)
	b = append(b, keyIDConst[:]...)
	b = append(b, k.KDKID[:]...)
	for _, l := range keyIDLength {
		b = binary.LittleEndian.AppendUint16(b, l)
	}
	b = append(b, cipherName[:]...)
	b = append(b, k.IV[:]...)
	b = append(b, k.Wrapped[:]...)
	b = append(b, k.Tag[:]...)
	return binary.LittleEndian.AppendUint32(b, k.Param)
}

// String returns the key id as standard base64 (as in an fqid locator
// before URL escaping).
func (k *KeyID) String() string { return base64.StdEncoding.EncodeToString(k.Bytes()) }

// Unwrap opens the KEK of key id k with this KDK. A key id of another KDK
// is a *keysafe.KeyNotFoundError whose Hint names the KDK it needs. A GCM
// tag that fails under the right KDK id is keysafe.ErrCorrupt: the KDK id
// matches, so the key id (or a KDK reusing the id) is damaged; a wrong
// password cannot reach this point because the backup's MAC was checked.
func (kdk *KDK) Unwrap(k *KeyID) ([]byte, error) {
	if k.KDKID != kdk.ID {
		return nil, &keysafe.KeyNotFoundError{Provider: kdk.Provider, KeyID: k.String(),
			Hint: "needs the NKP backup of KDK " + k.KDKID.String() + ", this backup holds KDK " + kdk.ID.String()}
	}
	g, err := newGCM(kdk.Key)
	if err != nil {
		return nil, err
	}
	b := k.Bytes()
	sealed := b[offIV+gcmIVSize : offIV+gcmIVSize+KEKSize+gcmTagSize]
	kek, err := g.Open(nil, k.IV[:], sealed, b[:offIV])
	if err != nil {
		return nil, fmt.Errorf("NKP key id: the GCM tag does not verify under KDK %s (damaged key id or KDK): %w", kdk.ID, keysafe.ErrCorrupt)
	}
	return kek, nil
}

// Wrap makes a new key id holding kek (32 bytes) under this KDK, with a
// random IV and param DefaultParam.
func (kdk *KDK) Wrap(kek []byte) (*KeyID, error) { return kdk.WrapRand(kek, rand.Reader) }

// WrapRand is Wrap with the 12-byte GCM IV read from rnd (fixtures pass a
// seeded stream to get the same key id every run; never reuse an IV with
// the same KDK otherwise).
func (kdk *KDK) WrapRand(kek []byte, rnd io.Reader) (*KeyID, error) {
	if len(kek) != KEKSize {
		return nil, fmt.Errorf("NKP key id: KEK of %d bytes, want %d", len(kek), KEKSize)
	}
	k := &KeyID{KDKID: kdk.ID, Param: DefaultParam}
	if _, err := io.ReadFull(rnd, k.IV[:]); err != nil {
		return nil, err
	}
	g, err := newGCM(kdk.Key)
	if err != nil {
		return nil, err
	}
	b := k.Bytes()
	sealed := g.Seal(nil, k.IV[:], kek, b[:offIV])
	copy(k.Wrapped[:], sealed[:KEKSize])
	copy(k.Tag[:], sealed[KEKSize:])
	return k, nil
}

// NewKDK makes a new random KDK with a random (version 4) KDK id.
func NewKDK(provider string) (*KDK, error) {
	k := &KDK{Key: make([]byte, KDKSize), Provider: provider}
	if _, err := rand.Read(k.Key); err != nil {
		return nil, err
	}
	if _, err := rand.Read(k.ID[:]); err != nil {
		return nil, err
	}
	k.ID[6] = k.ID[6]&0x0f | 0x40
	k.ID[8] = k.ID[8]&0x3f | 0x80
	return k, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != KDKSize {
		return nil, fmt.Errorf("NKP: KDK of %d bytes, want %d: %w", len(key), KDKSize, keysafe.ErrCorrupt)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
