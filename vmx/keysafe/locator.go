package keysafe

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
)

// Type is the type of a key locator, as written in the grammar (lower case).
type Type string

// The key-locator types of docs/formats.md §2.
const (
	TypeNull   Type = "null"   // the null locator (no key)
	TypeRawKey Type = "rawkey" // exported key data
	TypePhrase Type = "phrase" // a key derived from a passphrase
	TypeLDAP   Type = "ldap"   // a key held in an LDAP server
	TypeScript Type = "script" // a key produced by a script
	TypeRole   Type = "role"   // a well-known key
	TypeFQID   Type = "fqid"   // a key of a key provider (KMS), by id
	TypeList   Type = "list"   // a list of locators (a key safe)
	TypePair   Type = "pair"   // a locker plus the data it locks
)

// Grammar literals.
const (
	// Prefix starts every key safe; matched case-insensitively on read.
	Prefix = "vmware:key/"
	// NullField is the value of a field that holds <VMWARE-NULL>. After
	// unescaping, no real field can equal it, so it is unambiguous.
	NullField = "<VMWARE-NULL>"
	// EmptyField is how an empty field is written.
	EmptyField = "<VMWARE-EMPTYSTRING>"
)

// MAC names of pairs.
const (
	MACSHA1    = "HMAC-SHA-1"     // phrase pairs
	MACSHA256  = "HMAC-SHA-256"   // fqid pairs
	MACSHA1128 = "HMAC-SHA-1-128" // SHA-1 truncated to 16 bytes (read only)
)

// Bounds on untrusted locator text.
const (
	// MaxLocatorLen caps the length of a key-safe string.
	MaxLocatorLen = 1 << 20
	// MaxDepth caps the nesting of lists and pairs.
	MaxDepth = 16
	// MaxListLen caps the number of elements of one list.
	MaxListLen = 1024
)

// Roles known to the grammar, in their canonical spelling.
var roles = []string{"obfuscation", "adminIdent", "adminRecovery", "server"}

// Locator is a parsed key locator. Which fields are used depends on Type:
//
//	null     (none)
//	rawkey   Data
//	phrase   UniqueID, KeyGenData (a crypto dict, see ParsePhraseParams)
//	ldap     UniqueID, Server, Domain, Port, SSL, Path
//	script   UniqueID, RelPath, Signature
//	role     UniqueID, Role
//	fqid     UniqueID, KeyServerID (the key provider), KeyID
//	list     List
//	pair     Pair
//
// Fields hold unescaped text; a null field holds NullField.
type Locator struct {
	Type Type

	UniqueID    string
	Data        string
	KeyGenData  string
	Server      string
	Domain      string
	Port        uint32
	SSL         bool
	Path        string
	RelPath     string
	Signature   string
	Role        string
	KeyServerID string
	KeyID       string

	List []*Locator
	Pair *Pair
}

// Pair is a locker (the locator of the key that locks) and the data it
// locks (a wrapped key dict, see UnlockPhrase and UnlockFQID).
type Pair struct {
	Locker *Locator
	MAC    string // MAC name, e.g. HMAC-SHA-1
	Locked []byte // IV || ciphertext || MAC
}

// Parse parses a key safe "vmware:key/..." (docs/formats.md §2). It accepts the
// canonical escaped text as well as the unescaped rendering the vSphere API
// prints. Every error wraps ErrCorrupt.
func Parse(s string) (*Locator, error) {
	if len(s) > MaxLocatorLen {
		return nil, fmt.Errorf("key locator is %d bytes, more than the %d allowed: %w", len(s), MaxLocatorLen, ErrCorrupt)
	}
	if len(s) < len(Prefix) || !strings.EqualFold(s[:len(Prefix)], Prefix) {
		return nil, fmt.Errorf("key locator does not start with %q: %w", Prefix, ErrCorrupt)
	}
	p := &parser{s: s, i: len(Prefix)}
	l, err := p.locator(false, 0)
	if err != nil {
		return nil, err
	}
	if p.i != len(p.s) {
		return nil, p.errf("unexpected text after the locator")
	}
	return l, nil
}

type parser struct {
	s string
	i int
}

func (p *parser) errf(format string, a ...any) error {
	return fmt.Errorf("key locator at byte %d: %s: %w", p.i, fmt.Sprintf(format, a...), ErrCorrupt)
}

func (p *parser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *parser) expect(c byte) error {
	if p.peek() != c || p.i >= len(p.s) {
		return p.errf("expected %q", c)
	}
	p.i++
	return nil
}

// rawUntil reads escaped text up to (not including) the first byte of
// stops, or to the end of the text when stops is empty. The structure bytes
// "/,()" may not appear inside the field, except '/' when allowSlash (the
// last field of a locator, which the unescaped rendering may hold).
func (p *parser) rawUntil(stops string, allowSlash bool) (string, error) {
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if strings.IndexByte(stops, c) >= 0 {
			break
		}
		if c == ',' || c == ')' || c == '(' || (c == '/' && !allowSlash) {
			return "", p.errf("unexpected %q in a field", c)
		}
		p.i++
	}
	if stops != "" && p.i >= len(p.s) {
		return "", p.errf("unterminated field")
	}
	if p.i == start {
		return "", p.errf("empty field")
	}
	return p.s[start:p.i], nil
}

