package nkp

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/des"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/asn1"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Limits on untrusted backups. A keystore holding one KDK is under 1 KiB.
const (
	// MaxBackupSize is the largest backup file read.
	MaxBackupSize = 1 << 20
	// MaxIterations caps every PBKDF2 / PKCS#12 KDF iteration count; larger
	// counts are refused (ErrUnsupported) before any KDF work.
	MaxIterations = 10_000_000
	// MaxTotalIterations caps the KDF work of a whole backup, counted in
	// iterations times the passes each derivation needs: the MAC (twice,
	// for the two forms of an empty password), every encrypted container
	// and key entry (PBKDF2: one pass per hash output the key needs, two
	// for AES-256 with HMAC-SHA1; the PKCS#12 KDF of a 3DES entry: two
	// for its key, one for its IV). Each count is below
	// MaxIterations, but hundreds of entries at that cap would keep Open
	// busy for an hour; a larger total is refused (ErrUnsupported) before
	// any KDF work.
	MaxTotalIterations = 4 * MaxIterations
	// MaxContainers caps the ContentInfos of the AuthenticatedSafe.
	MaxContainers = 64
	// MaxBags caps the SafeBags of the whole file.
	MaxBags = 256
	// MaxAttributes caps the attributes of one bag.
	MaxAttributes = 32
	maxNesting    = 8   // constructed OCTET STRING depth
	maxPieces     = 256 // pieces of one constructed OCTET STRING
	maxSaltSize   = 1024
)

var (
	oidData             = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidEncryptedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 6}
	oidKeyBag           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 1}
	oidShroudedKeyBag   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidCertBag          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 3}
	oidCRLBag           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 4}
	oidSecretBag        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 5}
	oidSafeContentsBag  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 6}
	oidFriendlyName     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 20}
	oidLocalKeyID       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 21}
	oidPBES2            = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidPBEWithSHA3DES   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 3}
	oidPBEWithSHARC240  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 1, 6}
	oidAESArc           = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1}
	oidAES256CBC        = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidHMACWithSHA256   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidSHA256           = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidPBMAC1           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}
	oidX520Name         = asn1.ObjectIdentifier{2, 5, 4, 41}
	oidProviderNameAttr = oidX520Name // MODEL: where vmcrypt keeps the provider name
)

type hashAlg struct {
	name string
	oid  asn1.ObjectIdentifier // digest OID (MAC) or HMAC OID (PBKDF2 prf)
	new  func() hash.Hash
}

var digests = []hashAlg{
	{"SHA-1", asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}, sha1.New},
	{"SHA-224", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 4}, sha256.New224},
	{"SHA-256", oidSHA256, sha256.New},
	{"SHA-384", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}, sha512.New384},
	{"SHA-512", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}, sha512.New},
	{"SHA-512/224", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 5}, sha512.New512_224},
	{"SHA-512/256", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 6}, sha512.New512_256},
}

var prfs = []hashAlg{
	{"HMAC-SHA1", asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}, sha1.New},
	{"HMAC-SHA224", asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}, sha256.New224},
	{"HMAC-SHA256", oidHMACWithSHA256, sha256.New},
	{"HMAC-SHA384", asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}, sha512.New384},
	{"HMAC-SHA512", asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}, sha512.New},
}

var aesCBC = []struct {
	name   string
	oid    asn1.ObjectIdentifier
	keyLen int
}{
	{"AES-128-CBC", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}, 16},
	{"AES-192-CBC", asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}, 24},
	{"AES-256-CBC", oidAES256CBC, 32},
}

// Backup is the structure of an NKP backup as read without the password.
// Its exported fields are plain data (no secrets), ready for --json.
type Backup struct {
	// MAC describes the password MAC; nil when the file has none.
	MAC *MACInfo `json:"mac,omitempty"`
	// Containers are the AuthenticatedSafe's ContentInfos, in file order.
	Containers []Container `json:"containers"`

	authSafe []byte // the bytes the MAC covers
	mac      *macData
}

// MACInfo describes a PKCS#12 MAC.
type MACInfo struct {
	Algorithm  string `json:"algorithm"` // e.g. "HMAC-SHA-256"
	Iterations int    `json:"iterations"`
	SaltSize   int    `json:"saltSize"`
}

