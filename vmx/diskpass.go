package vmx

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// What a passphrase change does with each disk link (DiskLink.Status).
const (
	DiskRewrapped       = "rewrapped"        // its encryptionKeys now open with the new passphrase
	DiskMissing         = "missing"          // the file the settings name does not exist: not changed
	DiskPlain           = "plain"            // no encryptionKeys: nothing to change
	DiskKeyProvider     = "key provider"     // locked by a key provider only: not changed
	DiskOtherPassphrase = "other passphrase" // its passphrase pairs do not open with the old passphrase: not changed
)

// ErrDescriptorFull: the rewrapped descriptor does not fit the area a
// sparse file reserves for its embedded descriptor. It wraps
// keysafe.ErrUnsupported.
var ErrDescriptorFull = fmt.Errorf("%w: the new descriptor does not fit the room embedded in the disk file", keysafe.ErrUnsupported)

// DiskLink is one disk descriptor (one link of a disk's chain) that a
// passphrase change looked at.
type DiskLink struct {
	Device string // the VM's device naming the disk, e.g. "nvme0:0"
	Path   string // the descriptor file, or the sparse file that embeds it
	Status string // DiskRewrapped, DiskMissing, DiskPlain, ...
	// Embedded: the descriptor lives in the sparse file's descriptor
	// area, at byte Offset; Old and New are then the whole area (text and
	// NUL padding). Otherwise they are the whole descriptor file.
	Embedded bool
	Offset   int64
	Old, New []byte // New is set only for DiskRewrapped
	// Relocked and Kept count the pairs of its encryptionKeys.
	Relocked, Kept int
}

// ChangeDiskPassphrases finds the disks the settings name (relative to
// the VM folder dir), opens each with its whole chain read-only
// (vmdk.Open), and, for every link whose encryptionKeys hold a phrase pair
// that oldPass opens, makes the descriptor with those pairs relocked under
// newPass (keysafe.RelockPhrases, the same rule as the VM's key safe). Only
// the encryptionKeys line changes; every other line of the descriptor is
// kept byte for byte. A link shared by two disks is listed once. Nothing
// is written: the caller writes New over Old (the file, or the area at
// Offset) for the links with Status DiskRewrapped.
//
// A descriptor embedded in a sparse or stream-optimized file is rewritten
// inside its area (the room the header reserves, vmdk.DescriptorArea); a
// new text that does not fit with at least one NUL after it is
// ErrDescriptorFull. A disk that does not open is an error (nothing is
// half changed); a disk file that does not exist is DiskMissing.
func ChangeDiskPassphrases(dir string, settings *File, oldPass, newPass []byte, opt keysafe.RelockOptions, vopt *vmdk.OpenOptions, rand io.Reader) ([]DiskLink, error) {
	var out []DiskLink
	seen := map[string]bool{}
	for _, d := range Disks(settings) {
		p := d.FileName
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			out = append(out, DiskLink{Device: d.Device, Path: p, Status: DiskMissing})
			continue
		}
		disk, err := vmdk.Open(p, vopt)
		if err != nil {
			return nil, fmt.Errorf("disk %s (%s): %w", d.FileName, d.Device, err)
		}
		links := disk.Links()
		disk.Close()
		for _, l := range links {
			abs, err := filepath.Abs(l.Path)
			if err != nil {
				return nil, err
			}
			if seen[abs] {
				continue
			}
			seen[abs] = true
			dl, err := rewrapLink(l, oldPass, newPass, opt, rand)
			if err != nil {
				return nil, err
			}
			dl.Device = d.Device
			out = append(out, dl)
		}
	}
	return out, nil
}

