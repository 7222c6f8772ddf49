// Package datafile reads and writes the encrypted container VMware uses for
// a VM's data files: .nvram (with the vTPM state), .vswp, .vmsn, .vmss and
// .vmem (docs/formats.md §9).
//
// # Layout (reported from a public reverse-engineering of Workstation files)
//
//	header, 4096 bytes, plain:
//	  0x00 u32 magic = 0x8943dd9e   0x04 u32 version (1 .vmsn, 2 .vmem seen)
//	  0x08 u32 dataPerPage = 4064   0x0c u32 ivSize = 16   0x10 u32 macSize = 16
//	  0x18 u64 logicalSize          rest zero
//	pages from 0x1000, each 4096 bytes: ciphertext(4064) || IV(16) || MAC(16)
//	  plain = AES-256-CBC-decrypt(dataFileKey[:32], IV, ciphertext), no padding;
//	  concatenate, trim to logicalSize.
//
// # MAC (MODEL)
//
// The page MAC is a MODEL: VMware has not published it. vmcrypt defines it as
//
//	MAC = first 16 bytes of HMAC-SHA256(dataFileKey, u64 pageIndex || IV || ciphertext)
//
// with pageIndex counting from 0 at offset 0x1000 and the whole dataFileKey
// (32 or 64 bytes) as HMAC key. Real files use a MAC that is not public, so
// readers apply an all-or-nothing rule (docs/formats.md §9): every page
// matches the MODEL: "verified (model)", and a page that does not is damage
// (ErrMACMismatch); no page matches: an unknown scheme, decrypted without
// a MAC check ("not checked", MACUnknown; Options.StrictMAC refuses it);
// some match and some do not: damaged. What can still be checked is: the
// header, the page count against logicalSize, the zero padding after it,
// and the plaintext's own magic (Options.CheckPlain).
//
// # Wrong key versus corruption
//
// The dataFileKey comes out of the VM's decrypted settings, whose own MAC
// has already proved the key that opened the VMX right. A page MAC that
// then fails — even on page 0 — is therefore reported as corruption
// (keysafe.ErrCorrupt, exit code 5), never as a wrong key.
//
// # Use
//
// NewReader parses and validates the header and returns an io.ReaderAt over
// the plaintext, safe for concurrent use; Reader.WriteTo decrypts the whole
// file in order. Encrypt writes the container, for fixtures and tests.
package datafile

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Constants of the container (docs/formats.md §9).
const (
	// Magic is the u32 at offset 0 of every data file.
	Magic uint32 = 0x8943dd9e
	// HeaderSize is the size of the plain header; pages start after it.
	HeaderSize = 4096
	// PageSize is the size of one stored page.
	PageSize = 4096
	// DataPerPage is the plaintext carried by one page.
	DataPerPage = 4064
	// IVSize is the CBC IV stored after each page's ciphertext.
	IVSize = 16
	// MACSize is the MAC stored after each page's IV.
	MACSize = 16
	// MinVersion and MaxVersion bound the versions accepted (1 and 2 are
	// the ones seen in real files).
	MinVersion = 1
	MaxVersion = 2
	// MaxPages caps the number of pages of one file (16 TiB of plaintext),
	// far above any VM's memory or swap file.
	MaxPages = 1 << 32
)

// Header field offsets.
const (
	offMagic       = 0x00
	offVersion     = 0x04
	offDataPerPage = 0x08
	offIVSize      = 0x0c
	offMACSize     = 0x10
	offLogicalSize = 0x18
	headerUsed     = 0x20
)

// Header is the parsed plain header of a data file.
type Header struct {
	Version     uint32 // 1 or 2
	LogicalSize int64  // plaintext bytes
}

// Pages is the number of pages that hold LogicalSize bytes.
func (h Header) Pages() int64 { return (h.LogicalSize + DataPerPage - 1) / DataPerPage }

// Marshal returns the 4096-byte header.
func (h Header) Marshal() []byte {
	b := make([]byte, HeaderSize)
	le := binary.LittleEndian
	le.PutUint32(b[offMagic:], Magic)
	le.PutUint32(b[offVersion:], h.Version)
	le.PutUint32(b[offDataPerPage:], DataPerPage)
	le.PutUint32(b[offIVSize:], IVSize)
	le.PutUint32(b[offMACSize:], MACSize)
	le.PutUint64(b[offLogicalSize:], uint64(h.LogicalSize))
	return b
}

