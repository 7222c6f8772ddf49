package vmdk

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Limits of the descriptor parser. Every count and size is checked against
// these before anything is allocated.
const (
	// MaxDescriptorSize is the largest descriptor accepted (qemu uses 1 MiB).
	MaxDescriptorSize = 1 << 20
	// MaxExtents is the largest number of extent lines in one descriptor
	// (a 62 TiB twoGbMaxExtent disk has about 31,000 2 GiB extents, VMware
	// Workstation's 4 GiB splits half that).
	MaxExtents = 32768
	// MaxSectors is the largest virtual size accepted, in sectors (64 TiB,
	// VMware's limit is 62 TiB).
	MaxSectors = 1 << 37
	// SectorSize is the VMDK sector: every size and offset in descriptors and
	// sparse headers counts these.
	SectorSize = 512
)

// NoParentCID is the parentCID of a disk without a parent.
const NoParentCID uint32 = 0xffffffff

// Extent access modes of a descriptor extent line.
const (
	AccessRW       = "RW"
	AccessRDONLY   = "RDONLY"
	AccessNOACCESS = "NOACCESS"
)

// Extent types of a descriptor extent line.
const (
	ExtentFlat       = "FLAT"
	ExtentSparse     = "SPARSE"
	ExtentZero       = "ZERO"
	ExtentVMFS       = "VMFS"
	ExtentVMFSSparse = "VMFSSPARSE"
	ExtentVMFSRDM    = "VMFSRDM"
	ExtentVMFSRaw    = "VMFSRAW"
	ExtentSESparse   = "SESPARSE"
)

// ExtentLine is one extent line of a descriptor:
// `ACCESS SECTORS TYPE "FILE" [OFFSET]`.
type ExtentLine struct {
	Access  string // AccessRW, AccessRDONLY or AccessNOACCESS
	Sectors int64  // virtual size covered, in sectors
	Type    string // ExtentFlat, ExtentSparse, ...
	File    string // file name relative to the descriptor's folder; "" for ZERO
	Offset  int64  // FLAT/VMFS: start of the data in File, in sectors
}

// String formats the extent line as it appears in a descriptor.
func (e ExtentLine) String() string {
	if e.Type == ExtentZero && e.File == "" {
		return fmt.Sprintf("%s %d %s", e.Access, e.Sectors, e.Type)
	}
	s := fmt.Sprintf("%s %d %s \"%s\"", e.Access, e.Sectors, e.Type, e.File)
	if e.Offset != 0 || e.Type == ExtentFlat {
		s += " " + strconv.FormatInt(e.Offset, 10)
	}
	return s
}

// Field is one `key = "value"` entry of the disk database (DDB); Value is
// unquoted.
type Field struct {
	Key   string // full key, e.g. "ddb.iofilters"
	Value string
}

// Descriptor is a parsed VMDK descriptor (embedded in a sparse file or a file
// of its own). Known header fields are typed; ddb.* entries are kept in
// order; every other line (comments, unknown keys) is kept verbatim and
// written back in place by String.
//
// A Descriptor built from scratch (the zero value plus fields) serialises
// in VMware's canonical layout.
type Descriptor struct {
	Version            int    // "version", 0 when absent
	Encoding           string // "encoding", "" when absent
	CID                uint32 // content id
	ParentCID          uint32 // NoParentCID when the disk has no parent
	CreateType         string // "createType", e.g. "monolithicSparse"
	ParentFileNameHint string // parent descriptor path, "" when absent
	// EncryptionKeys is the header value `encryptionKeys="vmware:key/..."`
	// as text (the key-locator grammar is vmx/keysafe's business).
	EncryptionKeys string
	Extents        []ExtentLine
	DDB            []Field // ddb.* entries in file order

	layout []layoutLine // nil for a descriptor built from scratch
}

type layoutKind uint8

const (
	layRaw     layoutKind = iota // verbatim line
	layHeader                    // known header key
	layExtents                   // where the extent lines go
	layDDB                       // a ddb key
)

type layoutLine struct {
	kind layoutKind
	text string // layRaw: the line; layHeader/layDDB: the key
}

// header keys known to Descriptor, in canonical order.
var headerKeys = []string{"version", "encoding", "CID", "parentCID", "encryptionKeys", "createType", "parentFileNameHint"}

func isHeaderKey(k string) bool {
	for _, h := range headerKeys {
		if h == k {
			return true
		}
	}
	return false
}

