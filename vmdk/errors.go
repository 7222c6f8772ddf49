package vmdk

import (
	"errors"
	"fmt"
)

// Sentinels callers branch on with errors.Is. vmdk knows nothing of keys, so
// it has its own (the CLI maps both families to exit code 5).
var (
	ErrCorrupt     = errors.New("corrupt disk")
	ErrUnsupported = errors.New("unsupported disk")
)

// FormatError carries where a structure problem was found.
// It wraps ErrCorrupt or ErrUnsupported.
type FormatError struct {
	File   string // file name as given to Open (or the extent path)
	Offset int64  // byte offset in that file, -1 when not meaningful
	Field  string // structure or field name, e.g. "sparse header capacity"
	Msg    string // what is wrong, one clause
	Err    error  // ErrCorrupt or ErrUnsupported
}

func (e *FormatError) Error() string {
	loc := e.File
	if e.Offset >= 0 {
		loc = fmt.Sprintf("%s at offset %d", e.File, e.Offset)
	}
	what := "corrupt"
	if errors.Is(e.Err, ErrUnsupported) {
		what = "unsupported"
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s %s: %s", loc, what, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", loc, what, e.Msg)
}

func (e *FormatError) Unwrap() error { return e.Err }

func corruptf(file string, off int64, field, format string, a ...any) error {
	return &FormatError{File: file, Offset: off, Field: field, Msg: fmt.Sprintf(format, a...), Err: ErrCorrupt}
}

func unsupportedf(file string, off int64, field, format string, a ...any) error {
	return &FormatError{File: file, Offset: off, Field: field, Msg: fmt.Sprintf(format, a...), Err: ErrUnsupported}
}