// Container is one ContentInfo of the AuthenticatedSafe.
type Container struct {
	// Type is "data" (bags readable without the password) or
	// "encryptedData" (bags readable only after Open).
	Type string `json:"type"`
	// Encryption describes an encryptedData container's cipher.
	Encryption *PBEInfo `json:"encryption,omitempty"`
	// Bags of a "data" container; nil for "encryptedData".
	Bags []Bag `json:"bags,omitempty"`

	pbe        *pbe
	ciphertext []byte
}

// Bag is one SafeBag.
type Bag struct {
	// Type: "secretBag", "keyBag", "pkcs8ShroudedKeyBag", "certBag",
	// "crlBag", "safeContentsBag" or the bag OID.
	Type string `json:"type"`
	// FriendlyName is the alias; for a KDK, its id as a UUID string.
	FriendlyName string `json:"friendlyName,omitempty"`
	// LocalKeyID is the localKeyID attribute (Java writes "Time <ms>").
	LocalKeyID []byte `json:"localKeyId,omitempty"`
	// Provider is the key provider's name when the backup stores it (MODEL:
	// an X.520 name attribute, 2.5.4.41, which vmcrypt writes).
	Provider string `json:"provider,omitempty"`
	// Encryption describes a shrouded key's cipher; nil for a plain key.
	Encryption *PBEInfo `json:"encryption,omitempty"`
	// Key is true for a bag that holds a key vmcrypt can read (a secret,
	// plain or shrouded key bag).
	Key bool `json:"key"`

	pbe    *pbe   // shrouded key
	sealed []byte // encrypted PrivateKeyInfo
	plain  []byte // PrivateKeyInfo of a plain key bag
}

// PBEInfo describes password-based encryption.
type PBEInfo struct {
	Scheme     string `json:"scheme"` // "PBES2" or "pbeWithSHAAnd3-KeyTripleDES-CBC"
	KDF        string `json:"kdf"`    // "PBKDF2-HMAC-SHA256", "PKCS12-KDF-SHA1"
	Cipher     string `json:"cipher"` // "AES-256-CBC", "DES-EDE3-CBC"
	Iterations int    `json:"iterations"`
	SaltSize   int    `json:"saltSize"`
}

type macData struct {
	h          hashAlg
	value      []byte
	salt       []byte
	iterations int
}

type pbe struct {
	info   PBEInfo
	pbes2  bool
	prf    func() hash.Hash
	keyLen int
	salt   []byte
	iv     []byte
}

// Parse reads the structure of a backup of size bytes from r without the
// password. It fails with ErrCorrupt for damaged structure and
// ErrUnsupported for files above MaxBackupSize, unknown versions or
// algorithms of the MAC, and iteration counts above MaxIterations. Unknown
// bag types and algorithms of bags are recorded, not refused: Open says
// whether a KDK can be read.
func Parse(r io.ReaderAt, size int64) (*Backup, error) {
	if size < 0 {
		return nil, corruptf("file", "negative size")
	}
	if size > MaxBackupSize {
		return nil, unsupportedf("file", "%d bytes, larger than the %d-byte limit for a key backup", size, MaxBackupSize)
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(r, 0, size), buf); err != nil {
		return nil, fmt.Errorf("NKP backup: reading: %w", err)
	}
	return ParseBytes(buf)
}

