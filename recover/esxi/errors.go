package esxi

import (
	"errors"
	"fmt"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// ErrTPMSealed: the key store's key is sealed to the host's TPM and cannot
// be derived offline. A *SealedError carries it; errors.Is(err,
// keysafe.ErrKeyNotFound) is also true (exit 4: the key exists, but not
// here).
var ErrTPMSealed = errors.New("sealed to the host's TPM")

// ErrUnsafeMember: an archive member would land outside the output folder
// (an absolute path, "..", a link out), or asks for more than the limits.
// An *UnsafeMemberError carries it and keysafe.ErrCorrupt (or
// keysafe.ErrUnsupported for a limit).
var ErrUnsafeMember = errors.New("unsafe archive member")

// FormatError is a structure problem of an input: the file, the byte
// offset and the field, wrapping keysafe.ErrCorrupt or
// keysafe.ErrUnsupported.
type FormatError struct {
	File   string // name of the input as the caller gave it ("" when unknown)
	Offset int64  // byte offset of the field in File (-1 when not meaningful)
	Field  string // e.g. "header version", "attribute vmware.keyHash"
	Msg    string // what is wrong
	Err    error  // keysafe.ErrCorrupt or keysafe.ErrUnsupported
}

func (e *FormatError) Error() string {
	s := ""
	if e.File != "" {
		s = e.File + ": "
	}
	if e.Offset >= 0 {
		s += fmt.Sprintf("offset %d: ", e.Offset)
	}
	return s + e.Field + ": " + e.Msg + " (" + e.Err.Error() + ")"
}

func (e *FormatError) Unwrap() error { return e.Err }

func corruptf(file string, off int64, field, format string, a ...any) error {
	return &FormatError{File: file, Offset: off, Field: field, Msg: fmt.Sprintf(format, a...), Err: keysafe.ErrCorrupt}
}

func unsupportedf(file string, off int64, field, format string, a ...any) error {
	return &FormatError{File: file, Offset: off, Field: field, Msg: fmt.Sprintf(format, a...), Err: keysafe.ErrUnsupported}
}

// SealedError says that a key store is sealed to a TPM (mode other than
// NONE): the host key cannot be derived offline.
type SealedError struct {
	File  string // the key store
	Mode  string // its mode value
	KeyID string // the key id, when the store names one
}

func (e *SealedError) Error() string {
	return fmt.Sprintf("%s: key store mode %q: %s; open it on the host or use a configBundle taken with encryption off", e.File, e.Mode, ErrTPMSealed)
}

// Is makes errors.Is true for ErrTPMSealed and keysafe.ErrKeyNotFound.
func (e *SealedError) Is(target error) bool {
	return target == ErrTPMSealed || target == keysafe.ErrKeyNotFound
}

// UnsafeMemberError names an archive member that is refused.
type UnsafeMemberError struct {
	Archive string // the archive
	Member  string // the member name as stored
	Reason  string
	Limit   bool // a size or count limit (keysafe.ErrUnsupported), not a hostile path (keysafe.ErrCorrupt)
}

func (e *UnsafeMemberError) Error() string {
	return fmt.Sprintf("%s: member %q: %s (%s)", e.Archive, e.Member, e.Reason, ErrUnsafeMember)
}

// Is makes errors.Is true for ErrUnsafeMember and keysafe.ErrCorrupt (a
// hostile member) or keysafe.ErrUnsupported (a limit).
func (e *UnsafeMemberError) Is(target error) bool {
	if target == ErrUnsafeMember {
		return true
	}
	if e.Limit {
		return target == keysafe.ErrUnsupported
	}
	return target == keysafe.ErrCorrupt
}
