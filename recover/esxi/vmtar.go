package esxi

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Tar archives: ESXi's visor tar (vmtar) and plain tar, read as a stream.
//
// A visor tar (boot modules *.v00, *.vgz, *.tgz) has ustar-like 512-byte
// headers with "visor  \0" at 257 and, at 496, the absolute stream offset
// of the member's data, which lies after all the headers rather than
// after its own header; 504 and 508 hold textPgs and fixUpPgs (docs/formats.md
// §16). WalkTar reads the headers first, then the data region in offset
// order, so a compressed archive is read once, forward, in bounded memory.

// Limits of the visor tar reader.
const (
	// MaxTarMembers caps the members of an archive (also the pending
	// visor members whose data comes later).
	MaxTarMembers = 100_000
	// MaxTarMemberSize caps a member's stated size in the reader; the
	// extractor's Limits are usually lower.
	MaxTarMemberSize = 1 << 40
	tarBlock         = 512
	visorMagic       = "visor  \x00"
)

// EntryType is the kind of an archive member.
type EntryType uint8

// Entry types.
const (
	TypeFile EntryType = iota
	TypeDir
	TypeSymlink
	TypeHardlink
	TypeDevice // character or block device
	TypeFIFO
	TypeOther // anything else (skipped when extracting)
)

var entryTypeNames = [...]string{"file", "dir", "symlink", "hardlink", "device", "fifo", "other"}

func (t EntryType) String() string {
	if int(t) < len(entryTypeNames) {
		return entryTypeNames[t]
	}
	return "other"
}

