package vm

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrNoVMX means a folder holds no .vmx file (a usage mistake: the wrong
// folder was named).
var ErrNoVMX = errors.New("no .vmx file")

// ErrManyVMX means a folder holds several .vmx files and one must be named.
var ErrManyVMX = errors.New("several .vmx files")

// MaxWalkEntries caps the folder entries FindVMXs looks at.
const MaxWalkEntries = 1_000_000

// IsVMXName reports whether a file name ends in .vmx (any case: Windows
// and VMFS copies keep FIXTURE.VMX as it was written).
func IsVMXName(name string) bool { return strings.EqualFold(filepath.Ext(name), ".vmx") }

// FindVMX returns the VMX of path: path itself when it is a file, or the
// one .vmx (any case) in the folder path. A folder with none is ErrNoVMX,
// one with several ErrManyVMX (naming them).
func FindVMX(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if !st.IsDir() {
		return path, nil
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return "", err
	}
	var found []string
	for _, e := range ents {
		if IsVMXName(e.Name()) && !e.IsDir() {
			found = append(found, e.Name())
		}
	}
	sort.Strings(found)
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%s holds no .vmx file: %w", path, ErrNoVMX)
	case 1:
		return filepath.Join(path, found[0]), nil
	}
	return "", fmt.Errorf("%s holds %d .vmx files (%s): name one: %w", path, len(found), strings.Join(found, ", "), ErrManyVMX)
}

// FindVMXs returns every .vmx under root (a .vmx file, a VM folder, or a
// datastore with VM folders at any depth), sorted. A root that is a
// symbolic link is followed (ESXi's /vmfs/volumes/NAME); links below it are
// not, so a loop cannot trap the walk. Folders that cannot be read are
// returned in unreadable (with why), not skipped silently. A root without
// any .vmx is ErrNoVMX.
func FindVMXs(root string) (vmxs []string, unreadable []string, err error) {
	st, err := os.Stat(root)
	if err != nil {
		return nil, nil, err
	}
	if !st.IsDir() {
		return []string{root}, nil, nil
	}
	n := 0
	walkRoot := root
	if lst, err := os.Lstat(root); err == nil && lst.Mode()&os.ModeSymlink != 0 {
		// A trailing separator makes the walk start inside the folder the
		// link points to; paths keep the name given.
		walkRoot = root + string(filepath.Separator)
	}
	err = filepath.WalkDir(walkRoot, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == walkRoot {
				return err
			}
			unreadable = append(unreadable, fmt.Sprintf("%s: %v", p, err))
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if n++; n > MaxWalkEntries {
			return fmt.Errorf("%s: more than %d entries: name a smaller folder", root, MaxWalkEntries)
		}
		if !d.IsDir() && d.Type().IsRegular() && IsVMXName(d.Name()) {
			vmxs = append(vmxs, p)
		}
		return nil
	})
	if err != nil {
		return nil, unreadable, err
	}
	if len(vmxs) == 0 {
		return nil, unreadable, fmt.Errorf("%s holds no .vmx file, in any subfolder: %w", root, ErrNoVMX)
	}
	sort.Strings(vmxs)
	return vmxs, unreadable, nil
}
