package esxi

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Safe extraction of tar members under one output folder.
//
// Every member name is checked before anything is written (CleanName:
// no absolute path, no "..", no drive letter or backslash, no NUL), a
// symbolic link may only point inside the folder (lexically, relative to
// its own place), a hard link only to a regular file extracted before
// from the same archive, and devices and FIFOs are skipped. Sizes and
// counts are capped (Limits). Writes go through an os.Root, so even a
// link planted inside the folder cannot lead a write outside it.
//
// Members are written to a hidden staging folder inside the output folder;
// Commit moves them into place, Abort removes everything. A refused
// member stops the extraction: nothing of that archive is kept.
// Extracted files are 0600 and folders 0700 whatever the archive says
// (the host configuration holds private keys); the stored modes are in
// the Entry.

// Limits cap what an archive may make.
type Limits struct {
	MaxMembers    int   // members
	MaxMemberSize int64 // bytes of one file
	MaxTotalSize  int64 // bytes of all files
}

// DefaultLimits suit host configurations and boot modules: real
// configurations are a few MiB, boot modules a few hundred.
var DefaultLimits = Limits{MaxMembers: MaxTarMembers, MaxMemberSize: 4 << 30, MaxTotalSize: 16 << 30}

// CleanName checks a member name and returns it cleaned ("./a//b/" ->
// "a/b"; the archive's root is "."). Absolute names, "..", drive letters,
// backslashes and NUL bytes are refused (*UnsafeMemberError).
func CleanName(archive, name string) (string, error) {
	bad := func(why string) (string, error) {
		return "", &UnsafeMemberError{Archive: archive, Member: name, Reason: why}
	}
	switch {
	case name == "":
		return bad("empty name")
	case strings.ContainsRune(name, 0):
		return bad("NUL byte in the name")
	case strings.ContainsRune(name, '\\'):
		return bad("backslash in the name (a path separator on Windows)")
	case strings.HasPrefix(name, "/"):
		return bad("absolute path")
	case len(name) >= 2 && name[1] == ':':
		return bad("drive letter")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return bad(`".." in the path`)
		}
	}
	return path.Clean(name), nil
}

// CheckEntry applies the name and link rules to e without extracting:
// what Extractor.Add would refuse on its face. It returns the cleaned name.
func CheckEntry(archive string, e *Entry, lim Limits) (string, error) {
	name, err := CleanName(archive, e.Name)
	if err != nil {
		return "", err
	}
	switch e.Type {
	case TypeSymlink:
		if err := checkSymlink(archive, e, name); err != nil {
			return "", err
		}
	case TypeHardlink:
		if _, err := CleanName(archive, e.Linkname); err != nil {
			return "", &UnsafeMemberError{Archive: archive, Member: e.Name, Reason: "hard link to " + fmt.Sprintf("%q", e.Linkname) + " outside the archive"}
		}
	case TypeFile:
		if e.Size > lim.MaxMemberSize {
			return "", &UnsafeMemberError{Archive: archive, Member: e.Name, Limit: true,
				Reason: fmt.Sprintf("claims %d bytes, more than the %d allowed per file", e.Size, lim.MaxMemberSize)}
		}
	}
	return name, nil
}

func checkSymlink(archive string, e *Entry, name string) error {
	t := e.Linkname
	bad := func(why string) error {
		return &UnsafeMemberError{Archive: archive, Member: e.Name, Reason: fmt.Sprintf("symbolic link to %q: %s", t, why)}
	}
	switch {
	case t == "":
		return bad("empty target")
	case strings.ContainsRune(t, 0) || strings.ContainsRune(t, '\\'):
		return bad("NUL or backslash in the target")
	case strings.HasPrefix(t, "/") || len(t) >= 2 && t[1] == ':':
		return bad("absolute target")
	}
	j := path.Join(path.Dir(name), t)
	if j == ".." || strings.HasPrefix(j, "../") {
		return bad("points outside the output folder")
	}
	return nil
}

