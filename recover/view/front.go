package view

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/vmcrypt/vmcrypt/recover/mount"
	"github.com/vmcrypt/vmcrypt/recover/nbd"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

// MountFiles returns the view's files for mount.Mount: every file, with
// the Data runs of disks as allocated (holes and zeroed grains read as
// zeros without decrypting, and SEEK_HOLE skips them).
func (w *View) MountFiles() []mount.File {
	out := make([]mount.File, 0, len(w.Files))
	for _, f := range w.Files {
		mf := mount.File{Name: f.Name, Size: f.Size, Data: f.Data, ModTime: f.ModTime}
		if f.Runs != nil {
			mf.Allocated = []mount.Run{}
			for _, r := range f.Runs {
				if r.State != vmdk.Data {
					continue
				}
				if n := len(mf.Allocated); n > 0 && mf.Allocated[n-1].End() == r.Off {
					mf.Allocated[n-1].Len += r.Len
					continue
				}
				mf.Allocated = append(mf.Allocated, mount.Run{Off: r.Off, Len: r.Len})
			}
		}
		out = append(out, mf)
	}
	return out
}

// Exports returns one NBD export per disk and snapshot state, named as
// their files, with base:allocation from the allocation map.
func (w *View) Exports() []nbd.Export {
	var out []nbd.Export
	for _, f := range w.Disks() {
		desc := fmt.Sprintf("%s %s of %s", f.Kind, f.Device, filepath.Base(f.Source))
		if f.Snapshot != nil && f.Snapshot.DisplayName != "" {
			desc += " (snapshot " + f.Snapshot.DisplayName + ")"
		}
		out = append(out, nbd.Export{
			Name: f.Name, Description: description(desc), Size: f.Size, Data: f.Data,
			Extents: extents(f.Runs, f.Size),
		})
	}
	return out
}

// maxDescription caps an export description (NBD strings may be 4096
// bytes; a description is one line).
const maxDescription = 512

// description makes text a valid NBD string: UTF-8 without control
// characters, at most maxDescription bytes.
func description(s string) string {
	s = strings.ToValidUTF8(s, "_")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '_'
		}
		return r
	}, s)
	if len(s) > maxDescription {
		cut := maxDescription
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	return s
}

// DefaultExport is the export a client asking for the empty name gets:
// the first disk ("" when the VM has none).
func (w *View) DefaultExport() string {
	if d := w.Disks(); len(d) > 0 {
		return d[0].Name
	}
	return ""
}

// maxExtents caps the extents of one answer; the server asks again for
// the rest.
const maxExtents = nbd.MaxBlockStatusExtents

// extents answers base:allocation from an allocation map: holes are
// Hole+Zero, Zero runs Zero, Data runs data; adjacent runs of one state
// are merged.
func extents(runs []vmdk.Run, size int64) func(off, n int64) ([]nbd.Extent, error) {
	return func(off, n int64) ([]nbd.Extent, error) {
		end := min(off+n, size)
		var out []nbd.Extent
		add := func(l int64, hole, zero bool) {
			if k := len(out) - 1; k >= 0 && out[k].Hole == hole && out[k].Zero == zero {
				out[k].Length += l
				return
			}
			out = append(out, nbd.Extent{Length: l, Hole: hole, Zero: zero})
		}
		i := sort.Search(len(runs), func(i int) bool { return runs[i].Off+runs[i].Len > off })
		for at := off; at < end && len(out) < maxExtents; {
			if i >= len(runs) || runs[i].Off >= end {
				add(end-at, true, true)
				break
			}
			r := runs[i]
			if r.Off > at {
				add(r.Off-at, true, true)
				at = r.Off
				continue
			}
			e := min(r.Off+r.Len, end)
			add(e-at, false, r.State == vmdk.Zero)
			at = e
			i++
		}
		return out, nil
	}
}