// ParseBytes is Parse over bytes in memory (at most MaxBackupSize).
func ParseBytes(buf []byte) (*Backup, error) {
	if len(buf) > MaxBackupSize {
		return nil, unsupportedf("file", "%d bytes, larger than the %d-byte limit for a key backup", len(buf), MaxBackupSize)
	}
	if len(buf) == 0 {
		return nil, corruptf("file", "empty")
	}
	pfx, err := whole(buf, "PFX")
	if err != nil {
		return nil, err
	}
	ver, big, rest, err := smallInt(pfx, "PFX version")
	if err != nil {
		return nil, err
	}
	if big || ver != 3 {
		return nil, unsupportedf("PFX version", "version %d, want 3", ver)
	}
	ci, rest, err := sequence(rest, "authSafe")
	if err != nil {
		return nil, err
	}
	ct, content, err := oid(ci, "authSafe contentType")
	if err != nil {
		return nil, err
	}
	if !ct.Equal(oidData) {
		return nil, unsupportedf("authSafe contentType", "%v (public-key integrity mode), want pkcs7-data", ct)
	}
	explicit, after, err := expect(content, "authSafe content", true, 0, true)
	if err != nil {
		return nil, err
	}
	if err := end(after, "authSafe"); err != nil {
		return nil, err
	}
	authSafe, after, err := octets(explicit.Bytes, "authSafe content")
	if err != nil {
		return nil, err
	}
	if err := end(after, "authSafe content"); err != nil {
		return nil, err
	}
	b := &Backup{authSafe: authSafe}
	if len(rest) > 0 {
		if b.mac, rest, err = parseMacData(rest); err != nil {
			return nil, err
		}
		b.MAC = &MACInfo{Algorithm: "HMAC-" + b.mac.h.name, Iterations: b.mac.iterations, SaltSize: len(b.mac.salt)}
	}
	if err := end(rest, "PFX"); err != nil {
		return nil, err
	}
	if err := b.parseAuthSafe(); err != nil {
		return nil, err
	}
	if w := b.work(); w > MaxTotalIterations {
		return nil, unsupportedf("file", "the MAC and encrypted entries ask for %d KDF iterations in total, more than the %d cap", w, MaxTotalIterations)
	}
	return b, nil
}

// work returns the KDF iterations Open spends on what Parse has seen: the
// MAC, encrypted containers and key entries outside them.
func (b *Backup) work() int {
	w := 0
	if b.mac != nil {
		w += 2 * b.mac.iterations // bmpCandidates: up to two forms
	}
	for _, c := range b.Containers {
		w += c.pbe.work()
		w += bagsWork(c.Bags)
	}
	return w
}

// bagsWork returns the KDF iterations needed to open the key entries of bags.
func bagsWork(bags []Bag) int {
	w := 0
	for i := range bags {
		w += bags[i].pbe.work()
	}
	return w
}

// work returns the KDF work of one decryption (0 for nil): the iterations
// times the passes, PBKDF2 one per hash output of the key, the PKCS#12
// KDF of 3DES two for the 24-byte key and one for the IV (SHA-1).
func (p *pbe) work() int {
	switch {
	case p == nil:
		return 0
	case p.pbes2:
		size := p.prf().Size()
		return p.info.Iterations * ((p.keyLen + size - 1) / size)
	}
	return 3 * p.info.Iterations
}

func parseMacData(b []byte) (*macData, []byte, error) {
	body, rest, err := sequence(b, "macData")
	if err != nil {
		return nil, nil, err
	}
	di, body, err := sequence(body, "macData digest")
	if err != nil {
		return nil, nil, err
	}
	alg, params, di, err := algorithm(di, "macData digestAlgorithm")
	if err != nil {
		return nil, nil, err
	}
	if err := nullParams(params, "macData digestAlgorithm"); err != nil {
		return nil, nil, err
	}
	m := &macData{iterations: 1}
	if alg.Equal(oidPBMAC1) {
		return nil, nil, unsupportedf("macData", "PBMAC1 (RFC 9579) is not supported")
	}
	found := false
	for _, d := range digests {
		if d.oid.Equal(alg) {
			m.h, found = d, true
		}
	}
	if !found {
		return nil, nil, unsupportedf("macData digestAlgorithm", "unknown digest %v", alg)
	}
	if m.value, di, err = octets(di, "macData digest value"); err != nil {
		return nil, nil, err
	}
	if err := end(di, "macData digest"); err != nil {
		return nil, nil, err
	}
	if len(m.value) != m.h.new().Size() {
		return nil, nil, corruptf("macData digest value", "%d bytes, want %d", len(m.value), m.h.new().Size())
	}
	if m.salt, body, err = octets(body, "macData salt"); err != nil {
		return nil, nil, err
	}
	if len(m.salt) > maxSaltSize {
		return nil, nil, unsupportedf("macData salt", "%d bytes, more than %d", len(m.salt), maxSaltSize)
	}
	if len(body) > 0 {
		it, big, after, err := smallInt(body, "macData iterations")
		if err != nil {
			return nil, nil, err
		}
		if err := checkIterations(it, big, "macData iterations"); err != nil {
			return nil, nil, err
		}
		m.iterations, body = it, after
	}
	if err := end(body, "macData"); err != nil {
		return nil, nil, err
	}
	return m, rest, nil
}