// ParseDescriptor parses descriptor text. Text ends at the first NUL byte
// (embedded descriptors are NUL-padded). name is used in errors only.
// It refuses a descriptor without createType, with a malformed known field,
// or with a malformed extent line; unknown lines are kept.
func ParseDescriptor(data []byte, name string) (*Descriptor, error) {
	if len(data) > MaxDescriptorSize {
		return nil, corruptf(name, -1, "descriptor", "%d bytes, more than the %d accepted", len(data), MaxDescriptorSize)
	}
	if i := bytes.IndexByte(data, 0); i >= 0 {
		data = data[:i]
	}
	d := &Descriptor{ParentCID: NoParentCID}
	text := string(data)
	lines := strings.Split(text, "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	haveCreate := false
	extentsPlaced := false
	lineOff := int64(0)
	for _, raw := range lines {
		off := lineOff
		lineOff += int64(len(raw)) + 1
		// Every trailing CR goes: a stray one kept would come back as a CRLF
		// ending and the text would not be a fixed point of parse/serialise.
		line := strings.TrimRight(raw, "\r")
		t := strings.TrimSpace(line)
		fail := func(field, format string, a ...any) error {
			return corruptf(name, off, "descriptor "+field, format, a...)
		}
		if t == "" || t[0] == '#' {
			d.layout = append(d.layout, layoutLine{layRaw, line})
			continue
		}
		if isExtentLine(t) {
			e, err := parseExtentLine(t)
			if err != nil {
				return nil, fail("extent line", "%q: %s", t, err)
			}
			if len(d.Extents) >= MaxExtents {
				return nil, fail("extent line", "more than %d extents", MaxExtents)
			}
			d.Extents = append(d.Extents, e)
			if !extentsPlaced {
				d.layout = append(d.layout, layoutLine{layExtents, ""})
				extentsPlaced = true
			}
			continue
		}
		eq := strings.IndexByte(t, '=')
		if eq <= 0 {
			d.layout = append(d.layout, layoutLine{layRaw, line})
			continue
		}
		key := strings.TrimSpace(t[:eq])
		val := unquote(strings.TrimSpace(t[eq+1:]))
		switch {
		case strings.HasPrefix(key, "ddb."):
			d.SetDDB(key, val)
			d.layout = append(d.layout, layoutLine{layDDB, key})
			continue
		case !isHeaderKey(key):
			d.layout = append(d.layout, layoutLine{layRaw, line})
			continue
		}
		switch key {
		case "version":
			v, err := strconv.Atoi(val)
			if err != nil || v < 1 || v > 3 {
				return nil, fail("version", "%q is not 1, 2 or 3", val)
			}
			d.Version = v
		case "encoding":
			d.Encoding = val
		case "CID", "parentCID":
			v, err := strconv.ParseUint(val, 16, 32)
			if err != nil {
				return nil, fail(key, "%q is not a 32-bit hex number", val)
			}
			if key == "CID" {
				d.CID = uint32(v)
			} else {
				d.ParentCID = uint32(v)
			}
		case "createType":
			if val == "" {
				return nil, fail(key, "empty")
			}
			d.CreateType = val
			haveCreate = true
		case "parentFileNameHint":
			d.ParentFileNameHint = val
		case "encryptionKeys":
			d.EncryptionKeys = val
		}
		d.layout = append(d.layout, layoutLine{layHeader, key})
	}
	if !haveCreate {
		return nil, corruptf(name, -1, "descriptor createType", "missing")
	}
	return d, nil
}

func isExtentLine(t string) bool {
	for _, a := range []string{AccessRW, AccessRDONLY, AccessNOACCESS} {
		if strings.HasPrefix(t, a+" ") || strings.HasPrefix(t, a+"\t") {
			return true
		}
	}
	return false
}

// parseExtentLine parses `ACCESS SECTORS TYPE ["FILE" [OFFSET]]`.
func parseExtentLine(t string) (ExtentLine, error) {
	var e ExtentLine
	// the file name is the quoted part; fields before it split on blanks
	q := strings.IndexByte(t, '"')
	head, rest := t, ""
	if q >= 0 {
		head, rest = t[:q], t[q:]
	}
	f := strings.Fields(head)
	if len(f) != 3 {
		return e, fmt.Errorf("want ACCESS SECTORS TYPE \"FILE\" [OFFSET]")
	}
	e.Access, e.Type = f[0], f[2]
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil || n <= 0 || n > MaxSectors {
		return e, fmt.Errorf("size %q is not a sector count in 1..%d", f[1], int64(MaxSectors))
	}
	e.Sectors = n
	switch e.Type {
	case ExtentFlat, ExtentSparse, ExtentZero, ExtentVMFS, ExtentVMFSSparse, ExtentVMFSRDM, ExtentVMFSRaw, ExtentSESparse:
	default:
		return e, fmt.Errorf("unknown extent type %q", e.Type)
	}
	if rest == "" {
		if e.Type != ExtentZero {
			return e, fmt.Errorf("no file name")
		}
		return e, nil
	}
	end := strings.IndexByte(rest[1:], '"')
	if end < 0 {
		return e, fmt.Errorf("unterminated file name")
	}
	e.File = rest[1 : 1+end]
	if e.File == "" {
		return e, fmt.Errorf("empty file name")
	}
	tail := strings.Fields(rest[2+end:])
	if len(tail) > 0 {
		// VMFSRDM lines may carry more fields; only FLAT/VMFS offsets matter.
		o, err := strconv.ParseInt(tail[0], 10, 64)
		if err != nil || o < 0 || o > MaxSectors {
			if e.Type == ExtentFlat || e.Type == ExtentVMFS {
				return e, fmt.Errorf("offset %q is not a sector number", tail[0])
			}
		} else if e.Type == ExtentFlat || e.Type == ExtentVMFS {
			e.Offset = o
		}
	}
	return e, nil
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// DDBValue returns the value of a ddb key (full key, e.g. "ddb.uuid").
func (d *Descriptor) DDBValue(key string) (string, bool) {
	for _, f := range d.DDB {
		if f.Key == key {
			return f.Value, true
		}
	}
	return "", false
}

// SetDDB sets a ddb key (full key, "ddb." prefix included), replacing an
// existing entry in place or appending a new one.
func (d *Descriptor) SetDDB(key, value string) {
	for i := range d.DDB {
		if d.DDB[i].Key == key {
			d.DDB[i].Value = value
			return
		}
	}
	d.DDB = append(d.DDB, Field{key, value})
}

// DeleteDDB removes a ddb key.
func (d *Descriptor) DeleteDDB(key string) {
	out := d.DDB[:0]
	for _, f := range d.DDB {
		if f.Key != key {
			out = append(out, f)
		}
	}
	d.DDB = out
}

// IOFilters lists the I/O filters of ddb.iofilters (comma, semicolon or
// blank separated).
func (d *Descriptor) IOFilters() []string {
	v, _ := d.DDBValue("ddb.iofilters")
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ';' || r == ' ' || r == '\t' })
}