// Skipped is a member not extracted, and why.
type Skipped struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Extractor writes the members of one archive under a folder.
type Extractor struct {
	archive string
	outdir  string
	staging string
	created bool // outdir was made by NewExtractor
	root    *os.Root
	lim     Limits
	count   int
	total   int64
	files   map[string]bool // regular files written (hard link targets)
	Skipped []Skipped
	Written int64 // file bytes written
	Members int   // members extracted
	done    bool
}

// NewExtractor prepares extraction of archive (a name, for errors) under
// outdir, which must not exist or be an empty folder (an error wrapping
// fs.ErrExist otherwise).
func NewExtractor(outdir, archive string, lim Limits) (*Extractor, error) {
	x := &Extractor{archive: archive, outdir: outdir, lim: lim, files: map[string]bool{}}
	st, err := os.Stat(outdir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(outdir, 0o700); err != nil {
			return nil, err
		}
		x.created = true
	case err != nil:
		return nil, err
	case !st.IsDir():
		return nil, fmt.Errorf("%s is not a folder: %w", outdir, fs.ErrExist)
	default:
		ents, err := os.ReadDir(outdir)
		if err != nil {
			return nil, err
		}
		if len(ents) > 0 {
			return nil, fmt.Errorf("%s is not empty (%d entries): %w", outdir, len(ents), fs.ErrExist)
		}
	}
	x.staging, err = os.MkdirTemp(outdir, ".vmcrypt-extract-*")
	if err == nil {
		x.root, err = os.OpenRoot(x.staging)
	}
	if err != nil {
		x.Abort()
		return nil, err
	}
	return x, nil
}

// Add extracts one member, reading its data from data. A refused member
// returns an *UnsafeMemberError; the caller then calls Abort.
func (x *Extractor) Add(e *Entry, data io.Reader) error {
	if x.done {
		return errors.New("esxi: Add after Commit or Abort")
	}
	if x.count++; x.count > x.lim.MaxMembers {
		return &UnsafeMemberError{Archive: x.archive, Member: e.Name, Limit: true, Reason: fmt.Sprintf("more than %d members", x.lim.MaxMembers)}
	}
	name, err := CheckEntry(x.archive, e, x.lim)
	if err != nil {
		return err
	}
	if name == "." {
		if e.Type == TypeDir {
			return nil
		}
		return &UnsafeMemberError{Archive: x.archive, Member: e.Name, Reason: "names the output folder itself"}
	}
	local := filepath.FromSlash(name)
	parent := filepath.Dir(local)
	if err := x.noLinkIn(e, name); err != nil {
		return err
	}
	switch e.Type {
	case TypeDir:
		if err := x.root.MkdirAll(local, 0o700); err != nil {
			return x.fsErr(e, err)
		}
	case TypeFile:
		if x.total+e.Size > x.lim.MaxTotalSize {
			return &UnsafeMemberError{Archive: x.archive, Member: e.Name, Limit: true,
				Reason: fmt.Sprintf("the files would exceed the %d bytes allowed in all", x.lim.MaxTotalSize)}
		}
		x.total += e.Size
		if err := x.root.MkdirAll(parent, 0o700); err != nil {
			return x.fsErr(e, err)
		}
		f, err := x.root.OpenFile(local, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return x.fsErr(e, err)
		}
		n, err := io.Copy(f, io.LimitReader(data, e.Size))
		x.Written += n
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return err
		}
		if n != e.Size {
			return corruptf(x.archive, -1, "tar data of "+fmt.Sprintf("%q", e.Name), "%d of %d bytes: truncated archive", n, e.Size)
		}
		x.files[name] = true
		if !e.ModTime.IsZero() {
			_ = x.root.Chtimes(local, e.ModTime, e.ModTime) // best effort
		}
	case TypeSymlink:
		if err := x.root.MkdirAll(parent, 0o700); err != nil {
			return x.fsErr(e, err)
		}
		if err := x.root.Symlink(filepath.FromSlash(e.Linkname), local); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return x.fsErr(e, err)
			}
			x.Skipped = append(x.Skipped, Skipped{e.Name, "symbolic link not created: " + err.Error()})
			return nil
		}
	case TypeHardlink:
		target := path.Clean(e.Linkname)
		if !x.files[target] {
			return &UnsafeMemberError{Archive: x.archive, Member: e.Name, Reason: fmt.Sprintf("hard link to %q, which is not a file extracted before from this archive", e.Linkname)}
		}
		if err := x.root.MkdirAll(parent, 0o700); err != nil {
			return x.fsErr(e, err)
		}
		if err := x.root.Link(filepath.FromSlash(target), local); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return x.fsErr(e, err)
			}
			if err := x.copyFile(filepath.FromSlash(target), local); err != nil {
				return err
			}
		}
		x.files[name] = true
	case TypeDevice, TypeFIFO:
		x.Skipped = append(x.Skipped, Skipped{e.Name, e.Type.String() + " not extracted"})
		return nil
	default:
		x.Skipped = append(x.Skipped, Skipped{e.Name, fmt.Sprintf("tar type %q not extracted", e.Typeflag)})
		return nil
	}
	x.Members++
	return nil
}