// nullParams accepts absent or NULL AlgorithmIdentifier parameters.
func nullParams(p []byte, field string) error {
	if p == nil || bytes.Equal(p, asn1.NullBytes) {
		return nil
	}
	return corruptf(field, "parameters must be NULL or absent")
}

func checkIterations(it int, big bool, field string) error {
	if big || it > MaxIterations {
		return unsupportedf(field, "iteration count above the %d cap", MaxIterations)
	}
	if it < 1 {
		return corruptf(field, "iteration count %d", it)
	}
	return nil
}

func (b *Backup) parseAuthSafe() error {
	list, err := whole(b.authSafe, "AuthenticatedSafe")
	if err != nil {
		return err
	}
	nbags := 0
	for i := 0; len(list) > 0; i++ {
		if i >= MaxContainers {
			return unsupportedf("AuthenticatedSafe", "more than %d ContentInfos", MaxContainers)
		}
		field := fmt.Sprintf("AuthenticatedSafe[%d]", i)
		var ci []byte
		if ci, list, err = sequence(list, field); err != nil {
			return err
		}
		ct, rest, err := oid(ci, field+" contentType")
		if err != nil {
			return err
		}
		explicit, after, err := expect(rest, field+" content", true, 0, true)
		if err != nil {
			return err
		}
		if err := end(after, field); err != nil {
			return err
		}
		var c Container
		switch {
		case ct.Equal(oidData):
			c.Type = "data"
			sc, after, err := octets(explicit.Bytes, field+" content")
			if err != nil {
				return err
			}
			if err := end(after, field+" content"); err != nil {
				return err
			}
			if c.Bags, err = parseSafeContents(sc, field, &nbags); err != nil {
				return err
			}
		case ct.Equal(oidEncryptedData):
			c.Type = "encryptedData"
			if err := c.parseEncryptedData(explicit.Bytes, field); err != nil {
				return err
			}
		default:
			return unsupportedf(field+" contentType", "%v, want pkcs7-data or pkcs7-encryptedData", ct)
		}
		b.Containers = append(b.Containers, c)
	}
	return nil
}

func (c *Container) parseEncryptedData(b []byte, field string) error {
	ed, err := whole(b, field+" EncryptedData")
	if err != nil {
		return err
	}
	_, _, ed, err = smallInt(ed, field+" EncryptedData version")
	if err != nil {
		return err
	}
	eci, ed, err := sequence(ed, field+" EncryptedContentInfo")
	if err != nil {
		return err
	}
	if err := end(ed, field+" EncryptedData"); err != nil {
		return err
	}
	ct, eci, err := oid(eci, field+" EncryptedContentInfo contentType")
	if err != nil {
		return err
	}
	if !ct.Equal(oidData) {
		return corruptf(field+" EncryptedContentInfo contentType", "%v, want pkcs7-data", ct)
	}
	alg, params, eci, err := algorithm(eci, field+" contentEncryptionAlgorithm")
	if err != nil {
		return err
	}
	if c.pbe, err = parsePBE(alg, params, field+" contentEncryptionAlgorithm"); err != nil {
		if !errors.Is(err, keysafe.ErrUnsupported) || errors.Is(err, errCap) {
			return err
		}
		c.Encryption = &PBEInfo{Scheme: alg.String()}
	} else {
		c.Encryption = &c.pbe.info
	}
	// encryptedContent [0] IMPLICIT OCTET STRING (primitive, or constructed in BER).
	rv, eci, err := next(eci, field+" encryptedContent")
	if err != nil {
		return err
	}
	if rv.Class != asn1.ClassContextSpecific || rv.Tag != 0 {
		return corruptf(field+" encryptedContent", "found class %d tag %d, want [0]", rv.Class, rv.Tag)
	}
	if c.ciphertext, err = octetValue(rv, field+" encryptedContent", 0); err != nil {
		return err
	}
	return end(eci, field+" EncryptedContentInfo")
}

// errCap marks cap refusals that must stop Parse even where unknown
// algorithms are only recorded.
var errCap = errors.New("over a cap")

