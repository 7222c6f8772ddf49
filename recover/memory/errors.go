package memory

import (
	"errors"
	"fmt"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Error is a problem in a memory file (.vmem stream or checkpoint state
// file) at a byte offset. It wraps keysafe.ErrCorrupt or
// keysafe.ErrUnsupported, so errors.Is on those sentinels decides the exit
// code.
type Error struct {
	File   string // the name given by the caller ("" if none)
	Offset int64  // byte offset in the file (the input, not the output)
	Field  string // block header field, LZ token, tag or group name
	Msg    string
	Err    error // keysafe.ErrCorrupt or keysafe.ErrUnsupported
}

func (e *Error) Error() string {
	what := "corrupt"
	if errors.Is(e.Err, keysafe.ErrUnsupported) {
		what = "unsupported"
	}
	name := e.File
	if name == "" {
		name = "memory file"
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

var errCorrupt = keysafe.ErrCorrupt
