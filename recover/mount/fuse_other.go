//go:build !linux && !darwin

package mount

import "fmt"

// Mounted is a live mount; Mount never returns one on this system.
type Mounted struct{ dir string }

// Mount returns an error wrapping ErrUnsupported: FUSE is served on Linux
// (and Darwin with macFUSE) only.
func Mount(dir string, files []File, opts Options) (*Mounted, error) {
	if _, err := validate(files); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("mount %s: %w", dir, ErrUnsupported)
}

// Dir is the mount point.
func (m *Mounted) Dir() string { return m.dir }

// Wait returns at once.
func (m *Mounted) Wait() {}

// Unmount does nothing.
func (m *Mounted) Unmount() error { return nil }
