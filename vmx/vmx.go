// Package vmx reads and writes VMware .vmx files: the line format
// (docs/formats.md §1), the encrypted part of a VM's settings (encryption.keySafe
// and encryption.data, §5) and the security posture of a VM (vTPM, Secure
// Boot, vMotion encryption, conflicts).
//
// # Parsing
//
// Parse and ParseBytes keep every line as written: order, comments, blank
// lines, line endings (LF or CRLF, per line) and the exact spelling of keys
// and values, so Bytes gives back the input byte for byte. Keys are looked
// up case-insensitively; values are decoded from VMware's |XX escapes.
//
// # Encryption
//
// An encrypted VMX keeps a few plain header lines plus encryption.keySafe
// (a key safe, package keysafe) and encryption.data. DecryptData and
// EncryptData handle encryption.data with the config key the key safe
// wraps; Decrypt and Encrypt do the whole file.
//
// Errors wrap the sentinels of package keysafe: ErrCorrupt for damaged
// input (including a MAC failure on encryption.data once the key safe has
// opened), ErrUnsupported for what vmcrypt does not handle or caps.
package vmx

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// MaxFileSize caps the size of a .vmx file (real ones are a few KiB; an
// encrypted one holds its settings in base64).
const MaxFileSize = 16 << 20

// LineKind says what a line holds.
type LineKind int

// Line kinds.
const (
	Setting LineKind = iota // key = "value"
	Blank                   // empty or white space only
	Comment                 // starts with '#'
	Other                   // anything else, kept as written
)

// Line is one line of a VMX file.
type Line struct {
	Kind  LineKind
	Key   string // as written (Setting only)
	Value string // decoded (Setting only)
	Raw   string // the text as written, without the line ending
	EOL   string // "\n", "\r\n" or "" (last line without a newline)
	// Unterminated marks a setting whose value opens a quote it does not
	// close (a file cut short in the middle of a line).
	Unterminated bool
}

// File is a parsed VMX file.
type File struct {
	Lines []Line
	BOM   bool // the input started with a UTF-8 byte-order mark
}

// ReadFile opens the .vmx at path read-only and parses it; errors name the
// path. A folder, FIFO or device is refused.
func ReadFile(path string) (*File, error) {
	// A FIFO or device would block the open or never end: refuse it
	// before opening.
	if st, err := os.Stat(path); err == nil && !st.IsDir() && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: %w", path, keysafe.ErrUnsupported)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a folder, not a .vmx file", path)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file: %w", path, keysafe.ErrUnsupported)
	}
	v, err := Parse(f, st.Size())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// Parse reads a VMX file of the given size (at most MaxFileSize).
func Parse(r io.ReaderAt, size int64) (*File, error) {
	if size < 0 || size > MaxFileSize {
		return nil, fmt.Errorf("VMX file of %d bytes is larger than the %d allowed: %w", size, MaxFileSize, keysafe.ErrUnsupported)
	}
	b := make([]byte, size)
	if n, err := r.ReadAt(b, 0); n != len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("reading VMX: %w", err)
	}
	return ParseBytes(b)
}

// ParseBytes parses VMX text (at most MaxFileSize bytes). Odd lines are
// kept as Other lines (and listed by Problems), but input that is not VMX
// text at all is refused with ErrCorrupt: a NUL or another control byte,
// or non-blank text without a single `key = "value"` line.
func ParseBytes(b []byte) (*File, error) {
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("VMX text of %d bytes is larger than the %d allowed: %w", len(b), MaxFileSize, keysafe.ErrUnsupported)
	}
	if err := checkText(b); err != nil {
		return nil, err
	}
	f := &File{}
	if bytes.HasPrefix(b, []byte("\xef\xbb\xbf")) {
		f.BOM = true
		b = b[3:]
	}
	s := string(b)
	for len(s) > 0 {
		var raw, eol string
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			raw, eol, s = s[:i], "\n", s[i+1:]
			if strings.HasSuffix(raw, "\r") {
				raw, eol = raw[:len(raw)-1], "\r\n"
			}
		} else {
			raw, s = s, ""
		}
		f.Lines = append(f.Lines, parseLine(raw, eol))
	}
	settings, other := 0, 0
	for _, l := range f.Lines {
		switch l.Kind {
		case Setting:
			settings++
		case Other:
			other++
		}
	}
	if settings == 0 && other > 0 {
		return nil, fmt.Errorf("not a VMX file: %d lines and none of the form key = \"value\": %w", other, keysafe.ErrCorrupt)
	}
	return f, nil
}

// checkText refuses bytes that are not text: a NUL or another control
// byte (tab, CR, LF and form feed aside). Random or binary data has them
// within a few bytes.
func checkText(b []byte) error {
	for i, c := range b {
		if c < 0x20 && c != '\t' && c != '\r' && c != '\n' && c != '\f' || c == 0x7f {
			return fmt.Errorf("not a VMX file: control byte %#02x at offset %d: %w", c, i, keysafe.ErrCorrupt)
		}
	}
	// Bytes >= 0x80 are allowed whatever they encode: .encoding may name
	// a legacy charset (windows-1252, Shift_JIS) that is not UTF-8.
	return nil
}

