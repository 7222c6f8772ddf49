package vmx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Keeping a VM encrypted while changing it: a new passphrase for the same
// config key (ChangePassphrase), new settings sealed with the same config
// key (Reseal, Apply). Every line that does not change is kept byte for
// byte (order, comments, CRLF, BOM, |XX escapes); a changed line keeps its
// key's spelling and its own spacing and line ending.

var (
	// ErrSyntax: edited settings hold a line that is not a VMX line
	// (see SyntaxError).
	ErrSyntax = errors.New("VMX syntax error")
	// ErrProtected: an edit would remove or change dataFileKey or
	// cryptoState (the VM's data files would no longer open), or put
	// encryption.* lines inside the encrypted settings.
	ErrProtected = errors.New("protected setting")
)

// SyntaxError is a line of edited settings that is not `key = "value"`, a
// comment or a blank line, or a key given twice by the edit. It names the
// line and key, never the value (it may be a key).
type SyntaxError struct {
	Line int    // 1-based line number in the edited text
	Key  string // the key, when the line has one
	Why  string
}

func (e *SyntaxError) Error() string {
	if e.Line == 0 {
		return e.Why
	}
	if e.Key != "" {
		return fmt.Sprintf("line %d (%s): %s", e.Line, e.Key, e.Why)
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Why)
}

// Unwrap makes errors.Is(err, ErrSyntax) true.
func (e *SyntaxError) Unwrap() error { return ErrSyntax }

// clone returns a copy of f that can be changed without changing f.
func (f *File) clone() *File {
	return &File{BOM: f.BOM, Lines: append([]Line(nil), f.Lines...)}
}

// withValue returns the setting line l with its value replaced by v
// (encoded), keeping everything else of the line as written: the key's
// spelling, the blanks around '=' and after the value, the line ending.
func withValue(l Line, v string) Line {
	i := strings.IndexByte(l.Raw, '=')
	if l.Kind != Setting || i < 0 {
		return SettingLine(l.Key, v, l.EOL)
	}
	rest := l.Raw[i+1:]
	body := strings.TrimLeft(rest, " \t")
	lead := rest[:len(rest)-len(body)]
	trimmed := strings.TrimRight(body, " \t")
	trail := body[len(trimmed):]
	l.Raw = l.Raw[:i+1] + lead + `"` + EncodeValue(v) + `"` + trail
	l.Value = v
	return l
}

// setAll gives every setting named key the value v (withValue).
func (f *File) setAll(key, v string) {
	for i, l := range f.Lines {
		if l.Kind == Setting && strings.EqualFold(l.Key, key) {
			f.Lines[i] = withValue(l, v)
		}
	}
}

// Rekeyed is an encrypted VMX under a new passphrase (ChangePassphrase).
type Rekeyed struct {
	// File is the new VMX: the key-safe line changed, every other line
	// as it was.
	File *File
	// ConfigKey is the VM's config key, the same before and after.
	ConfigKey *keysafe.Key
	// Settings are the decrypted settings (unchanged), to find the disks.
	Settings *File
	// Relocked and Kept count the pairs of the key safe (see
	// keysafe.Relocked).
	Relocked, Kept int
}

// ChangePassphrase opens the key safe of the encrypted VMX f with oldPass
// and locks the same config key under newPass (keysafe.RelockPhrases: fresh
// salt, same cipher, rounds kept unless opt.Rounds). encryption.data is not
// touched: the config key, dataFileKey and every setting stay as they were,
// so the disks and data files need no change. The result is proven before
// it is returned: its key safe reads back as the relocked one (whose new
// pairs open with newPass) and its encryption.data is the same line.
// f is not changed.
//
// Errors: keysafe.ErrNotPhrase (wraps ErrUnsupported) when no passphrase
// locks the VM; keysafe.ErrWrongKey when oldPass opens no pair;
// keysafe.ErrCorrupt or ErrUnsupported for damaged or unknown input.
func ChangePassphrase(f *File, oldPass, newPass []byte, opt keysafe.RelockOptions, rand io.Reader) (*Rekeyed, error) {
	ksText, data, ok, err := f.Encryption()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("VMX is not encrypted (no %s): %w", KeyKeySafe, keysafe.ErrUnsupported)
	}
	ks, err := keysafe.Parse(ksText)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyKeySafe, err)
	}
	r, err := keysafe.RelockPhrases(ks, oldPass, newPass, opt, rand)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyKeySafe, err)
	}
	text, err := DecryptData(r.Key, data)
	if err != nil {
		return nil, err
	}
	out := f.clone()
	newKS := r.Locator.String()
	out.setAll(KeyKeySafe, newKS)
	out.setAll(KeyBundle, newKS)

	// Prove it: the new text reads back with the relocked key safe (each
	// new pair was proven to open with the new passphrase) and the same
	// encryption.data.
	back, err := ParseBytes(out.Bytes())
	if err != nil {
		return nil, err
	}
	ks2, err := back.KeySafe()
	if err != nil {
		return nil, fmt.Errorf("internal check: the new key safe does not parse: %v", err)
	}
	if ks2.String() != newKS {
		return nil, fmt.Errorf("internal check: the new key safe does not read back as written")
	}
	if _, data2, _, _ := back.Encryption(); data2 != data {
		return nil, fmt.Errorf("internal check: encryption.data changed")
	}
	settings, err := ParseBytes(text)
	if err != nil {
		return nil, err
	}
	return &Rekeyed{File: out, ConfigKey: r.Key, Settings: settings, Relocked: r.Relocked, Kept: r.Kept}, nil
}