// MarshalText makes JSON show the name.
func (t EntryType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText reads a name MarshalText wrote.
func (t *EntryType) UnmarshalText(b []byte) error {
	for i, n := range entryTypeNames {
		if n == string(b) {
			*t = EntryType(i)
			return nil
		}
	}
	return fmt.Errorf("esxi: unknown entry type %q", b)
}

// Entry is one archive member, from either reader.
type Entry struct {
	Name     string    `json:"name"` // as stored
	Type     EntryType `json:"type"`
	Typeflag byte      `json:"-"`
	Mode     int64     `json:"mode"` // permission and special bits as stored
	Size     int64     `json:"size"`
	Linkname string    `json:"linkname,omitempty"`
	ModTime  time.Time `json:"mtime"`
	UID      int       `json:"uid"`
	GID      int       `json:"gid"`
	Uname    string    `json:"uname,omitempty"`
	Gname    string    `json:"gname,omitempty"`

	// Visor tar only.
	Visor        bool   `json:"visor,omitempty"`
	DataOffset   int64  `json:"dataOffset,omitempty"` // absolute stream offset of the data (0: after the header)
	TextPgs      uint32 `json:"textPgs,omitempty"`
	FixUpPgs     uint32 `json:"fixUpPgs,omitempty"`
	HeaderOffset int64  `json:"headerOffset"`
}

func typeOf(flag byte) EntryType {
	switch flag {
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		// A GNU sparse member reaches here only from archive/tar, which
		// reads it with its real (expanded) size.
		return TypeFile
	case tar.TypeDir:
		return TypeDir
	case tar.TypeSymlink:
		return TypeSymlink
	case tar.TypeLink:
		return TypeHardlink
	case tar.TypeChar, tar.TypeBlock:
		return TypeDevice
	case tar.TypeFifo:
		return TypeFIFO
	}
	return TypeOther
}

// ParseVMTarHeader parses one 512-byte header found at stream offset off.
// end is true for an all-zero block (the end of the archive). It checks
// the checksum and every number; a PAX or GNU extension header
// (x, g, L, K, S) is keysafe.ErrUnsupported (visor tars do not use them:
// WalkTar reads archives without a visor header with archive/tar).
func ParseVMTarHeader(name string, b []byte, off int64) (e *Entry, end bool, err error) {
	if len(b) != tarBlock {
		return nil, false, corruptf(name, off, "tar header", "%d bytes, want %d", len(b), tarBlock)
	}
	if allZero(b) {
		return nil, true, nil
	}
	want, err := parseOctal(b[148:156])
	if err != nil {
		return nil, false, corruptf(name, off+148, "tar checksum", "%v", err)
	}
	var unsigned, signed int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	if want != unsigned && want != signed {
		return nil, false, corruptf(name, off+148, "tar checksum", "%d, the header sums to %d", want, unsigned)
	}
	e = &Entry{HeaderOffset: off, Typeflag: b[156]}
	e.Name = cstr(b[0:100])
	e.Linkname = cstr(b[157:257])
	magic := string(b[257:265])
	var prefix string
	switch {
	case magic == visorMagic:
		e.Visor = true
		prefix = cstr(b[345:496])
		e.DataOffset = int64(le32(b[496:]))
		e.TextPgs = le32(b[504:])
		e.FixUpPgs = le32(b[508:])
	case magic == "ustar\x0000":
		prefix = cstr(b[345:500])
	}
	if magic == visorMagic || strings.HasPrefix(magic, "ustar") {
		e.Uname, e.Gname = cstr(b[265:297]), cstr(b[297:329])
	}
	if prefix != "" {
		e.Name = prefix + "/" + e.Name
	}
	fields := []struct {
		dst   *int64
		field string
		at    int
		n     int
	}{{&e.Mode, "mode", 100, 8}, {nil, "uid", 108, 8}, {nil, "gid", 116, 8}, {&e.Size, "size", 124, 12}, {nil, "mtime", 136, 12}}
	var vals [5]int64
	for i, f := range fields {
		v, err := parseNumeric(b[f.at : f.at+f.n])
		if err != nil || v < 0 {
			return nil, false, corruptf(name, off+int64(f.at), "tar "+f.field+" of "+strconv.Quote(e.Name), "%q is not a number", b[f.at:f.at+f.n])
		}
		vals[i] = v
	}
	e.Mode, e.Size = vals[0], vals[3]
	e.UID, e.GID = int(min(vals[1], 1<<31-1)), int(min(vals[2], 1<<31-1))
	e.ModTime = time.Unix(min(vals[4], 1<<40), 0).UTC()
	if e.Size > MaxTarMemberSize {
		return nil, false, unsupportedf(name, off+124, "tar size of "+strconv.Quote(e.Name), "%d bytes, more than %d", e.Size, int64(MaxTarMemberSize))
	}
	switch e.Typeflag {
	case tar.TypeXHeader, tar.TypeXGlobalHeader, tar.TypeGNULongName, tar.TypeGNULongLink, tar.TypeGNUSparse:
		return nil, false, unsupportedf(name, off+156, "tar type of "+strconv.Quote(e.Name), "extension header %q in a visor tar", e.Typeflag)
	}
	e.Type = typeOf(e.Typeflag)
	if e.Type == TypeFile && strings.HasSuffix(e.Name, "/") && e.Typeflag == tar.TypeRegA {
		e.Type = TypeDir // old tars mark directories by the trailing slash
	}
	if e.Name == "" {
		return nil, false, corruptf(name, off, "tar name", "empty")
	}
	return e, false, nil
}

// Extract reads the tar stream r (uncompressed) and extracts it safely
// under outdir (see Extractor): all of it, or nothing. It returns the
// extractor (counts, skipped members) and the archive format.
func Extract(archive string, r io.Reader, outdir string, lim Limits) (*Extractor, string, error) {
	x, err := NewExtractor(outdir, archive, lim)
	if err != nil {
		return nil, "", err
	}
	format, err := WalkTar(archive, r, x.Add)
	if err == nil {
		err = x.Commit()
	} else {
		x.Abort()
	}
	if err != nil {
		return nil, format, err
	}
	return x, format, nil
}

// WalkTar reads a tar stream (uncompressed: see Decompress) and calls fn
// for every member with a reader of its data (empty for members without
// data). A visor tar is read by ParseVMTarHeader: members without data
// first, in header order, then the data members in data-offset order. Any
// other tar is read by archive/tar (ustar, PAX, GNU, sparse members with
// their real size). It returns "visor tar" or "tar". Data that fn does not
// read is skipped. fn's error stops the walk and is returned as is.
func WalkTar(name string, r io.Reader, fn func(*Entry, io.Reader) error) (string, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(tarBlock)
	if len(head) < tarBlock {
		if err == nil || err == io.EOF {
			return "", corruptf(name, 0, "tar header", "%d bytes: not a tar archive", len(head))
		}
		return "", fmt.Errorf("%s: %w", name, err)
	}
	format := "tar"
	if string(head[257:265]) == visorMagic {
		format = "visor tar"
		err = walkVisor(name, br, fn)
	} else {
		if !allZero(head) && string(head[257:262]) != "ustar" {
			if _, _, err := ParseVMTarHeader(name, head, 0); err != nil {
				return "", corruptf(name, 0, "tar header", "not a tar archive")
			}
		}
		err = walkStdTar(name, br, fn)
	}
	if err != nil {
		return format, err
	}
	// Read to the end, so that a compressed stream's checksum is checked.
	n, err := io.Copy(io.Discard, io.LimitReader(br, maxTrailing+1))
	if err != nil {
		return format, err
	}
	if n > maxTrailing {
		return format, corruptf(name, -1, "tar end", "more than %d bytes after the end of the archive", maxTrailing)
	}
	return format, nil
}

// maxTrailing caps what is read after a tar's end marker (record padding,
// a compressed stream's tail) to check a compressed stream's checksum.
const maxTrailing = 64 << 20

func walkStdTar(name string, r io.Reader, fn func(*Entry, io.Reader) error) error {
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader) {
				return corruptf(name, -1, "tar member "+strconv.Itoa(n+1), "%v", err)
			}
			return fmt.Errorf("%s: %w", name, err)
		}
		if n >= MaxTarMembers {
			return &UnsafeMemberError{Archive: name, Member: h.Name, Reason: fmt.Sprintf("more than %d members", MaxTarMembers), Limit: true}
		}
		e := &Entry{Name: h.Name, Typeflag: h.Typeflag, Mode: h.Mode, Size: h.Size, Linkname: h.Linkname,
			ModTime: h.ModTime.UTC(), UID: h.Uid, GID: h.Gid, Uname: h.Uname, Gname: h.Gname, HeaderOffset: -1}
		e.Type = typeOf(h.Typeflag)
		if e.Type != TypeFile {
			e.Size = 0 // archive/tar reads no data for them either
		}
		if err := fn(e, tr); err != nil {
			return err
		}
	}
}