// rewrapLink handles one link of a chain.
func rewrapLink(l *vmdk.Link, oldPass, newPass []byte, opt keysafe.RelockOptions, rand io.Reader) (DiskLink, error) {
	dl := DiskLink{Path: l.Path, Status: DiskPlain}
	if l.EncryptionKeys == "" {
		return dl, nil
	}
	loc, err := keysafe.Parse(l.EncryptionKeys)
	if err != nil {
		return dl, fmt.Errorf("%s: encryptionKeys: %w", l.Path, err)
	}
	r, err := keysafe.RelockPhrases(loc, oldPass, newPass, opt, rand)
	switch {
	case errors.Is(err, keysafe.ErrNotPhrase):
		dl.Status = DiskKeyProvider
		return dl, nil
	case errors.Is(err, keysafe.ErrWrongKey):
		dl.Status = DiskOtherPassphrase
		return dl, nil
	case err != nil:
		return dl, fmt.Errorf("%s: encryptionKeys: %w", l.Path, err)
	}
	f, err := os.Open(l.Path)
	if err != nil {
		return dl, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return dl, err
	}
	off, n, emb, err := vmdk.DescriptorArea(f, st.Size(), l.Path)
	if err != nil {
		return dl, err
	}
	if !emb {
		if st.Size() > vmdk.MaxDescriptorSize {
			return dl, fmt.Errorf("%s: a descriptor of %d bytes, more than %d: %w", l.Path, st.Size(), vmdk.MaxDescriptorSize, vmdk.ErrCorrupt)
		}
		n = st.Size()
	}
	old := make([]byte, n)
	if _, err := f.ReadAt(old, off); err != nil && !(errors.Is(err, io.EOF) && !emb) {
		return dl, fmt.Errorf("%s: reading the descriptor at offset %d: %w", l.Path, off, err)
	}
	text := old
	if emb {
		if i := bytes.IndexByte(text, 0); i >= 0 {
			text = text[:i]
		}
	}
	newText, err := RewrapDescriptor(text, l.Path, r.Locator.String())
	if err != nil {
		return dl, err
	}
	if emb {
		if len(newText) >= len(old) {
			return dl, fmt.Errorf("%s: the descriptor with the new encryptionKeys is %d bytes; the file holds %d at offset %d (with a NUL after it): %w",
				l.Path, len(newText), len(old), off, ErrDescriptorFull)
		}
		area := make([]byte, len(old))
		copy(area, newText)
		newText = area
	}
	dl.Status, dl.Embedded, dl.Offset, dl.Old, dl.New = DiskRewrapped, emb, off, old, newText
	dl.Relocked, dl.Kept = r.Relocked, r.Kept
	return dl, nil
}

// RewrapDescriptor returns the descriptor text with the value of its
// encryptionKeys line replaced by keys, every other byte as it was (the
// line keeps its spacing and CR). The result is checked with vmdk's own
// parser and serialiser: it must read as the input with only
// EncryptionKeys changed. A descriptor with no encryptionKeys line, or
// more than one, is vmdk.ErrCorrupt.
func RewrapDescriptor(text []byte, name, keys string) ([]byte, error) {
	if strings.ContainsAny(keys, "\"\r\n\x00") {
		return nil, fmt.Errorf("encryptionKeys value holds a quote, newline or NUL: %w", keysafe.ErrCorrupt)
	}
	d, err := vmdk.ParseDescriptor(text, name)
	if err != nil {
		return nil, err
	}
	lines := strings.SplitAfter(string(text), "\n")
	at := -1
	for i, line := range lines {
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' {
			continue
		}
		if k, _, ok := strings.Cut(t, "="); ok && strings.TrimSpace(k) == "encryptionKeys" {
			if at >= 0 {
				return nil, fmt.Errorf("%s: descriptor has encryptionKeys twice: %w", name, vmdk.ErrCorrupt)
			}
			at = i
		}
	}
	if at < 0 {
		return nil, fmt.Errorf("%s: descriptor has no encryptionKeys line: %w", name, vmdk.ErrCorrupt)
	}
	line := lines[at]
	body := strings.TrimRight(line, "\r\n")
	end := line[len(body):]
	eq := strings.IndexByte(body, '=')
	rest := body[eq+1:]
	val := strings.TrimLeft(rest, " \t")
	lead := rest[:len(rest)-len(val)]
	trimmed := strings.TrimRight(val, " \t")
	lines[at] = body[:eq+1] + lead + `"` + keys + `"` + val[len(trimmed):] + end
	out := []byte(strings.Join(lines, ""))

	d2, err := vmdk.ParseDescriptor(out, name)
	if err != nil {
		return nil, fmt.Errorf("internal check: the rewrapped descriptor does not parse: %v", err)
	}
	d.EncryptionKeys = keys
	if d2.EncryptionKeys != keys || d2.String() != d.String() {
		return nil, fmt.Errorf("internal check: the rewrapped descriptor of %s reads differently", name)
	}
	return out, nil
}