func parseSafeContents(b []byte, field string, nbags *int) ([]Bag, error) {
	list, err := whole(b, field+" SafeContents")
	if err != nil {
		return nil, err
	}
	var bags []Bag
	for i := 0; len(list) > 0; i++ {
		if *nbags >= MaxBags {
			return nil, unsupportedf(field, "more than %d bags", MaxBags)
		}
		*nbags++
		bf := fmt.Sprintf("%s bag[%d]", field, i)
		var sb []byte
		if sb, list, err = sequence(list, bf); err != nil {
			return nil, err
		}
		bag, err := parseBag(sb, bf)
		if err != nil {
			return nil, err
		}
		bags = append(bags, bag)
	}
	return bags, nil
}

func parseBag(sb []byte, field string) (Bag, error) {
	var bag Bag
	id, rest, err := oid(sb, field+" bagId")
	if err != nil {
		return bag, err
	}
	val, rest, err := expect(rest, field+" bagValue", true, 0, true)
	if err != nil {
		return bag, err
	}
	if len(rest) > 0 {
		attrs, after, err := expect(rest, field+" bagAttributes", false, asn1.TagSet, true)
		if err != nil {
			return bag, err
		}
		if err := end(after, field); err != nil {
			return bag, err
		}
		if err := bag.parseAttributes(attrs.Bytes, field); err != nil {
			return bag, err
		}
	}
	switch {
	case id.Equal(oidSecretBag):
		bag.Type = "secretBag"
		sec, err := whole(val.Bytes, field+" SecretBag")
		if err != nil {
			return bag, err
		}
		typ, rest, err := oid(sec, field+" secretTypeId")
		if err != nil {
			return bag, err
		}
		v, after, err := expect(rest, field+" secretValue", true, 0, true)
		if err != nil {
			return bag, err
		}
		if err := end(after, field+" SecretBag"); err != nil {
			return bag, err
		}
		inner, after, err := octets(v.Bytes, field+" secretValue")
		if err != nil {
			return bag, err
		}
		if err := end(after, field+" secretValue"); err != nil {
			return bag, err
		}
		switch {
		case typ.Equal(oidShroudedKeyBag):
			err = bag.parseShrouded(inner, field)
		case typ.Equal(oidKeyBag):
			bag.plain, bag.Key = inner, true
		default:
			bag.Type = "secretBag " + typ.String()
		}
		return bag, err
	case id.Equal(oidKeyBag):
		bag.Type = "keyBag"
		bag.plain, bag.Key = val.Bytes, true
		return bag, nil
	case id.Equal(oidShroudedKeyBag):
		bag.Type = "pkcs8ShroudedKeyBag"
		return bag, bag.parseShrouded(val.Bytes, field)
	case id.Equal(oidCertBag):
		bag.Type = "certBag"
	case id.Equal(oidCRLBag):
		bag.Type = "crlBag"
	case id.Equal(oidSafeContentsBag):
		bag.Type = "safeContentsBag"
	default:
		bag.Type = id.String()
	}
	return bag, nil
}

func (bag *Bag) parseShrouded(b []byte, field string) error {
	epki, err := whole(b, field+" EncryptedPrivateKeyInfo")
	if err != nil {
		return err
	}
	alg, params, rest, err := algorithm(epki, field+" encryptionAlgorithm")
	if err != nil {
		return err
	}
	data, rest, err := octets(rest, field+" encryptedData")
	if err != nil {
		return err
	}
	if err := end(rest, field+" EncryptedPrivateKeyInfo"); err != nil {
		return err
	}
	p, err := parsePBE(alg, params, field+" encryptionAlgorithm")
	if err != nil {
		if !errors.Is(err, keysafe.ErrUnsupported) || errors.Is(err, errCap) {
			return err
		}
		// Recorded; Open refuses it if it is the only key.
		bag.Encryption = &PBEInfo{Scheme: alg.String()}
		bag.Key = true
		bag.sealed = data
		return nil
	}
	bag.pbe, bag.Encryption, bag.sealed, bag.Key = p, &p.info, data, true
	return nil
}