// ErrMACMismatch is a page whose MAC is not the MODEL MAC; it wraps
// keysafe.ErrCorrupt.
var ErrMACMismatch = fmt.Errorf("page MAC mismatch: %w", keysafe.ErrCorrupt)

// Error is a problem with a data file, at a byte offset of the file.
// It wraps keysafe.ErrCorrupt or keysafe.ErrUnsupported.
type Error struct {
	File   string // the name given in Options
	Offset int64  // byte offset in the file
	Field  string // header field or "page N"
	Msg    string
	Err    error
}

func (e *Error) Error() string {
	what := "corrupt"
	if errors.Is(e.Err, keysafe.ErrUnsupported) {
		what = "unsupported"
	}
	name := e.File
	if name == "" {
		name = "data file"
	}
	return fmt.Sprintf("%s at offset %d: %s %s: %s", name, e.Offset, what, e.Field, e.Msg)
}

// Unwrap returns the sentinel.
func (e *Error) Unwrap() error { return e.Err }

func corrupt(file string, off int64, field, format string, a ...any) error {
	return &Error{File: file, Offset: off, Field: field, Msg: fmt.Sprintf(format, a...), Err: keysafe.ErrCorrupt}
}

func unsupported(file string, off int64, field, format string, a ...any) error {
	return &Error{File: file, Offset: off, Field: field, Msg: fmt.Sprintf(format, a...), Err: keysafe.ErrUnsupported}
}

// ParseHeader reads and checks the header of a data file of size bytes.
// name is used in errors only. logicalSize must fit in the pages the file
// holds. Errors wrap keysafe.ErrCorrupt or keysafe.ErrUnsupported.
func ParseHeader(r io.ReaderAt, size int64, name string) (Header, error) {
	if size < HeaderSize {
		return Header{}, corrupt(name, 0, "header", "file is %d bytes, shorter than the %d-byte header", size, HeaderSize)
	}
	b := make([]byte, HeaderSize)
	if n, err := r.ReadAt(b, 0); n != HeaderSize {
		return Header{}, fmt.Errorf("%s: reading header: %w", name, noEOF(err))
	}
	return parseHeader(b, size, name)
}

func parseHeader(b []byte, size int64, name string) (Header, error) {
	le := binary.LittleEndian
	if m := le.Uint32(b[offMagic:]); m != Magic {
		return Header{}, corrupt(name, offMagic, "magic", "got %#08x, want %#08x (not an encrypted VMware data file)", m, Magic)
	}
	v := le.Uint32(b[offVersion:])
	if v < MinVersion || v > MaxVersion {
		return Header{}, unsupported(name, offVersion, "version", "version %d, only %d..%d are known", v, MinVersion, MaxVersion)
	}
	for _, f := range []struct {
		off  int
		name string
		want uint32
	}{{offDataPerPage, "dataPerPage", DataPerPage}, {offIVSize, "ivSize", IVSize}, {offMACSize, "macSize", MACSize}} {
		if got := le.Uint32(b[f.off:]); got != f.want {
			return Header{}, unsupported(name, int64(f.off), f.name, "%d, only %d is known", got, f.want)
		}
	}
	if i := nonZero(b[0x14:0x18]); i >= 0 {
		return Header{}, unsupported(name, int64(0x14+i), "reserved header bytes", "non-zero byte, the format has them zero")
	}
	if i := nonZero(b[headerUsed:HeaderSize]); i >= 0 {
		return Header{}, unsupported(name, int64(headerUsed+i), "reserved header bytes", "non-zero byte, the format has them zero")
	}
	ls := le.Uint64(b[offLogicalSize:])
	avail := (size - HeaderSize) / PageSize
	if avail > MaxPages {
		avail = MaxPages
	}
	if ls > uint64(avail)*DataPerPage {
		return Header{}, corrupt(name, offLogicalSize, "logicalSize", "%d bytes need %d pages, the file holds %d (truncated?)", ls, (ls+DataPerPage-1)/DataPerPage, avail)
	}
	// The header is outside the MODEL MAC: the page count must be exactly
	// what logicalSize needs, so that a changed logicalSize (or pages
	// appended or cut) is caught here rather than written as wrong output.
	need := (int64(ls) + DataPerPage - 1) / DataPerPage
	if want := HeaderSize + need*PageSize; size != want {
		return Header{}, corrupt(name, offLogicalSize, "logicalSize", "%d bytes need %d pages (a %d-byte file), but the file is %d bytes: logicalSize was changed, or the file was cut or extended", ls, need, want, size)
	}
	return Header{Version: v, LogicalSize: int64(ls)}, nil
}

