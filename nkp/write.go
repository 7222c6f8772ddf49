package nkp

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf16"
)

// DefaultIterations is what keytool (JDK 17) writes for both PBKDF2 and
// the MAC.
const DefaultIterations = 10000

// WriteOptions tune Marshal; the zero value is keytool's layout.
type WriteOptions struct {
	// Iterations for PBKDF2 and the MAC (DefaultIterations when 0).
	Iterations int
	// Time goes into localKeyID as "Time <ms since 1970>" like Java writes
	// it (now when zero).
	Time time.Time
	// Rand supplies the salts and IV (crypto/rand when nil); fixtures pass
	// a seeded stream for byte-identical backups.
	Rand io.Reader
}

// Marshal writes kdk as a PKCS#12 backup in the layout of JDK 17's
// `keytool -genseckey -storetype PKCS12`: PFX v3, one pkcs7-data
// container with one secretBag holding a PBES2 (PBKDF2-HMAC-SHA256,
// AES-256-CBC) shrouded PKCS#8 key, friendlyName = KDK id, localKeyID,
// and an HMAC-SHA256 MAC with the PKCS#12 KDF. When kdk.Provider is set it
// is stored in an X.520 name attribute (MODEL). password is UTF-8; empty
// is allowed.
func Marshal(kdk *KDK, password []byte, opt *WriteOptions) ([]byte, error) {
	if len(kdk.Key) != KDKSize {
		return nil, fmt.Errorf("NKP backup: KDK of %d bytes, want %d", len(kdk.Key), KDKSize)
	}
	var o WriteOptions
	if opt != nil {
		o = *opt
	}
	if o.Iterations == 0 {
		o.Iterations = DefaultIterations
	}
	if o.Iterations < 1 || o.Iterations > MaxIterations {
		return nil, fmt.Errorf("NKP backup: %d iterations, want 1..%d", o.Iterations, MaxIterations)
	}
	if o.Time.IsZero() {
		o.Time = time.Now()
	}
	salt := make([]byte, 20)
	iv := make([]byte, aes.BlockSize)
	macSalt := make([]byte, 20)
	rnd := o.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	for _, b := range [][]byte{salt, iv, macSalt} {
		if _, err := io.ReadFull(rnd, b); err != nil {
			return nil, err
		}
	}

	// PKCS#8 PrivateKeyInfo { 0, { aes, NULL }, OCTET STRING key }, as Java.
	pki := privateKeyInfo(kdk.Key)
	pbes2, ct, err := pbes2Encrypt(password, pki, salt, iv, o.Iterations)
	if err != nil {
		return nil, err
	}
	epki := seq(pbes2, octet(ct))

	attrs := [][]byte{
		seq(mustOID(oidFriendlyName), set(bmpString(kdk.ID.String()))),
		seq(mustOID(oidLocalKeyID), set(octet([]byte("Time "+strconv.FormatInt(o.Time.UnixMilli(), 10))))),
	}
	if kdk.Provider != "" {
		attrs = append(attrs, seq(mustOID(oidProviderNameAttr), set(der(asn1.ClassUniversal, asn1.TagUTF8String, false, []byte(kdk.Provider)))))
	}
	bag := seq(mustOID(oidSecretBag),
		explicit0(seq(mustOID(oidShroudedKeyBag), explicit0(octet(epki)))),
		set(attrs...))
	safeContents := seq(bag)
	authSafe := seq(seq(mustOID(oidData), explicit0(octet(safeContents))))
	return pfx(authSafe, password, macSalt, o.Iterations), nil
}

// pfx wraps an AuthenticatedSafe into a PFX with an HMAC-SHA256 MAC.
func pfx(authSafe, password, macSalt []byte, iterations int) []byte {
	macKey := pkcs12KDF(sha256.New, 3, bmpPassword(password), macSalt, iterations, sha256.Size)
	h := hmac.New(sha256.New, macKey)
	h.Write(authSafe)
	macData := seq(seq(seq(mustOID(oidSHA256), asn1.NullBytes), octet(h.Sum(nil))), octet(macSalt), integer(iterations))
	return seq(integer(3), seq(mustOID(oidData), explicit0(octet(authSafe))), macData)
}

// pbes2Encrypt encrypts plain with PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC,
// PKCS#7 padding) as keytool does, returning the AlgorithmIdentifier and
// the ciphertext.
func pbes2Encrypt(password, plain, salt, iv []byte, iterations int) (algID, ct []byte, err error) {
	key, err := pbkdf2.Key(sha256.New, string(password), salt, iterations, 32)
	if err != nil {
		return nil, nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	n := aes.BlockSize - len(plain)%aes.BlockSize
	padded := append(append([]byte(nil), plain...), make([]byte, n)...)
	for i := len(plain); i < len(padded); i++ {
		padded[i] = byte(n)
	}
	ct = make([]byte, len(padded))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, padded)
	algID = seq(mustOID(oidPBES2),
		seq(
			seq(mustOID(oidPBKDF2),
				seq(octet(salt), integer(iterations), integer(32), seq(mustOID(oidHMACWithSHA256), asn1.NullBytes))),
			seq(mustOID(oidAES256CBC), octet(iv))))
	return algID, ct, nil
}

// privateKeyInfo is the PKCS#8 encoding of an AES key as JDK 17 writes it.
func privateKeyInfo(key []byte) []byte {
	return seq(integer(0), seq(mustOID(oidAESArc), asn1.NullBytes), octet(key))
}

func der(class, tag int, compound bool, body []byte) []byte {
	b, err := asn1.Marshal(asn1.RawValue{Class: class, Tag: tag, IsCompound: compound, Bytes: body})
	if err != nil {
		panic(err) // RawValue with Bytes cannot fail to marshal
	}
	return b
}

func join(parts [][]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func seq(parts ...[]byte) []byte {
	return der(asn1.ClassUniversal, asn1.TagSequence, true, join(parts))
}
func set(parts ...[]byte) []byte { return der(asn1.ClassUniversal, asn1.TagSet, true, join(parts)) }
func octet(b []byte) []byte      { return der(asn1.ClassUniversal, asn1.TagOctetString, false, b) }
func explicit0(b []byte) []byte  { return der(asn1.ClassContextSpecific, 0, true, b) }

func integer(v int) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func mustOID(o asn1.ObjectIdentifier) []byte {
	b, err := asn1.Marshal(o)
	if err != nil {
		panic(err)
	}
	return b
}

func bmpString(s string) []byte {
	u := utf16.Encode([]rune(s))
	b := make([]byte, 0, 2*len(u))
	for _, c := range u {
		b = append(b, byte(c>>8), byte(c))
	}
	return der(asn1.ClassUniversal, asn1.TagBMPString, false, b)
}