// Reseal replaces the settings inside encryption.data of the encrypted VMX
// f with text, sealed with the same config key (a fresh IV). The key-safe
// line and every other line of f are kept byte for byte; when text equals
// the current settings, encryption.data is kept too. text must be valid VMX
// lines (CheckSettings: ErrSyntax, ErrProtected): dataFileKey and
// cryptoState may not be removed or changed. configKey must open the
// current encryption.data (ErrCorrupt otherwise). f is not changed.
func Reseal(f *File, configKey *keysafe.Key, text []byte, rand io.Reader) (*File, error) {
	ksText, data, ok, err := f.Encryption()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("VMX is not encrypted (no %s): %w", KeyKeySafe, keysafe.ErrUnsupported)
	}
	old, err := DecryptData(configKey, data)
	if err != nil {
		return nil, err
	}
	out := f.clone()
	if bytes.Equal(old, text) {
		return out, nil
	}
	if err := CheckSettings(old, text); err != nil {
		return nil, err
	}
	enc, err := EncryptData(configKey, text, rand)
	if err != nil {
		return nil, err
	}
	i := out.find(KeyData)
	out.Lines[i] = withValue(out.Lines[i], enc)

	back, err := ParseBytes(out.Bytes())
	if err != nil {
		return nil, err
	}
	ks2, data2, _, err := back.Encryption()
	if err != nil || ks2 != ksText {
		return nil, fmt.Errorf("internal check: the key safe changed (%v)", err)
	}
	if got, err := DecryptData(configKey, data2); err != nil || !bytes.Equal(got, text) {
		return nil, fmt.Errorf("internal check: the new encryption.data does not decrypt to the new settings (%v)", err)
	}
	return out, nil
}

// MaxKeyLen caps the length of a setting name in edited settings.
const MaxKeyLen = 1024

// validKey reports whether k is a setting name VMware writes: ASCII
// letters, digits and . _ : - (e.g. "nvme0:0.fileName").
func validKey(k string) bool {
	if k == "" || len(k) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// lineSyntax checks one line an edit wrote.
func lineSyntax(l Line) string {
	if !utf8.ValidString(l.Raw) {
		return "not valid UTF-8"
	}
	switch l.Kind {
	case Blank, Comment:
		return ""
	case Other:
		return `not a line of the form key = "value"`
	}
	if !validKey(l.Key) {
		return "the key may hold only letters, digits and . _ : -"
	}
	_, v, _ := strings.Cut(l.Raw, "=")
	v = strings.TrimSpace(v)
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return `the value is not in double quotes`
	}
	if strings.IndexByte(v[1:len(v)-1], '"') >= 0 {
		return `a double quote inside the value (write it as |22)`
	}
	return ""
}

// protectedKeys may not be removed or changed by an edit of the settings.
var protectedKeys = []string{KeyDataFileKey, KeyCryptoState}

// CheckSettings checks edited settings against the settings they replace:
// every line the edit wrote (any line not in old, byte for byte) must be a
// blank line, a comment or `key = "value"` with a key of letters, digits
// and . _ : - and a quoted value, in UTF-8, and the edit may not give a key
// twice (*SyntaxError, ErrSyntax). dataFileKey and cryptoState must be
// there as they were (same count, same values), and encryption.* may not
// appear (ErrProtected). Lines already in old are not judged: they are the
// VM's own.
func CheckSettings(old, edited []byte) error {
	if len(edited) > MaxFileSize {
		return fmt.Errorf("settings of %d bytes are larger than the %d allowed: %w", len(edited), MaxFileSize, keysafe.ErrUnsupported)
	}
	of, err := ParseBytes(old)
	if err != nil {
		return err
	}
	nf, err := ParseBytes(edited)
	if err != nil {
		return err
	}
	if nf.BOM {
		return &SyntaxError{Line: 1, Why: "a byte-order mark inside encryption.data"}
	}
	seen := make(map[string]int, len(of.Lines))
	for _, l := range of.Lines {
		seen[l.Raw]++
	}
	for i, l := range nf.Lines {
		if seen[l.Raw] > 0 {
			continue
		}
		if why := lineSyntax(l); why != "" {
			return &SyntaxError{Line: i + 1, Key: keyIfValid(l), Why: why}
		}
	}
	counted := map[string]bool{}
	for i, l := range nf.Lines {
		if l.Kind != Setting {
			continue
		}
		k := strings.ToLower(l.Key)
		if counted[k] {
			continue
		}
		counted[k] = true
		if n := nf.Count(l.Key); n > 1 && n > of.Count(l.Key) {
			return &SyntaxError{Line: i + 1, Key: l.Key, Why: fmt.Sprintf("given %d times", n)}
		}
	}
	for _, k := range []string{KeyKeySafe, KeyBundle, KeyData} {
		if nf.Count(k) > of.Count(k) {
			return fmt.Errorf("%s belongs to the plain lines of the .vmx, not inside encryption.data: %w", k, ErrProtected)
		}
	}
	for _, k := range protectedKeys {
		ov, oOK := of.Get(k)
		nv, nOK := nf.Get(k)
		switch {
		case oOK && !nOK:
			return fmt.Errorf("the edit removes %s (the VM's encrypted data files need it): %w", k, ErrProtected)
		case !oOK && nOK, nf.Count(k) != of.Count(k):
			return fmt.Errorf("the edit adds %s: %w", k, ErrProtected)
		case ov != nv:
			return fmt.Errorf("the edit changes %s (the VM's encrypted data files need it as it is): %w", k, ErrProtected)
		}
	}
	return nil
}

