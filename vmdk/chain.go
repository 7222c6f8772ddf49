package vmdk

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrCIDMismatch means a delta's parentCID differs from its parent's CID:
// the parent was written after the snapshot was taken (or is the wrong
// file), so the chain would read wrong data. It wraps ErrCorrupt.
var ErrCIDMismatch = fmt.Errorf("%w: parent content id mismatch", ErrCorrupt)

// TruncatedStreamError is a streamOptimized file whose footer is missing
// or damaged (a copy cut short, most often): its grains can still be found
// by scanning the markers (OpenOptions.ScanTruncatedStreams).
type TruncatedStreamError struct{ Err error }

func (e *TruncatedStreamError) Error() string {
	return e.Err.Error() + "; scanning the stream's markers would read the grains that are there"
}

func (e *TruncatedStreamError) Unwrap() error { return e.Err }

// ErrUnsafePath means an extent path or parent hint is absolute or leaves
// the descriptor's folder and OpenOptions.AllowUnsafePaths is not set. It
// wraps ErrUnsupported.
var ErrUnsafePath = fmt.Errorf("%w: path outside the descriptor's folder", ErrUnsupported)

// Open opens the disk at path (a descriptor, or a monolithic sparse or
// stream-optimized file) read-only, with its whole parent chain.
func Open(path string, opts *OpenOptions) (*Disk, error) {
	o := OpenOptions{}
	if opts != nil {
		o = *opts
	}
	o.meta = new(int64) // one budget for the whole chain
	opts = &o
	maxChain := opts.MaxChain
	if maxChain <= 0 {
		maxChain = DefaultMaxChain
	}
	d := &Disk{}
	seen := map[string]bool{}
	cur := path
	for {
		abs, err := filepath.Abs(cur)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("vmdk: %w", err)
		}
		if seen[abs] {
			d.Close()
			return nil, corruptf(cur, -1, "parentFileNameHint", "the chain loops back to %s", cur)
		}
		seen[abs] = true
		l, err := openLink(cur, len(d.links), opts)
		if err != nil {
			d.Close()
			if len(d.links) > 0 {
				return nil, fmt.Errorf("parent of %s: %w", d.links[len(d.links)-1].Path, err)
			}
			return nil, err
		}
		if n := len(d.links); n > 0 {
			child := d.links[n-1]
			if child.ParentCID != l.CID {
				if !opts.AllowCIDMismatch {
					d.links = append(d.links, l)
					d.Close()
					return nil, fmt.Errorf("vmdk: %s has parentCID %08x but its parent %s has CID %08x: %w",
						child.Path, child.ParentCID, l.Path, l.CID, ErrCIDMismatch)
				}
				child.warn(fmt.Sprintf("%s: parentCID %08x differs from the parent's CID %08x (%s); read anyway as asked", child.Path, child.ParentCID, l.CID, l.Path))
			}
		}
		d.links = append(d.links, l)
		hint := l.Descriptor.ParentFileNameHint
		if hint == "" {
			if l.ParentCID != NoParentCID && l.Descriptor.CreateType != "" && strings.Contains(strings.ToLower(l.Descriptor.CreateType), "sparse") {
				l.warn(fmt.Sprintf("%s: parentCID %08x names a parent but there is no parentFileNameHint; read as a base disk: what it does not hold reads as zeros, not as the parent's data", l.Path, l.ParentCID))
			}
			break
		}
		if len(d.links) >= maxChain {
			d.Close()
			return nil, unsupportedf(l.Path, -1, "parentFileNameHint", "the chain is longer than %d links", maxChain)
		}
		next, err := resolveParent(filepath.Dir(l.Path), hint, opts.AllowUnsafePaths, l.warn)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("vmdk: %s: parentFileNameHint: %w", l.Path, err)
		}
		cur = next
	}
	return d, nil
}

// resolvePath joins an extent file name to the descriptor's folder,
// refusing absolute names and ".." unless allowed.
func resolvePath(dir, name string, allowUnsafe bool) (string, error) {
	if name == "" {
		return "", corruptf(dir, -1, "extent file", "empty file name")
	}
	if !localName(name) {
		if !allowUnsafe {
			return "", fmt.Errorf("%q is absolute or contains \"..\": %w (allow unsafe paths to follow it)", name, ErrUnsafePath)
		}
		if filepath.IsAbs(name) {
			return filepath.Clean(name), nil
		}
		return filepath.Join(dir, name), nil
	}
	p := filepath.Join(dir, name)
	if !allowUnsafe {
		if err := StaysInside(dir, p); err != nil {
			return "", err
		}
	}
	return p, nil
}

// StaysInside refuses (ErrUnsafePath) a path in dir that is a symbolic
// link, or passes through one, to a file outside dir: a folder that came
// from elsewhere must not make vmcrypt read /etc/shadow into an output any
// more than an absolute extent name may. A path that does not resolve is
// left to the open that follows.
func StaysInside(dir, path string) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil
	}
	realDir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil
	}
	rel, err := filepath.Rel(realDir, real)
	if err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel) {
		return nil
	}
	return fmt.Errorf("%s is a symbolic link to %s, outside %s: %w (allow unsafe paths to follow it)", path, real, dir, ErrUnsafePath)
}

// resolveParent finds the parent named by a hint. ESXi writes absolute
// hints (/vmfs/volumes/...): when the hint is unsafe and not allowed, or
// allowed but missing, the file of the same name beside the child is used
// (with a warning), as a copied VM folder needs.
func resolveParent(dir, hint string, allowUnsafe bool, warn func(string)) (string, error) {
	if localName(hint) {
		return resolvePath(dir, hint, allowUnsafe)
	}
	base := filepath.Base(strings.ReplaceAll(hint, `\`, "/"))
	beside := filepath.Join(dir, base)
	if allowUnsafe {
		p := hint
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, hint)
		}
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if base != "." && base != ".." && base != "/" {
		if _, err := os.Stat(beside); err == nil {
			if !allowUnsafe {
				if err := StaysInside(dir, beside); err != nil {
					return "", err
				}
			}
			warn(fmt.Sprintf("the parent hint %q is outside the folder; the file of that name beside the disk, %s, is used", hint, beside))
			return beside, nil
		}
	}
	if !allowUnsafe {
		return "", fmt.Errorf("%q is absolute or contains \"..\" and no %s exists beside the disk: %w (allow unsafe paths to follow it)", hint, base, ErrUnsafePath)
	}
	return "", fmt.Errorf("vmdk: parent %q not found (nor %s): %w", hint, beside, os.ErrNotExist)
}

// localName reports whether name stays inside the folder: relative, no
// ".." element, no volume name.
func localName(name string) bool {
	if filepath.IsAbs(name) || strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) || filepath.VolumeName(name) != "" {
		return false
	}
	for _, e := range strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if e == ".." {
			return false
		}
	}
	return true
}

// ReadDescriptor reads only the descriptor of the disk at path (a
// descriptor file, or the one embedded in a sparse file), without opening
// extents or parents: enough to describe a disk whose extent files are
// missing. A file with no descriptor (an extent, data) is ErrUnsupported.
func ReadDescriptor(path string) (*Descriptor, error) {
	f, size, err := openRO(path)
	if err != nil {
		return nil, fmt.Errorf("vmdk: %w", err)
	}
	defer f.Close()
	p, err := Probe(f, size, path)
	if err != nil {
		return nil, err
	}
	if p.Descriptor == nil {
		return nil, unsupportedf(path, 0, "", "no descriptor: the file is a %s", p.Kind)
	}
	return p.Descriptor, nil
}