// rawField reads one escaped field of a locator. A field that is not the
// last ends at '/', which is consumed; the last field ends at ',' or ')'
// inside a compound (not consumed) or at the end of the text at top level.
func (p *parser) rawField(last, compound bool) (string, error) {
	switch {
	case !last:
		raw, err := p.rawUntil("/", false)
		if err != nil {
			return "", err
		}
		p.i++
		return raw, nil
	case compound:
		return p.rawUntil(",)", true)
	default:
		return p.rawUntil("", true)
	}
}

// field reads and unescapes one field. A null field is refused unless
// allowNull; it is returned as NullField.
func (p *parser) field(last, compound, allowNull bool) (string, error) {
	raw, err := p.rawField(last, compound)
	if err != nil {
		return "", err
	}
	v, err := Unescape(raw)
	if err != nil {
		return "", p.errf("%v", err)
	}
	switch v {
	case NullField:
		if !allowNull {
			return "", p.errf("null field not allowed here")
		}
		return NullField, nil
	case EmptyField:
		return "", nil
	}
	return v, nil
}

func (p *parser) locator(compound bool, depth int) (*Locator, error) {
	if depth > MaxDepth {
		return nil, p.errf("locators nested deeper than %d", MaxDepth)
	}
	j := strings.IndexByte(p.s[p.i:], '/')
	if j <= 0 {
		return nil, p.errf("missing locator type")
	}
	name := strings.ToLower(p.s[p.i : p.i+j])
	p.i += j + 1
	l := &Locator{Type: Type(name)}
	var err error
	f := func(last, allowNull bool) string {
		if err != nil {
			return ""
		}
		var v string
		v, err = p.field(last, compound, allowNull)
		return v
	}
	switch l.Type {
	case TypeNull:
		v := f(true, false)
		if err == nil && v != "" {
			return nil, p.errf("null locator with a body")
		}
	case TypeRawKey:
		l.Data = f(true, false)
	case TypePhrase:
		l.UniqueID = f(false, false)
		l.KeyGenData = f(true, false)
	case TypeLDAP:
		l.UniqueID = f(false, true)
		l.Server = f(false, true)
		l.Domain = f(false, true)
		port := f(false, false)
		ssl := f(false, false)
		l.Path = f(true, false)
		if err != nil {
			return nil, err
		}
		n, perr := strconv.ParseUint(port, 10, 32)
		if perr != nil {
			return nil, p.errf("bad LDAP port %q", port)
		}
		l.Port = uint32(n)
		switch strings.ToUpper(ssl) {
		case "TRUE":
			l.SSL = true
		case "FALSE":
		default:
			return nil, p.errf("bad LDAP SSL flag %q", ssl)
		}
	case TypeScript:
		l.UniqueID = f(false, true)
		l.RelPath = f(false, false)
		l.Signature = f(true, false)
	case TypeRole:
		l.UniqueID = f(false, true)
		r := f(true, false)
		if err != nil {
			return nil, err
		}
		for _, known := range roles {
			if strings.EqualFold(r, known) {
				l.Role = known
			}
		}
		if l.Role == "" {
			return nil, p.errf("unknown role %q", r)
		}
	case TypeFQID:
		l.UniqueID = f(false, true)
		l.KeyServerID = f(false, true)
		l.KeyID = f(true, false)
	case TypeList:
		if err := p.expect('('); err != nil {
			return nil, err
		}
		l.List = []*Locator{}
		if p.peek() == ')' {
			p.i++
			break
		}
		for {
			if len(l.List) >= MaxListLen {
				return nil, p.errf("list longer than %d", MaxListLen)
			}
			e, err := p.locator(true, depth+1)
			if err != nil {
				return nil, err
			}
			l.List = append(l.List, e)
			if p.peek() == ',' && p.i < len(p.s) {
				p.i++
				continue
			}
			if err := p.expect(')'); err != nil {
				return nil, err
			}
			break
		}
	case TypePair:
		if err := p.expect('('); err != nil {
			return nil, err
		}
		locker, err := p.locator(true, depth+1)
		if err != nil {
			return nil, err
		}
		if err := p.expect(','); err != nil {
			return nil, err
		}
		rawMAC, err := p.rawUntil(",", false)
		if err != nil {
			return nil, err
		}
		p.i++
		rawData, err := p.rawUntil(")", true)
		if err != nil {
			return nil, err
		}
		p.i++
		pr := &Pair{Locker: locker}
		if pr.MAC, err = unescapeField(rawMAC); err != nil {
			return nil, p.errf("MAC name: %v", err)
		}
		data, err := unescapeField(rawData)
		if err != nil {
			return nil, p.errf("locked data: %v", err)
		}
		if pr.Locked, err = decodeB64(data); err != nil {
			return nil, p.errf("locked data is not base64")
		}
		l.Pair = pr
	default:
		return nil, p.errf("unknown locator type %q", name)
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

// unescapeField unescapes a field that may not be null; EmptyField is "".
func unescapeField(raw string) (string, error) {
	v, err := Unescape(raw)
	if err != nil {
		return "", err
	}
	switch v {
	case NullField:
		return "", fmt.Errorf("null not allowed")
	case EmptyField:
		return "", nil
	}
	return v, nil
}

// decodeB64 decodes strict standard base64 with padding. Unlike the
// standard decoder it refuses embedded newlines, so what it accepts
// re-encodes to the same text.
func decodeB64(s string) ([]byte, error) {
	if strings.ContainsAny(s, "\r\n") {
		return nil, fmt.Errorf("newline in base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Unescape decodes %xx escapes (either case of hex digit). A '%' not
// followed by two hex digits is an error.
func Unescape(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated %%-escape")
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("bad %%-escape %q", s[i:i+3])
		}
		b = append(b, hi<<4|lo)
		i += 2
	}
	return string(b), nil
}

// Escape writes every byte that is not an ASCII letter or digit as %xx
// with lower-case hex, as VMware writes locator fields.
func Escape(s string) string {
	return escapeExcept(s, "")
}

// escapeExcept escapes every non-alphanumeric byte except those in keep.
func escapeExcept(s, keep string) string {
	const hexd = "0123456789abcdef"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || (c < 0x80 && strings.IndexByte(keep, c) >= 0) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&15])
	}
	return b.String()
}