func (bag *Bag) parseAttributes(b []byte, field string) error {
	for i := 0; len(b) > 0; i++ {
		if i >= MaxAttributes {
			return unsupportedf(field, "more than %d attributes", MaxAttributes)
		}
		var a []byte
		var err error
		if a, b, err = sequence(b, field+" attribute"); err != nil {
			return err
		}
		id, rest, err := oid(a, field+" attribute type")
		if err != nil {
			return err
		}
		set, after, err := expect(rest, field+" attribute values", false, asn1.TagSet, true)
		if err != nil {
			return err
		}
		if err := end(after, field+" attribute"); err != nil {
			return err
		}
		if len(set.Bytes) == 0 {
			continue
		}
		v, _, err := next(set.Bytes, field+" attribute value")
		if err != nil {
			return err
		}
		switch {
		case id.Equal(oidFriendlyName):
			if bag.FriendlyName, err = stringValue(v, field+" friendlyName"); err != nil {
				return err
			}
		case id.Equal(oidLocalKeyID):
			if v.Class != asn1.ClassUniversal || v.Tag != asn1.TagOctetString || v.IsCompound {
				return corruptf(field+" localKeyID", "not an OCTET STRING")
			}
			bag.LocalKeyID = v.Bytes
		case id.Equal(oidProviderNameAttr):
			if bag.Provider, err = stringValue(v, field+" provider name"); err != nil {
				return err
			}
		}
	}
	return nil
}

// parsePBE reads the parameters of a supported password-based encryption.
func parsePBE(alg asn1.ObjectIdentifier, params []byte, field string) (*pbe, error) {
	switch {
	case alg.Equal(oidPBEWithSHA3DES):
		body, err := whole(params, field+" parameters")
		if err != nil {
			return nil, err
		}
		salt, body, err := octets(body, field+" salt")
		if err != nil {
			return nil, err
		}
		it, big, body, err := smallInt(body, field+" iterations")
		if err != nil {
			return nil, err
		}
		if err := checkIterations(it, big, field+" iterations"); err != nil {
			return nil, capErr(err)
		}
		if err := end(body, field+" parameters"); err != nil {
			return nil, err
		}
		if len(salt) > maxSaltSize {
			return nil, unsupportedf(field+" salt", "%d bytes, more than %d", len(salt), maxSaltSize)
		}
		return &pbe{salt: salt, keyLen: 24, info: PBEInfo{Scheme: "pbeWithSHAAnd3-KeyTripleDES-CBC", KDF: "PKCS12-KDF-SHA1", Cipher: "DES-EDE3-CBC", Iterations: it, SaltSize: len(salt)}}, nil
	case alg.Equal(oidPBES2):
		body, err := whole(params, field+" PBES2-params")
		if err != nil {
			return nil, err
		}
		kdf, kdfParams, body, err := algorithm(body, field+" keyDerivationFunc")
		if err != nil {
			return nil, err
		}
		enc, encParams, body, err := algorithm(body, field+" encryptionScheme")
		if err != nil {
			return nil, err
		}
		if err := end(body, field+" PBES2-params"); err != nil {
			return nil, err
		}
		if !kdf.Equal(oidPBKDF2) {
			return nil, unsupportedf(field+" keyDerivationFunc", "%v, want PBKDF2", kdf)
		}
		p := &pbe{pbes2: true}
		p.info.Scheme = "PBES2"
		// The cipher first, so that keyLength can be checked against it.
		found := false
		for _, c := range aesCBC {
			if c.oid.Equal(enc) {
				p.keyLen, p.info.Cipher, found = c.keyLen, c.name, true
			}
		}
		if !found {
			return nil, unsupportedf(field+" encryptionScheme", "%v, want AES-CBC", enc)
		}
		iv, after, err := octets(encParams, field+" IV")
		if err != nil {
			return nil, err
		}
		if err := end(after, field+" IV"); err != nil {
			return nil, err
		}
		if len(iv) != aes.BlockSize {
			return nil, corruptf(field+" IV", "%d bytes, want 16", len(iv))
		}
		p.iv = iv
		kp, err := whole(kdfParams, field+" PBKDF2-params")
		if err != nil {
			return nil, err
		}
		if rv, _, err := next(kp, field+" PBKDF2 salt"); err == nil && rv.Tag != asn1.TagOctetString {
			return nil, unsupportedf(field+" PBKDF2 salt", "only a specified OCTET STRING salt is supported")
		}
		if p.salt, kp, err = octets(kp, field+" PBKDF2 salt"); err != nil {
			return nil, err
		}
		if len(p.salt) > maxSaltSize {
			return nil, unsupportedf(field+" PBKDF2 salt", "%d bytes, more than %d", len(p.salt), maxSaltSize)
		}
		it, big, kp, err := smallInt(kp, field+" PBKDF2 iterations")
		if err != nil {
			return nil, err
		}
		if err := checkIterations(it, big, field+" PBKDF2 iterations"); err != nil {
			return nil, capErr(err)
		}
		p.info.Iterations, p.info.SaltSize = it, len(p.salt)
		if rv, _, err := next(kp, "x"); err == nil && rv.Class == asn1.ClassUniversal && rv.Tag == asn1.TagInteger {
			kl, big, after, err := smallInt(kp, field+" PBKDF2 keyLength")
			if err != nil {
				return nil, err
			}
			if big || kl != p.keyLen {
				return nil, corruptf(field+" PBKDF2 keyLength", "%d, but %s needs %d", kl, p.info.Cipher, p.keyLen)
			}
			kp = after
		}
		prf := prfs[0] // DEFAULT hmacWithSHA1
		if len(kp) > 0 {
			var po asn1.ObjectIdentifier
			var pp []byte
			if po, pp, kp, err = algorithm(kp, field+" PBKDF2 prf"); err != nil {
				return nil, err
			}
			if err := nullParams(pp, field+" PBKDF2 prf"); err != nil {
				return nil, err
			}
			found := false
			for _, h := range prfs {
				if h.oid.Equal(po) {
					prf, found = h, true
				}
			}
			if !found {
				return nil, unsupportedf(field+" PBKDF2 prf", "unknown PRF %v", po)
			}
		}
		if err := end(kp, field+" PBKDF2-params"); err != nil {
			return nil, err
		}
		p.prf, p.info.KDF = prf.new, "PBKDF2-"+prf.name
		return p, nil
	case alg.Equal(oidPBEWithSHARC240):
		return nil, unsupportedf(field, "pbeWithSHAAnd40BitRC2-CBC is not supported")
	}
	return nil, unsupportedf(field, "unknown encryption %v", alg)
}