// Problems lists what is odd in the file, one sentence each: lines that
// are not settings, a setting whose quote is not closed, a last line
// without a line ending (a file cut short). An empty list is a clean file.
func (f *File) Problems() []string {
	var out []string
	for i, l := range f.Lines {
		switch {
		case l.Kind == Other:
			out = append(out, fmt.Sprintf("line %d is not a setting (key = \"value\"): %.60q", i+1, l.Raw))
		case l.Unterminated:
			out = append(out, fmt.Sprintf("line %d (%s) opens a quote it does not close", i+1, l.Key))
		}
	}
	if n := len(f.Lines); n > 0 && f.Lines[n-1].EOL == "" {
		out = append(out, fmt.Sprintf("the last line (%d) has no line ending: the file may have been cut short", n))
	}
	return out
}

func parseLine(raw, eol string) Line {
	l := Line{Raw: raw, EOL: eol}
	t := strings.TrimSpace(raw)
	switch {
	case t == "":
		l.Kind = Blank
		return l
	case t[0] == '#':
		l.Kind = Comment
		return l
	}
	k, v, ok := strings.Cut(t, "=")
	k = strings.TrimSpace(k)
	v = strings.TrimSpace(v)
	if !ok || k == "" || strings.ContainsAny(k, " \t\"") {
		l.Kind = Other
		return l
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	} else if len(v) > 0 && v[0] == '"' {
		v, l.Unterminated = v[1:], true
	}
	l.Kind, l.Key, l.Value = Setting, k, DecodeValue(v)
	return l
}

// DecodeValue decodes VMware's |XX escapes (two hex digits). A '|' not
// followed by two hex digits is kept as it is.
func DecodeValue(v string) string {
	if strings.IndexByte(v, '|') < 0 {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '|' && i+2 < len(v) {
			if hi, ok := unhex(v[i+1]); ok {
				if lo, ok := unhex(v[i+2]); ok {
					b.WriteByte(hi<<4 | lo)
					i += 2
					continue
				}
			}
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// EncodeValue escapes a value for writing: '"', '|', control bytes (e.g. a
// newline, |0A) and bytes that are not part of valid UTF-8 become |XX in
// upper-case hex, as VMware writes |22 and |7C, so that the line is VMX
// text that ParseBytes accepts and DecodeValue gives back v. Valid UTF-8
// (e.g. "é") and '#' stay literal inside quotes (as libvirt's VMX writer
// does).
func EncodeValue(v string) string {
	const hexd = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(v); {
		c := v[i]
		if c >= utf8.RuneSelf {
			if r, n := utf8.DecodeRuneInString(v[i:]); r != utf8.RuneError || n > 1 {
				b.WriteString(v[i : i+n])
				i += n
				continue
			}
		}
		if c == '"' || c == '|' || c < 0x20 || c >= 0x7f {
			b.WriteByte('|')
			b.WriteByte(hexd[c>>4])
			b.WriteByte(hexd[c&15])
		} else {
			b.WriteByte(c)
		}
		i++
	}
	return b.String()
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

// Bytes serialises the file: unchanged lines exactly as read.
func (f *File) Bytes() []byte {
	var b bytes.Buffer
	if f.BOM {
		b.WriteString("\xef\xbb\xbf")
	}
	for _, l := range f.Lines {
		b.WriteString(l.Raw)
		b.WriteString(l.EOL)
	}
	return b.Bytes()
}

// EOL returns the line ending the file uses: that of its first line, or
// "\n" when it has none.
func (f *File) EOL() string {
	for _, l := range f.Lines {
		if l.EOL != "" {
			return l.EOL
		}
	}
	return "\n"
}

// find returns the index of the last setting named key (case-insensitive),
// or -1.
func (f *File) find(key string) int {
	for i := len(f.Lines) - 1; i >= 0; i-- {
		if f.Lines[i].Kind == Setting && strings.EqualFold(f.Lines[i].Key, key) {
			return i
		}
	}
	return -1
}

// Get returns the decoded value of key (case-insensitive; the last one
// wins when a key is repeated, as in VMware).
func (f *File) Get(key string) (string, bool) {
	if i := f.find(key); i >= 0 {
		return f.Lines[i].Value, true
	}
	return "", false
}

// Count returns how many settings are named key (case-insensitive).
func (f *File) Count(key string) int {
	n := 0
	for _, l := range f.Lines {
		if l.Kind == Setting && strings.EqualFold(l.Key, key) {
			n++
		}
	}
	return n
}

// SettingLine builds the line `key = "value"` with the value encoded.
func SettingLine(key, value, eol string) Line {
	return Line{Kind: Setting, Key: key, Value: value, Raw: key + ` = "` + EncodeValue(value) + `"`, EOL: eol}
}

// Set changes the value of key (its last occurrence, keeping the key's
// spelling) or appends `key = "value"` with the file's line ending.
func (f *File) Set(key, value string) {
	if i := f.find(key); i >= 0 {
		f.Lines[i] = SettingLine(f.Lines[i].Key, value, f.Lines[i].EOL)
		return
	}
	eol := f.EOL()
	if n := len(f.Lines); n > 0 && f.Lines[n-1].EOL == "" {
		f.Lines[n-1].EOL = eol
	}
	f.Lines = append(f.Lines, SettingLine(key, value, eol))
}

// Delete removes every setting named key (case-insensitive).
func (f *File) Delete(key string) {
	out := f.Lines[:0]
	for _, l := range f.Lines {
		if l.Kind == Setting && strings.EqualFold(l.Key, key) {
			continue
		}
		out = append(out, l)
	}
	f.Lines = out
}

// Keys returns the setting names in file order (as written).
func (f *File) Keys() []string {
	var ks []string
	for _, l := range f.Lines {
		if l.Kind == Setting {
			ks = append(ks, l.Key)
		}
	}
	return ks
}