// writeField writes a field: NullField literally, "" as EmptyField, any
// other value escaped.
func writeField(b *strings.Builder, v string) {
	switch v {
	case NullField:
		b.WriteString(NullField)
	case "":
		b.WriteString(EmptyField)
	default:
		b.WriteString(Escape(v))
	}
}

// String returns the canonical text of the locator, "vmware:key/...". For
// text VMware wrote, Parse followed by String gives back the same bytes.
func (l *Locator) String() string {
	var b strings.Builder
	b.WriteString(Prefix)
	l.write(&b)
	return b.String()
}

func (l *Locator) write(b *strings.Builder) {
	b.WriteString(string(l.Type))
	b.WriteByte('/')
	fields := func(vs ...string) {
		for i, v := range vs {
			if i > 0 {
				b.WriteByte('/')
			}
			writeField(b, v)
		}
	}
	switch l.Type {
	case TypeNull:
		b.WriteString(Escape(EmptyField))
	case TypeRawKey:
		fields(l.Data)
	case TypePhrase:
		fields(l.UniqueID, l.KeyGenData)
	case TypeLDAP:
		ssl := "FALSE"
		if l.SSL {
			ssl = "TRUE"
		}
		fields(l.UniqueID, l.Server, l.Domain)
		b.WriteByte('/')
		b.WriteString(strconv.FormatUint(uint64(l.Port), 10))
		b.WriteByte('/')
		b.WriteString(ssl)
		b.WriteByte('/')
		writeField(b, l.Path)
	case TypeScript:
		fields(l.UniqueID, l.RelPath, l.Signature)
	case TypeRole:
		fields(l.UniqueID, l.Role)
	case TypeFQID:
		fields(l.UniqueID, l.KeyServerID, l.KeyID)
	case TypeList:
		b.WriteByte('(')
		for i, e := range l.List {
			if i > 0 {
				b.WriteByte(',')
			}
			e.write(b)
		}
		b.WriteByte(')')
	case TypePair:
		b.WriteByte('(')
		if l.Pair != nil && l.Pair.Locker != nil {
			l.Pair.Locker.write(b)
		}
		b.WriteByte(',')
		if l.Pair != nil {
			writeField(b, l.Pair.MAC)
			b.WriteByte(',')
			writeField(b, base64.StdEncoding.EncodeToString(l.Pair.Locked))
		}
		b.WriteByte(')')
	}
}

// Pairs returns every pair of the locator in order: the locator itself if
// it is a pair, or the pairs of a list (nested lists included).
func (l *Locator) Pairs() []*Pair {
	var out []*Pair
	var walk func(*Locator)
	walk = func(x *Locator) {
		switch x.Type {
		case TypePair:
			if x.Pair != nil {
				out = append(out, x.Pair)
			}
		case TypeList:
			for _, e := range x.List {
				walk(e)
			}
		}
	}
	walk(l)
	return out
}

// NewList returns a list locator holding the given pairs, the shape of a
// VMX key safe or a disk's encryptionKeys.
func NewList(pairs ...*Pair) *Locator {
	l := &Locator{Type: TypeList, List: []*Locator{}}
	for _, p := range pairs {
		l.List = append(l.List, &Locator{Type: TypePair, Pair: p})
	}
	return l
}