func capErr(err error) error {
	if errors.Is(err, keysafe.ErrUnsupported) {
		return fmt.Errorf("%w (%w)", err, errCap)
	}
	return err
}

// errDecrypt is a decryption that fails its padding or structure check: a
// wrong password, or a damaged entry (the two cannot be told apart).
var errDecrypt = errors.New("does not decrypt")

// decrypt opens ciphertext; bmp is the BMPString password for the PKCS#12
// KDF, utf8 the password for PBKDF2.
func (p *pbe) decrypt(utf8, bmp, ct []byte) ([]byte, error) {
	var block cipher.Block
	var iv []byte
	if p.pbes2 {
		key, err := pbkdf2.Key(p.prf, string(utf8), p.salt, p.info.Iterations, p.keyLen)
		if err != nil {
			return nil, fmt.Errorf("PBKDF2: %w", err)
		}
		if block, err = aes.NewCipher(key); err != nil {
			return nil, err
		}
		iv = p.iv
	} else {
		key := pkcs12KDF(sha1.New, 1, bmp, p.salt, p.info.Iterations, 24)
		iv = pkcs12KDF(sha1.New, 2, bmp, p.salt, p.info.Iterations, 8)
		var err error
		if block, err = des.NewTripleDESCipher(key); err != nil {
			return nil, err
		}
	}
	bs := block.BlockSize()
	if len(ct) == 0 || len(ct)%bs != 0 {
		return nil, corruptf("encrypted data", "%d bytes, not a positive multiple of %d", len(ct), bs)
	}
	out := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(out, ct)
	n := int(out[len(out)-1])
	if n == 0 || n > bs {
		return nil, errDecrypt
	}
	pad := out[len(out)-n:]
	if subtle.ConstantTimeCompare(pad, bytes.Repeat([]byte{byte(n)}, n)) != 1 {
		return nil, errDecrypt
	}
	return out[:len(out)-n], nil
}

func (m *macData) verify(bmp, data []byte) bool {
	size := m.h.new().Size()
	key := pkcs12KDF(m.h.new, 3, bmp, m.salt, m.iterations, size)
	h := hmac.New(m.h.new, key)
	h.Write(data)
	return hmac.Equal(h.Sum(nil), m.value)
}
