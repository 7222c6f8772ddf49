// Package kit seals and opens vmcrypt's offline key kits: a KEK file
// (docs/formats.md §11, the JSON `--kek` reads) encrypted under a
// passphrase, so that the keys a KMS holds can be kept offline without
// being as exposed as the KMS itself.
//
// # Format (docs/formats.md §17)
//
// A sealed kit is a short text header, then the ciphertext:
//
//	vmcrypt-kit/v1\n
//	scrypt LOGN 8 1 SALT\n
//	chacha20poly1305 LENGTH\n
//	--- MAC\n
//	CIPHERTEXT
//
// LOGN is log2 of scrypt's cost N (MinLogN..MaxLogN), r = 8 and p = 1;
// SALT is 16 random bytes in standard padded base64; LENGTH is the
// plaintext's length in bytes (decimal, 1..MaxPayload). scrypt(passphrase,
// SALT, N, 8, 1) gives 64 bytes: the first 32 are the MAC key, the last 32
// the ChaCha20-Poly1305 key. MAC is HMAC-SHA256 (MAC key) of the header up
// to and including the LENGTH line, in standard padded base64. CIPHERTEXT
// is ChaCha20-Poly1305 of the plaintext (LENGTH + 16 bytes) with a nonce
// of 12 zero bytes (the key is new for every salt: a kit is sealed once)
// and the whole header, MAC line included, as additional data.
//
// Every number is canonical decimal, every line ends with one "\n", and
// the file ends exactly after the ciphertext: anything else is refused.
//
// # Errors
//
// A header MAC that does not verify is a wrong passphrase
// (ErrWrongPassphrase, wrapping keysafe.ErrWrongKey). A ciphertext that
// does not authenticate once the MAC has is damage (keysafe.ErrCorrupt),
// as is a malformed header (*FormatError naming offset and field). A work
// factor above the reader's cap, another version or other scrypt r, p are
// keysafe.ErrUnsupported: the cap is checked before any work, so a hostile
// file costs at most 128 * 8 * 2^MaxLogN bytes of memory.
package kit

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/scrypt"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Limits of a sealed kit.
const (
	// MinLogN and MaxLogN bound the scrypt work factor (log2 N) written
	// and read; at MaxLogN scrypt needs 1 GiB of memory (128 * r * N).
	MinLogN = 10
	MaxLogN = 20
	// DefaultLogN is the work factor Seal uses by default (256 MiB, about
	// a second).
	DefaultLogN = 18
	// R and P are the only scrypt r and p written and read.
	R = 8
	P = 1
	// SaltLen is the salt's size in bytes.
	SaltLen = 16
	// MaxPayload caps the sealed plaintext (a KEK file: 1 MiB).
	MaxPayload = 1 << 20
	// maxLine caps one header line.
	maxLine = 128
	// MaxSealedSize caps a sealed kit file.
	MaxSealedSize = 4*maxLine + MaxPayload + chacha20poly1305.Overhead
)

// Magic is the first line of a sealed kit, without its newline.
const Magic = "vmcrypt-kit/v1"

const (
	magicPrefix = "vmcrypt-kit/" // any version
	scryptWord  = "scrypt"
	aeadWord    = "chacha20poly1305"
	macWord     = "---"
)

// ErrWrongPassphrase is a passphrase that does not open the kit (the
// header MAC does not verify). It wraps keysafe.ErrWrongKey.
var ErrWrongPassphrase = fmt.Errorf("the passphrase does not open the sealed kit: %w", keysafe.ErrWrongKey)

// FormatError is a sealed kit that does not parse, or that asks for what
// this reader does not do: where (byte offset of the line), which field,
// what is wrong. It wraps keysafe.ErrCorrupt or keysafe.ErrUnsupported.
type FormatError struct {
	Offset int
	Field  string
	Msg    string
	Err    error // keysafe.ErrCorrupt or keysafe.ErrUnsupported
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("sealed kit: offset %d, %s: %s", e.Offset, e.Field, e.Msg)
}

// Unwrap returns keysafe.ErrCorrupt or keysafe.ErrUnsupported.
func (e *FormatError) Unwrap() error { return e.Err }

// IsSealed reports whether data (the start of a file is enough) is a
// sealed kit of any version.
func IsSealed(data []byte) bool { return bytes.HasPrefix(data, []byte(magicPrefix)) }

// Header is a sealed kit's parsed header.
type Header struct {
	LogN   int    // scrypt work factor, log2 N
	Salt   []byte // SaltLen bytes
	Length int    // plaintext bytes
	MAC    []byte // 32 bytes

	signed []byte // the header up to the MAC line (what MAC covers)
	all    []byte // the whole header (additional data of the AEAD)
}

// SealOptions tune Seal.
type SealOptions struct {
	LogN int       // 0: DefaultLogN
	Rand io.Reader // nil: crypto/rand
}

// OpenOptions tune Open.
type OpenOptions struct {
	// MaxLogN refuses (keysafe.ErrUnsupported, before any work) a kit
	// whose work factor is above it; 0 means MaxLogN. It cannot raise the
	// cap.
	MaxLogN int
}