// noLinkIn refuses a member whose path goes through a symbolic link made
// before: members are never written through links (os.Root would keep
// the write inside, but a link "x/y -> .." under "x -> ." is lexically
// inside and still points out).
func (x *Extractor) noLinkIn(e *Entry, name string) error {
	parts := strings.Split(name, "/")
	for i := 1; i < len(parts); i++ {
		fi, err := x.root.Lstat(filepath.FromSlash(strings.Join(parts[:i], "/")))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return x.fsErr(e, err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return &UnsafeMemberError{Archive: x.archive, Member: e.Name, Reason: fmt.Sprintf("path goes through the symbolic link %q", strings.Join(parts[:i], "/"))}
		}
		if !fi.IsDir() {
			return &UnsafeMemberError{Archive: x.archive, Member: e.Name, Reason: fmt.Sprintf("path goes through the file %q", strings.Join(parts[:i], "/"))}
		}
	}
	return nil
}

func (x *Extractor) copyFile(from, to string) error {
	src, err := x.root.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := x.root.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return err
	}
	return dst.Close()
}

// fsErr turns a refusal of the os.Root (a path through a link out of the
// folder, a name that exists) into an *UnsafeMemberError.
func (x *Extractor) fsErr(e *Entry, err error) error {
	if errors.Is(err, fs.ErrExist) {
		return &UnsafeMemberError{Archive: x.archive, Member: e.Name, Reason: "the name appears twice or goes through a file"}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && (strings.Contains(pe.Err.Error(), "escapes") || strings.Contains(pe.Err.Error(), "not a directory")) {
		return &UnsafeMemberError{Archive: x.archive, Member: e.Name, Reason: "path leads outside the output folder or through a file: " + pe.Err.Error()}
	}
	return err
}

// Commit moves the extracted members into the output folder and removes
// the staging folder.
func (x *Extractor) Commit() error {
	if x.done {
		return errors.New("esxi: Commit after Commit or Abort")
	}
	x.done = true
	x.root.Close()
	ents, err := os.ReadDir(x.staging)
	if err != nil {
		x.cleanup()
		return err
	}
	var moved []string
	for _, d := range ents {
		dst := filepath.Join(x.outdir, d.Name())
		if err := os.Rename(filepath.Join(x.staging, d.Name()), dst); err != nil {
			for _, m := range moved { // outdir was empty: take back what was moved
				os.RemoveAll(m)
			}
			x.cleanup()
			return err
		}
		moved = append(moved, dst)
	}
	return os.Remove(x.staging)
}

// Abort removes everything extracted (and outdir, when NewExtractor made
// it).
func (x *Extractor) Abort() {
	x.done = true
	if x.root != nil {
		x.root.Close()
	}
	x.cleanup()
}

func (x *Extractor) cleanup() {
	if x.staging != "" {
		os.RemoveAll(x.staging)
	}
	if x.created {
		os.Remove(x.outdir) // only if empty
	}
}