// Encrypted reports whether the descriptor carries a VM-encryption mark: an
// encryptionKeys header line or the vmwarevmcrypt I/O filter.
func (d *Descriptor) Encrypted() bool {
	if d.EncryptionKeys != "" {
		return true
	}
	for _, f := range d.IOFilters() {
		if f == "vmwarevmcrypt" {
			return true
		}
	}
	return false
}

// Sectors is the virtual size the extent lines describe, in sectors.
func (d *Descriptor) Sectors() int64 {
	var n int64
	for _, e := range d.Extents {
		n += e.Sectors
	}
	return n
}

// headerLine formats a known header key from the current field values;
// ok is false when the field is absent.
func (d *Descriptor) headerLine(key string) (string, bool) {
	switch key {
	case "version":
		if d.Version == 0 {
			return "", false
		}
		return "version=" + strconv.Itoa(d.Version), true
	case "encoding":
		if d.Encoding == "" {
			return "", false
		}
		return `encoding="` + d.Encoding + `"`, true
	case "CID":
		return fmt.Sprintf("CID=%08x", d.CID), true
	case "parentCID":
		return fmt.Sprintf("parentCID=%08x", d.ParentCID), true
	case "encryptionKeys":
		if d.EncryptionKeys == "" {
			return "", false
		}
		return `encryptionKeys="` + d.EncryptionKeys + `"`, true
	case "createType":
		if d.CreateType == "" {
			return "", false
		}
		return `createType="` + d.CreateType + `"`, true
	case "parentFileNameHint":
		if d.ParentFileNameHint == "" {
			return "", false
		}
		return `parentFileNameHint="` + d.ParentFileNameHint + `"`, true
	}
	return "", false
}