// kdf derives the 64 key bytes; scrypt, replaced in fuzzing.
type kdf func(pass, salt []byte, logN int) ([]byte, error)

func scryptKDF(pass, salt []byte, logN int) ([]byte, error) {
	return scrypt.Key(pass, salt, 1<<logN, R, P, 64)
}

// Seal encrypts plaintext (a KEK file) under passphrase.
func Seal(plaintext, passphrase []byte, o *SealOptions) ([]byte, error) {
	var opt SealOptions
	if o != nil {
		opt = *o
	}
	if opt.LogN == 0 {
		opt.LogN = DefaultLogN
	}
	if opt.Rand == nil {
		opt.Rand = rand.Reader
	}
	if opt.LogN < MinLogN || opt.LogN > MaxLogN {
		return nil, fmt.Errorf("sealed kit: work factor %d is outside %d..%d", opt.LogN, MinLogN, MaxLogN)
	}
	if len(passphrase) == 0 {
		return nil, errors.New("sealed kit: the passphrase is empty")
	}
	if len(plaintext) == 0 || len(plaintext) > MaxPayload {
		return nil, fmt.Errorf("sealed kit: %d bytes to seal (1 to %d)", len(plaintext), MaxPayload)
	}
	salt := make([]byte, SaltLen)
	if _, err := io.ReadFull(opt.Rand, salt); err != nil {
		return nil, fmt.Errorf("sealed kit: salt: %w", err)
	}
	return seal(plaintext, passphrase, opt.LogN, salt, scryptKDF)
}

func seal(plaintext, passphrase []byte, logN int, salt []byte, derive kdf) ([]byte, error) {
	k, err := derive(passphrase, salt, logN)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	b64 := base64.StdEncoding.EncodeToString
	hdr := fmt.Appendf(nil, "%s\n%s %d %d %d %s\n%s %d\n", Magic, scryptWord, logN, R, P, b64(salt), aeadWord, len(plaintext))
	m := hmac.New(sha256.New, k[:32])
	m.Write(hdr)
	hdr = fmt.Appendf(hdr, "%s %s\n", macWord, b64(m.Sum(nil)))
	aead, err := chacha20poly1305.New(k[32:])
	if err != nil {
		return nil, err
	}
	var nonce [chacha20poly1305.NonceSize]byte
	return aead.Seal(hdr, nonce[:], plaintext, hdr), nil
}

// Open decrypts a sealed kit with passphrase and returns the plaintext
// (the caller zeroes it when done). Errors: ErrWrongPassphrase; a
// *FormatError (keysafe.ErrCorrupt or keysafe.ErrUnsupported); a
// ciphertext that does not authenticate, keysafe.ErrCorrupt.
func Open(data, passphrase []byte, o *OpenOptions) ([]byte, error) {
	maxLogN := MaxLogN
	if o != nil && o.MaxLogN != 0 && o.MaxLogN < MaxLogN {
		maxLogN = o.MaxLogN
	}
	return open(data, passphrase, maxLogN, scryptKDF)
}

func open(data, passphrase []byte, maxLogN int, derive kdf) ([]byte, error) {
	h, ct, err := ParseHeader(data)
	if err != nil {
		return nil, err
	}
	if h.LogN > maxLogN {
		return nil, &FormatError{Offset: len(Magic) + 1, Field: "scrypt work factor",
			Msg: fmt.Sprintf("%d is above this reader's cap of %d", h.LogN, maxLogN), Err: keysafe.ErrUnsupported}
	}
	k, err := derive(passphrase, h.Salt, h.LogN)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	return unseal(h, ct, k)
}

// unseal checks the header MAC and decrypts with the derived key bytes.
func unseal(h *Header, ct, k []byte) ([]byte, error) {
	m := hmac.New(sha256.New, k[:32])
	m.Write(h.signed)
	if !hmac.Equal(m.Sum(nil), h.MAC) {
		return nil, ErrWrongPassphrase
	}
	aead, err := chacha20poly1305.New(k[32:])
	if err != nil {
		return nil, err
	}
	var nonce [chacha20poly1305.NonceSize]byte
	pt, err := aead.Open(make([]byte, 0, h.Length), nonce[:], ct, h.all)
	if err != nil {
		return nil, fmt.Errorf("sealed kit: offset %d: the ciphertext does not authenticate (the passphrase is right: the file is damaged): %w",
			len(h.all), keysafe.ErrCorrupt)
	}
	return pt, nil
}