func walkVisor(name string, r io.Reader, fn func(*Entry, io.Reader) error) error {
	var pos int64
	var pending []*Entry
	block := make([]byte, tarBlock)
	count := 0
	for {
		n, err := io.ReadFull(r, block)
		if n == 0 && err == io.EOF {
			break // no end marker: as archive/tar, a clean end
		}
		if err != nil {
			if err == io.ErrUnexpectedEOF {
				return corruptf(name, pos, "tar header", "truncated")
			}
			return fmt.Errorf("%s: %w", name, err)
		}
		e, end, err := ParseVMTarHeader(name, block, pos)
		pos += tarBlock
		if err != nil {
			return err
		}
		if end {
			break
		}
		if count++; count > MaxTarMembers {
			return &UnsafeMemberError{Archive: name, Member: e.Name, Reason: fmt.Sprintf("more than %d members", MaxTarMembers), Limit: true}
		}
		if e.Type != TypeFile {
			e.Size = 0
		}
		switch {
		case e.Size == 0:
			if err := fn(e, bytes.NewReader(nil)); err != nil {
				return err
			}
		case e.DataOffset != 0:
			pending = append(pending, e)
		default: // data after the header, as in any tar
			lr := io.LimitReader(r, e.Size)
			if err := fn(e, lr); err != nil {
				return err
			}
			if err := skip(r, lr.(*io.LimitedReader).N+pad512(e.Size)); err != nil {
				return corruptf(name, pos, "tar data of "+strconv.Quote(e.Name), "truncated")
			}
			pos += e.Size + pad512(e.Size)
		}
	}
	sort.SliceStable(pending, func(i, j int) bool { return pending[i].DataOffset < pending[j].DataOffset })
	for _, e := range pending {
		if e.DataOffset < pos {
			return corruptf(name, e.HeaderOffset+496, "visor data offset of "+strconv.Quote(e.Name),
				"%d lies before %d (inside the headers or another member's data)", e.DataOffset, pos)
		}
		if err := skip(r, e.DataOffset-pos); err != nil {
			return corruptf(name, e.HeaderOffset+496, "visor data offset of "+strconv.Quote(e.Name), "%d is past the end of the archive", e.DataOffset)
		}
		pos = e.DataOffset
		lr := &io.LimitedReader{R: r, N: e.Size}
		if err := fn(e, lr); err != nil {
			return err
		}
		if err := skip(r, lr.N); err != nil {
			return corruptf(name, e.DataOffset, "visor data of "+strconv.Quote(e.Name), "%d bytes run past the end of the archive", e.Size)
		}
		pos += e.Size
	}
	return nil
}