func keyIfValid(l Line) string {
	if l.Kind == Setting && validKey(l.Key) {
		return l.Key
	}
	return ""
}

// Change is one change of `vmx set`: Key = Value, or Key removed (Unset).
type Change struct {
	Key   string
	Value string
	Unset bool
}

// Change actions reported by Apply.
const (
	Changed   = "changed"   // the key's value changed
	Added     = "added"     // a new key
	Removed   = "removed"   // the key was removed
	Unchanged = "unchanged" // the key already had that value
	Absent    = "absent"    // Unset of a key that is not there
)

// Applied says what Apply did with one Change.
type Applied struct {
	Key    string
	Plain  bool   // in the plain lines of the .vmx, not in encryption.data
	Action string // Changed, Added, Removed, Unchanged, Absent
}

// Apply makes the changes of `vmx set` to the encrypted VMX f, opened with
// its config key, and re-seals it (Reseal). A key found among the plain
// lines of the .vmx changes there, any other inside encryption.data; a new
// key goes to the plain lines when VMware keeps it plain
// (IsPlainHeaderKey), otherwise into the settings. encryption.*,
// dataFileKey and cryptoState are refused (ErrProtected), keys that are not
// letters, digits and . _ : - too (ErrSyntax). f is not changed.
func Apply(f *File, configKey *keysafe.Key, changes []Change, rand io.Reader) (*File, []Applied, error) {
	d, err := Decrypt(f, configKey)
	if err != nil {
		return nil, nil, err
	}
	outer := f.clone()
	settings := d.Settings.clone()
	var done []Applied
	for _, c := range changes {
		if !validKey(c.Key) {
			return nil, nil, &SyntaxError{Why: fmt.Sprintf("key %q may hold only letters, digits and . _ : -", c.Key)}
		}
		if isEncryptionKey(c.Key) || strings.EqualFold(c.Key, KeyDataFileKey) || strings.EqualFold(c.Key, KeyCryptoState) {
			return nil, nil, fmt.Errorf("%s cannot be set or removed: %w", c.Key, ErrProtected)
		}
		a := Applied{Key: c.Key}
		inHeader, inSettings := outer.Count(c.Key) > 0, settings.Count(c.Key) > 0
		switch {
		case c.Unset:
			a.Action, a.Plain = Absent, inHeader && !inSettings
			if inHeader || inSettings {
				a.Action = Removed
				outer.Delete(c.Key)
				settings.Delete(c.Key)
			}
		case inHeader:
			a.Plain = true
			a.Action = setValue(outer, c.Key, c.Value)
		case inSettings:
			a.Action = setValue(settings, c.Key, c.Value)
		case IsPlainHeaderKey(c.Key):
			a.Plain, a.Action = true, Added
			outer.insertPlain(SettingLine(c.Key, c.Value, outer.EOL()))
		default:
			a.Action = Added
			settings.Set(c.Key, c.Value)
		}
		done = append(done, a)
	}
	out, err := Reseal(outer, configKey, settings.Bytes(), rand)
	if err != nil {
		return nil, nil, err
	}
	return out, done, nil
}

// setValue sets the last setting named key to v (the one VMware reads),
// keeping its line's layout, and says whether that changed anything.
func setValue(f *File, key, v string) string {
	i := f.find(key)
	if f.Lines[i].Value == v {
		return Unchanged
	}
	f.Lines[i] = withValue(f.Lines[i], v)
	return Changed
}

// insertPlain inserts a plain line before the first encryption.* line
// (where VMware keeps the plain settings), or at the end.
func (f *File) insertPlain(l Line) {
	at := len(f.Lines)
	for i, x := range f.Lines {
		if x.Kind == Setting && isEncryptionKey(x.Key) {
			at = i
			break
		}
	}
	if at == len(f.Lines) && at > 0 && f.Lines[at-1].EOL == "" {
		f.Lines[at-1].EOL = l.EOL
	}
	f.Lines = append(f.Lines, Line{})
	copy(f.Lines[at+1:], f.Lines[at:])
	f.Lines[at] = l
}