// ParseHeader parses a sealed kit's header and returns it with the
// ciphertext (a slice of data). It does no key work. Errors are
// *FormatError.
func ParseHeader(data []byte) (*Header, []byte, error) {
	corrupt := func(off int, field, format string, a ...any) (*Header, []byte, error) {
		return nil, nil, &FormatError{Offset: off, Field: field, Msg: fmt.Sprintf(format, a...), Err: keysafe.ErrCorrupt}
	}
	unsupported := func(off int, field, format string, a ...any) (*Header, []byte, error) {
		return nil, nil, &FormatError{Offset: off, Field: field, Msg: fmt.Sprintf(format, a...), Err: keysafe.ErrUnsupported}
	}
	if len(data) > MaxSealedSize {
		return unsupported(0, "size", "%d bytes, above the limit of %d", len(data), MaxSealedSize)
	}
	if !IsSealed(data) {
		return corrupt(0, "magic", "not a sealed kit (it does not start with %q)", magicPrefix)
	}
	off := 0
	line := func() (string, int, bool) {
		end := bytes.IndexByte(data[off:min(len(data), off+maxLine)], '\n')
		if end < 0 {
			return "", off, false
		}
		s, at := string(data[off:off+end]), off
		off += end + 1
		return s, at, true
	}
	l, at, ok := line()
	if !ok {
		return corrupt(at, "magic", "no end of line within %d bytes", maxLine)
	}
	if l != Magic {
		return unsupported(at, "version", "%q is not %q (a newer vmcrypt wrote it?)", truncate(l), Magic)
	}
	h := &Header{}
	// scrypt LOGN R P SALT
	if l, at, ok = line(); !ok {
		return corrupt(at, "scrypt line", "missing or longer than %d bytes", maxLine)
	}
	f := bytes.Split([]byte(l), []byte(" "))
	if len(f) != 5 || string(f[0]) != scryptWord {
		return corrupt(at, "scrypt line", "want %q, got %q", scryptWord+" LOGN 8 1 SALT", truncate(l))
	}
	logN, ok := canonicalInt(f[1])
	if !ok {
		return corrupt(at, "scrypt work factor", "%q is not a number", truncate(string(f[1])))
	}
	if logN < MinLogN || logN > MaxLogN {
		return unsupported(at, "scrypt work factor", "%d is outside %d..%d", logN, MinLogN, MaxLogN)
	}
	if r, ok := canonicalInt(f[2]); !ok || r != R {
		return unsupported(at, "scrypt r", "%q (only %d is read)", truncate(string(f[2])), R)
	}
	if p, ok := canonicalInt(f[3]); !ok || p != P {
		return unsupported(at, "scrypt p", "%q (only %d is read)", truncate(string(f[3])), P)
	}
	if h.Salt, ok = canonicalB64(f[4], SaltLen); !ok {
		return corrupt(at, "salt", "not %d bytes of standard base64", SaltLen)
	}
	h.LogN = logN
	// chacha20poly1305 LENGTH
	if l, at, ok = line(); !ok {
		return corrupt(at, "cipher line", "missing or longer than %d bytes", maxLine)
	}
	f = bytes.Split([]byte(l), []byte(" "))
	if len(f) != 2 || string(f[0]) != aeadWord {
		return corrupt(at, "cipher line", "want %q, got %q", aeadWord+" LENGTH", truncate(l))
	}
	n, ok := canonicalInt(f[1])
	if !ok || n < 1 || n > MaxPayload {
		return corrupt(at, "length", "%q is not a length of 1 to %d", truncate(string(f[1])), MaxPayload)
	}
	h.Length = n
	h.signed = data[:off]
	// --- MAC
	if l, at, ok = line(); !ok {
		return corrupt(at, "MAC line", "missing or longer than %d bytes", maxLine)
	}
	f = bytes.Split([]byte(l), []byte(" "))
	if len(f) != 2 || string(f[0]) != macWord {
		return corrupt(at, "MAC line", "want %q, got %q", macWord+" MAC", truncate(l))
	}
	if h.MAC, ok = canonicalB64(f[1], sha256.Size); !ok {
		return corrupt(at, "MAC", "not %d bytes of standard base64", sha256.Size)
	}
	h.all = data[:off]
	ct := data[off:]
	if want := n + chacha20poly1305.Overhead; len(ct) != want {
		what := "truncated"
		if len(ct) > want {
			what = "followed by extra bytes"
		}
		return corrupt(off, "ciphertext", "%d bytes where the header says %d: %s", len(ct), want, what)
	}
	return h, ct, nil
}

// canonicalInt parses a non-negative decimal without sign or leading
// zeros, below 10^9.
func canonicalInt(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 9 || (len(b) > 1 && b[0] == '0') {
		return 0, false
	}
	v, err := strconv.Atoi(string(b))
	if err != nil || v < 0 || strconv.Itoa(v) != string(b) {
		return 0, false
	}
	return v, true
}

// canonicalB64 decodes standard padded base64 of exactly n bytes, in its
// one canonical spelling.
func canonicalB64(b []byte, n int) ([]byte, bool) {
	if len(b) != base64.StdEncoding.EncodedLen(n) {
		return nil, false
	}
	out, err := base64.StdEncoding.Strict().DecodeString(string(b))
	if err != nil || len(out) != n || base64.StdEncoding.EncodeToString(out) != string(b) {
		return nil, false
	}
	return out, true
}

// truncate shortens untrusted text for an error message.
func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