func nonZero(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return -1
}

func noEOF(err error) error {
	if err == nil || err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Options tune a Reader.
type Options struct {
	// Name names the file in errors (e.g. "vm.nvram").
	Name string
	// IgnoreMAC skips the page MAC rule entirely: pages are decrypted
	// whatever their MAC (a damaged file read as far as it goes).
	IgnoreMAC bool
	// StrictMAC refuses a file whose pages match no known MAC (the
	// unknown-scheme case) with ErrMACUnknown instead of decrypting it.
	StrictMAC bool
	// CheckPlain, when set, checks the first page's plaintext (e.g. the
	// magic of a .vmsn) of a file whose MAC is of an unknown scheme: the
	// check that remains. Its error (ErrCorrupt) is returned by NewReader.
	CheckPlain func(first []byte) error
}

// MAC statuses of a data file (the all-or-nothing rule of
// docs/formats.md §9).
const (
	// MACModel: the pages carry vmcrypt's MODEL MAC; every page read is
	// checked against it, a mismatch is damage (ErrMACMismatch).
	MACModel = "verified (model)"
	// MACUnknown: no page matches the MODEL MAC: the file uses a MAC
	// scheme that is not public. It is decrypted without a MAC check; a
	// page that does match the MODEL then means a mixed, damaged file.
	MACUnknown = "not checked (unknown scheme)"
	// MACIgnored: the MAC rule was switched off (Options.IgnoreMAC).
	MACIgnored = "not checked (ignored)"
)

// ErrMACUnknown is a file whose pages match no known MAC, refused because
// Options.StrictMAC asked for a checked MAC. It wraps keysafe.ErrUnsupported.
var ErrMACUnknown = fmt.Errorf("the data-file MAC scheme is not known, so the data cannot be authenticated: %w", keysafe.ErrUnsupported)

// macProbePages is how many pages NewReader checks to decide the MAC
// scheme (spread over the file): one matching page means the MODEL, and
// then every page must match.
const macProbePages = 8

// checkKey accepts a 32-byte AES-256 or 64-byte XTS-AES-256 dataFileKey.
func checkKey(key []byte) error {
	if len(key) != 32 && len(key) != 64 {
		return fmt.Errorf("datafile: dataFileKey is %d bytes, want 32 (AES-256) or 64 (XTS-AES-256): %w", len(key), keysafe.ErrUnsupported)
	}
	return nil
}

// Reader decrypts a data file. It is an io.ReaderAt over the plaintext
// (LogicalSize bytes) and safe for concurrent use.
type Reader struct {
	r      io.ReaderAt
	hdr    Header
	name   string
	ignore bool
	model  bool // pages carry the MODEL MAC (else: unknown scheme)
	block  cipher.Block
	key    []byte
	pool   sync.Pool // *pageState
}

// pageState is the per-goroutine scratch of a Reader: one stored page, a
// CBC decrypter and an HMAC, reused so that reading allocates nothing per
// page.
type pageState struct {
	page [PageSize]byte
	cbc  cipher.BlockMode
	mac  hash.Hash
	sum  [sha256.Size]byte
	idx  [8]byte
}

// NewReader parses the header of r (size bytes) and returns a Reader that
// decrypts it with dataFileKey (32 or 64 bytes; AES uses the first 32, the
// MODEL MAC all of it). Nothing is decrypted yet: a wrong key or a damaged
// page shows on the first read of that page.
func NewReader(r io.ReaderAt, size int64, dataFileKey []byte, opts *Options) (*Reader, error) {
	if opts == nil {
		opts = &Options{}
	}
	if err := checkKey(dataFileKey); err != nil {
		return nil, err
	}
	h, err := ParseHeader(r, size, opts.Name)
	if err != nil {
		return nil, err
	}
	blk, err := aes.NewCipher(dataFileKey[:32])
	if err != nil {
		return nil, err
	}
	rd := &Reader{r: r, hdr: h, name: opts.Name, ignore: opts.IgnoreMAC, block: blk, key: append([]byte(nil), dataFileKey...)}
	zeroIV := make([]byte, aes.BlockSize)
	rd.pool.New = func() any {
		return &pageState{cbc: cipher.NewCBCDecrypter(blk, zeroIV), mac: hmac.New(sha256.New, rd.key)}
	}
	if !rd.ignore {
		if err := rd.decideMAC(); err != nil {
			return nil, err
		}
		if !rd.model && opts.StrictMAC {
			return nil, &Error{File: rd.name, Offset: HeaderSize + DataPerPage + IVSize, Field: "page MACs", Msg: "no page matches vmcrypt's MODEL MAC and a checked MAC was required", Err: ErrMACUnknown}
		}
	}
	if err := rd.checkPadding(); err != nil {
		return nil, err
	}
	if opts.CheckPlain != nil && !rd.model && !rd.ignore && h.LogicalSize > 0 {
		first := make([]byte, min(int64(DataPerPage), h.LogicalSize))
		if _, err := rd.ReadAt(first, 0); err != nil && err != io.EOF {
			return nil, err
		}
		if err := opts.CheckPlain(first); err != nil {
			return nil, &Error{File: rd.name, Offset: HeaderSize, Field: "plaintext", Msg: err.Error(), Err: keysafe.ErrCorrupt}
		}
	}
	return rd, nil
}

// decideMAC applies the all-or-nothing rule: it checks the MODEL MAC of
// up to macProbePages pages spread over the file. All match: the MODEL
// (every later read is checked). None match: an unknown scheme. Some
// match and some do not: damaged, naming the first bad page.
func (r *Reader) decideMAC() error {
	pages := r.hdr.Pages()
	if pages == 0 {
		r.model = true
		return nil
	}
	st := r.pool.Get().(*pageState)
	defer r.pool.Put(st)
	n := min(pages, macProbePages)
	firstBad, firstGood := int64(-1), int64(-1)
	for i := int64(0); i < n; i++ {
		pg := i * (pages - 1) / max(n-1, 1)
		fo := HeaderSize + pg*PageSize
		if k, err := r.r.ReadAt(st.page[:], fo); k != PageSize {
			return fmt.Errorf("datafile: %s: reading page %d at offset %d: %w", r.name, pg, fo, noEOF(err))
		}
		if r.macMatches(st, pg, st.page[:]) {
			if firstGood < 0 {
				firstGood = pg
			}
		} else if firstBad < 0 {
			firstBad = pg
		}
	}
	switch {
	case firstBad < 0:
		r.model = true
	case firstGood >= 0:
		return r.macError(firstBad, fmt.Sprintf("mismatch while page %d matches vmcrypt's MODEL MAC: some pages match and others do not, so the file is damaged", firstGood))
	}
	return nil
}

// MACStatus says how the pages are authenticated: MACModel, MACUnknown or
// MACIgnored.
func (r *Reader) MACStatus() string {
	switch {
	case r.ignore:
		return MACIgnored
	case r.model:
		return MACModel
	}
	return MACUnknown
}

func (r *Reader) macMatches(st *pageState, pg int64, b []byte) bool {
	sum := pageMAC(st.mac, st.sum[:0], st.idx[:], uint64(pg), b[DataPerPage:DataPerPage+IVSize], b[:DataPerPage])
	return hmac.Equal(sum[:MACSize], b[DataPerPage+IVSize:PageSize])
}

func (r *Reader) macError(pg int64, msg string) error {
	return &Error{File: r.name, Offset: HeaderSize + pg*PageSize + DataPerPage + IVSize, Field: fmt.Sprintf("page %d MAC", pg), Msg: msg, Err: ErrMACMismatch}
}

// checkPadding decrypts the last page and checks that the plaintext past
// logicalSize is zero, as writers pad: a logicalSize lowered into data
// (which the MODEL MAC does not cover) is caught before anything is read.
// A logicalSize raised within the zero padding cannot be told apart.
func (r *Reader) checkPadding() error {
	ls := r.hdr.LogicalSize
	if ls%DataPerPage == 0 {
		return nil
	}
	pg := ls / DataPerPage
	st := r.pool.Get().(*pageState)
	defer r.pool.Put(st)
	fo := HeaderSize + pg*PageSize
	if n, err := r.r.ReadAt(st.page[:], fo); n != PageSize {
		return fmt.Errorf("datafile: %s: reading page %d at offset %d: %w", r.name, pg, fo, noEOF(err))
	}
	if err := r.open(st, pg, st.page[:]); err != nil {
		return err
	}
	if i := nonZero(st.page[ls%DataPerPage : DataPerPage]); i >= 0 {
		return corrupt(r.name, offLogicalSize, "logicalSize", "%d, but the last page holds data after it (at plaintext offset %d): logicalSize was changed", ls, ls+int64(i))
	}
	return nil
}

// Header returns the parsed header.
func (r *Reader) Header() Header { return r.hdr }

// Size is the plaintext size (the header's logicalSize).
func (r *Reader) Size() int64 { return r.hdr.LogicalSize }

// ReadAt reads plaintext at off. It returns io.EOF with n < len(p) at the
// end of the plaintext, and an error wrapping keysafe.ErrCorrupt naming the
// file, page and offset when a page's MAC does not match.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("datafile: %s: negative offset %d", r.name, off)
	}
	if off >= r.hdr.LogicalSize {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	st := r.pool.Get().(*pageState)
	defer r.pool.Put(st)
	n := 0
	for n < len(p) && off < r.hdr.LogicalSize {
		pg := off / DataPerPage
		in := int(off % DataPerPage)
		plain, err := r.page(st, pg)
		if err != nil {
			return n, err
		}
		c := copy(p[n:], plain[in:])
		n += c
		off += int64(c)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// page reads, checks and decrypts page pg into st.page and returns the part
// of the plaintext inside logicalSize.
func (r *Reader) page(st *pageState, pg int64) ([]byte, error) {
	fo := HeaderSize + pg*PageSize
	if n, err := r.r.ReadAt(st.page[:], fo); n != PageSize {
		return nil, fmt.Errorf("datafile: %s: reading page %d at offset %d: %w", r.name, pg, fo, noEOF(err))
	}
	if err := r.open(st, pg, st.page[:]); err != nil {
		return nil, err
	}
	end := min(int64(DataPerPage), r.hdr.LogicalSize-pg*DataPerPage)
	return st.page[:end], nil
}

// open checks the MAC of the stored page b (page index pg) and decrypts its
// ciphertext in place.
func (r *Reader) open(st *pageState, pg int64, b []byte) error {
	ct := b[:DataPerPage]
	iv := b[DataPerPage : DataPerPage+IVSize]
	if !r.ignore {
		match := r.macMatches(st, pg, b)
		switch {
		case r.model && !match:
			return r.macError(pg, "mismatch: the other pages carry vmcrypt's MODEL MAC, so this page is damaged")
		case !r.model && match:
			return r.macError(pg, "matches vmcrypt's MODEL MAC while the file's other pages do not: some pages match and others do not, so the file is damaged")
		}
	}
	st.cbc.(interface{ SetIV([]byte) }).SetIV(iv)
	st.cbc.CryptBlocks(ct, ct)
	return nil
}

// pageMAC computes the MODEL MAC into sum (full HMAC output).
func pageMAC(m hash.Hash, sum, idx []byte, pg uint64, iv, ct []byte) []byte {
	m.Reset()
	binary.LittleEndian.PutUint64(idx, pg)
	m.Write(idx)
	m.Write(iv)
	m.Write(ct)
	return m.Sum(sum)
}

// seqBatch is how many pages WriteTo reads with one call.
const seqBatch = 64

// WriteTo decrypts the whole plaintext, in order, to w. It implements
// io.WriterTo; nothing past the first bad page is written.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	st := r.pool.Get().(*pageState)
	defer r.pool.Put(st)
	buf := make([]byte, seqBatch*PageSize)
	pages := r.hdr.Pages()
	var written int64
	for pg := int64(0); pg < pages; {
		k := min(int64(seqBatch), pages-pg)
		b := buf[:k*PageSize]
		fo := HeaderSize + pg*PageSize
		if n, err := r.r.ReadAt(b, fo); n != len(b) {
			return written, fmt.Errorf("datafile: %s: reading pages %d.. at offset %d: %w", r.name, pg, fo, noEOF(err))
		}
		out := 0
		for i := int64(0); i < k; i++ {
			p := b[i*PageSize : (i+1)*PageSize]
			if err := r.open(st, pg+i, p); err != nil {
				if out > 0 {
					n, werr := w.Write(buf[:out])
					written += int64(n)
					if werr != nil {
						return written, werr
					}
				}
				return written, err
			}
			end := min(int64(DataPerPage), r.hdr.LogicalSize-(pg+i)*DataPerPage)
			out += copy(buf[out:], p[:end]) // compacts in place: out <= i*PageSize
		}
		n, err := w.Write(buf[:out])
		written += int64(n)
		if err != nil {
			return written, err
		}
		pg += k
	}
	return written, nil
}

// Encrypt writes a data file holding the size bytes read from src, encrypted
// with dataFileKey (32 or 64 bytes) under the given header version, with
// IVs from rand (crypto/rand.Reader in real use; a fixed stream in tests).
// It is the exact inverse of Reader, MODEL MAC included.
func Encrypt(dst io.Writer, src io.Reader, size int64, dataFileKey []byte, version uint32, rand io.Reader) error {
	return EncryptWith(dst, src, size, dataFileKey, version, rand, nil)
}

// EncryptOptions tune EncryptWith.
type EncryptOptions struct {
	// UnknownMAC writes a random 16 bytes (from rand) as each page's MAC
	// instead of the MODEL MAC: a file as VMware writes it, whose MAC
	// scheme is not public (fixtures of the unknown-scheme case).
	UnknownMAC bool
}

// EncryptWith is Encrypt with options.
func EncryptWith(dst io.Writer, src io.Reader, size int64, dataFileKey []byte, version uint32, rand io.Reader, opts *EncryptOptions) error {
	if opts == nil {
		opts = &EncryptOptions{}
	}
	if err := checkKey(dataFileKey); err != nil {
		return err
	}
	if version < MinVersion || version > MaxVersion {
		return fmt.Errorf("datafile: version %d, only %d..%d are known: %w", version, MinVersion, MaxVersion, keysafe.ErrUnsupported)
	}
	if size < 0 || (size+DataPerPage-1)/DataPerPage > MaxPages {
		return fmt.Errorf("datafile: size %d outside 0..%d: %w", size, int64(MaxPages)*DataPerPage, keysafe.ErrUnsupported)
	}
	blk, err := aes.NewCipher(dataFileKey[:32])
	if err != nil {
		return err
	}
	if _, err := dst.Write(Header{Version: version, LogicalSize: size}.Marshal()); err != nil {
		return err
	}
	mac := hmac.New(sha256.New, dataFileKey)
	var page [PageSize]byte
	var sum [sha256.Size]byte
	var idx [8]byte
	pages := (size + DataPerPage - 1) / DataPerPage
	for pg := int64(0); pg < pages; pg++ {
		n := min(int64(DataPerPage), size-pg*DataPerPage)
		clear(page[:])
		if _, err := io.ReadFull(src, page[:n]); err != nil {
			return fmt.Errorf("datafile: reading plaintext page %d: %w", pg, err)
		}
		ct := page[:DataPerPage]
		iv := page[DataPerPage : DataPerPage+IVSize]
		if _, err := io.ReadFull(rand, iv); err != nil {
			return fmt.Errorf("datafile: reading IV: %w", err)
		}
		cipher.NewCBCEncrypter(blk, iv).CryptBlocks(ct, ct)
		if opts.UnknownMAC {
			if _, err := io.ReadFull(rand, page[DataPerPage+IVSize:]); err != nil {
				return fmt.Errorf("datafile: reading a MAC: %w", err)
			}
		} else {
			s := pageMAC(mac, sum[:0], idx[:], uint64(pg), iv, ct)
			copy(page[DataPerPage+IVSize:], s[:MACSize])
		}
		if _, err := dst.Write(page[:]); err != nil {
			return err
		}
	}
	return nil
}

// IsDataFile reports whether b (the first bytes of a file) starts with the
// container's magic.
func IsDataFile(b []byte) bool {
	return len(b) >= 4 && bytes.Equal(b[:4], binary.LittleEndian.AppendUint32(nil, Magic))
}

// MACSurvey checks the MODEL MAC of up to max pages spread over the file
// (for a format report): how many were checked and how many matched.
func MACSurvey(r io.ReaderAt, size int64, dataFileKey []byte, max int) (checked, matched int, err error) {
	rd, err := NewReader(r, size, dataFileKey, &Options{IgnoreMAC: true})
	if err != nil {
		return 0, 0, err
	}
	st := rd.pool.Get().(*pageState)
	defer rd.pool.Put(st)
	pages := rd.hdr.Pages()
	n := min(pages, int64(max))
	for i := int64(0); i < n; i++ {
		pg := i * (pages - 1) / max64(n-1, 1)
		if k, err := r.ReadAt(st.page[:], HeaderSize+pg*PageSize); k != PageSize {
			return checked, matched, noEOF(err)
		}
		checked++
		if rd.macMatches(st, pg, st.page[:]) {
			matched++
		}
	}
	return checked, matched, nil
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}