// skip discards n bytes; a short stream is io.ErrUnexpectedEOF.
func skip(r io.Reader, n int64) error {
	if n <= 0 {
		return nil
	}
	m, err := io.CopyN(io.Discard, r, n)
	if m < n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	return nil
}

func pad512(n int64) int64 { return (tarBlock - n%tarBlock) % tarBlock }

// Compression names what Decompress found.
type Compression string

// Compressions.
const (
	CompressionNone Compression = "none"
	CompressionGzip Compression = "gzip"
)

// Decompress sniffs r: gzip is decompressed (the standard library,
// multi-member streams included); anything else is returned as is. xz,
// bzip2 and zstd are keysafe.ErrUnsupported: vmcrypt carries no decoder
// for them (decompress first: `xz -dc FILE | vmcrypt esxi vmtar -`).
func Decompress(name string, r io.Reader) (io.Reader, Compression, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(6)
	if err != nil && err != io.EOF {
		return nil, "", fmt.Errorf("%s: %w", name, err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, "", corruptf(name, 0, "gzip header", "%v", err)
		}
		return &gzipErrs{name: name, r: zr}, CompressionGzip, nil
	case bytes.HasPrefix(magic, []byte("\xfd7zXZ\x00")):
		return nil, "", unsupportedf(name, 0, "compression", "xz is not supported: decompress it first (xz -dc %s > plain) and read the plain archive", name)
	case bytes.HasPrefix(magic, []byte("BZh")):
		return nil, "", unsupportedf(name, 0, "compression", "bzip2 is not supported: decompress it first (bzip2 -dc)")
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return nil, "", unsupportedf(name, 0, "compression", "zstd is not supported: decompress it first (zstd -dc)")
	}
	return br, CompressionNone, nil
}

// gzipErrs turns gzip's format errors into keysafe.ErrCorrupt.
type gzipErrs struct {
	name string
	r    io.Reader
}

func (g *gzipErrs) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if err != nil && err != io.EOF {
		if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) || isFlateError(err) {
			err = &FormatError{File: g.name, Offset: -1, Field: "gzip stream", Msg: err.Error(), Err: keysafe.ErrCorrupt}
		}
	}
	return n, err
}

func isFlateError(err error) bool {
	var ce flate.CorruptInputError
	return errors.As(err, &ce)
}

func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// parseNumeric reads a tar number: octal (NUL/space padded) or GNU
// base-256 (high bit of the first byte set; negative values refused).
func parseNumeric(b []byte) (int64, error) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		if b[0]&0x40 != 0 {
			return 0, errors.New("negative base-256 number")
		}
		var v int64
		for i, c := range b {
			if i == 0 {
				c &= 0x7f
			}
			if v > (1<<62)>>8 {
				return 0, errors.New("base-256 number too large")
			}
			v = v<<8 | int64(c)
		}
		return v, nil
	}
	return parseOctal(b)
}

func parseOctal(b []byte) (int64, error) {
	s := strings.Trim(cstr(b), " ")
	if i := strings.IndexByte(s, ' '); i >= 0 {
		s = s[:i]
	}
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseInt(s, 8, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not octal", s)
	}
	return v, nil
}