// String serialises the descriptor. A parsed descriptor keeps its comments,
// unknown lines and line order; changed fields are written in place, new
// ones after the last header line or ddb entry. Use Bytes to also validate.
func (d *Descriptor) String() string {
	var b strings.Builder
	nl := func(s string) { b.WriteString(s); b.WriteByte('\n') }
	writeExtents := func() {
		for _, e := range d.Extents {
			nl(e.String())
		}
	}
	if d.layout == nil {
		nl("# Disk DescriptorFile")
		for _, k := range headerKeys {
			if l, ok := d.headerLine(k); ok {
				nl(l)
			}
		}
		nl("")
		nl("# Extent description")
		writeExtents()
		nl("")
		nl("# The Disk Data Base")
		nl("#DDB")
		nl("")
		for _, f := range d.DDB {
			nl(fmt.Sprintf("%s = \"%s\"", f.Key, f.Value))
		}
		return b.String()
	}
	lastHeader, lastDDB, haveExtents := -1, -1, false
	inLayout := map[string]bool{}
	for i, l := range d.layout {
		switch l.kind {
		case layHeader:
			lastHeader = i
			inLayout[l.text] = true
		case layDDB:
			lastDDB = i
			inLayout[l.text] = true
		case layExtents:
			haveExtents = true
		}
	}
	missingHeaders := func() {
		for _, k := range headerKeys {
			if inLayout[k] {
				continue
			}
			if l, ok := d.headerLine(k); ok {
				nl(l)
			}
		}
		if !haveExtents {
			writeExtents()
		}
	}
	missingDDB := func() {
		for _, f := range d.DDB {
			if !inLayout[f.Key] {
				nl(fmt.Sprintf("%s = \"%s\"", f.Key, f.Value))
			}
		}
	}
	if lastHeader < 0 {
		missingHeaders()
	}
	for i, l := range d.layout {
		switch l.kind {
		case layRaw:
			nl(l.text)
		case layHeader:
			if s, ok := d.headerLine(l.text); ok {
				nl(s)
			}
		case layExtents:
			writeExtents()
		case layDDB:
			if v, ok := d.DDBValue(l.text); ok {
				nl(fmt.Sprintf("%s = \"%s\"", l.text, v))
			}
		}
		if i == lastHeader {
			missingHeaders()
		}
		if i == lastDDB {
			missingDDB()
		}
	}
	if lastDDB < 0 {
		missingDDB()
	}
	return b.String()
}

// Bytes validates the descriptor and serialises it like String. It refuses
// values that could not be read back (newlines, NULs, quotes in names),
// no createType, and malformed extent lines.
func (d *Descriptor) Bytes() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	s := d.String()
	if len(s) > MaxDescriptorSize {
		return nil, fmt.Errorf("vmdk: descriptor of %d bytes is larger than %d", len(s), MaxDescriptorSize)
	}
	return []byte(s), nil
}

// Validate checks that the descriptor serialises to text that parses back
// to the same values.
func (d *Descriptor) Validate() error {
	bad := func(s string) bool { return strings.ContainsAny(s, "\n\r\x00\"") }
	switch {
	case d.CreateType == "":
		return fmt.Errorf("vmdk: descriptor has no createType")
	case d.Version < 0 || d.Version > 3:
		return fmt.Errorf("vmdk: descriptor version %d is not 1, 2 or 3", d.Version)
	case bad(d.Encoding), bad(d.CreateType), bad(d.ParentFileNameHint), bad(d.EncryptionKeys):
		return fmt.Errorf("vmdk: descriptor header value holds a quote, newline or NUL")
	case len(d.Extents) > MaxExtents:
		return fmt.Errorf("vmdk: %d extents, more than %d", len(d.Extents), MaxExtents)
	}
	for _, e := range d.Extents {
		if _, err := parseExtentLine(e.String()); err != nil || bad(e.File) || !isExtentLine(e.String()) {
			return fmt.Errorf("vmdk: bad extent line %q", e.String())
		}
	}
	for _, f := range d.DDB {
		if !strings.HasPrefix(f.Key, "ddb.") || bad(f.Key) || strings.ContainsAny(f.Key, "= \t") || bad(f.Value) {
			return fmt.Errorf("vmdk: bad ddb entry %q", f.Key)
		}
	}
	return nil
}

// NewCID returns a random content id, never 0 and never NoParentCID.
func NewCID() uint32 {
	var b [4]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on supported platforms
		}
		if c := binary.LittleEndian.Uint32(b[:]); c != 0 && c != NoParentCID {
			return c
		}
	}
}

// NewContentID sets a fresh CID and, when the key exists or the disk is new,
// a matching ddb.longContentID (32 hex digits ending in the CID), as VMware
// does after a write.
func (d *Descriptor) NewContentID() {
	d.CID = NewCID()
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	d.SetDDB("ddb.longContentID", fmt.Sprintf("%x%08x", b, d.CID))
}

// Keys lists the keys the descriptor holds, header keys then ddb keys, in
// file order (for a format report: names, never values). A key=value line
// the parser does not know is listed too.
func (d *Descriptor) Keys() []string {
	var out []string
	for _, l := range d.layout {
		switch l.kind {
		case layHeader, layDDB:
			out = append(out, l.text)
		case layRaw:
			t := strings.TrimSpace(l.text)
			if k, _, ok := strings.Cut(t, "="); ok && t != "" && t[0] != '#' {
				out = append(out, strings.TrimSpace(k))
			}
		}
	}
	if d.layout == nil {
		out = append(out, headerKeys...)
		for _, f := range d.DDB {
			out = append(out, f.Key)
		}
	}
	return out
}
