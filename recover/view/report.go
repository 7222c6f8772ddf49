package view

import (
	"path/filepath"
	"slices"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/vm"
)

// Report is report.json: what opened what. Paths use forward slashes.
type Report struct {
	Tool      string       `json:"tool,omitempty"`
	VMX       string       `json:"vmx"`
	Opened    time.Time    `json:"opened"`
	Encrypted bool         `json:"encrypted"`
	KeySafe   *KeyUse      `json:"keySafe,omitempty"`
	Files     []FileReport `json:"files"`
	Warnings  []string     `json:"warnings,omitempty"`
	Notes     []string     `json:"notes,omitempty"`
}

// KeyUse says which key source opened the VMX key safe.
type KeyUse struct {
	Locker string `json:"locker"`
	Source string `json:"source"`
	Cipher string `json:"cipher"`
}

// FileReport describes one file of the view (report.json itself is not
// listed).
type FileReport struct {
	Name      string       `json:"name"`
	Kind      string       `json:"kind"`
	Size      int64        `json:"size"`
	DataBytes int64        `json:"dataBytes"` // bytes a full read decrypts or reads (allocated data)
	Source    string       `json:"source"`
	Device    string       `json:"device,omitempty"`
	Encrypted bool         `json:"encrypted"`
	Snapshot  *Snapshot    `json:"snapshot,omitempty"`
	Links     []vm.LinkKey `json:"links,omitempty"` // disk links read, top first, with the source that opened each key
	// MAC says how an encrypted data file's pages are authenticated on
	// read (model, unknown: decrypted unauthenticated, ignored).
	MAC string `json:"mac,omitempty"`
}

func newReport(v *vm.VM, files []File, warns []string, o Options) Report {
	r := Report{
		Tool: o.Tool, VMX: filepath.ToSlash(v.VMXPath), Opened: o.Now().UTC(), Encrypted: v.Encrypted(),
		Files: []FileReport{}, Warnings: append(slices.Clip(v.Warnings), warns...), Notes: v.Notes(),
	}
	if v.ConfigKey != nil {
		r.KeySafe = &KeyUse{Locker: v.Opened.Locker, Source: v.Opened.Source, Cipher: v.ConfigKey.Cipher}
	}
	for _, f := range files {
		fr := FileReport{
			Name: f.Name, Kind: f.Kind, Size: f.Size, DataBytes: f.DataBytes(), Source: filepath.ToSlash(f.Source),
			Device: f.Device, Encrypted: f.Encrypted, Snapshot: f.Snapshot, MAC: f.MAC,
		}
		for _, l := range f.Links {
			l.File = filepath.ToSlash(l.File)
			fr.Links = append(fr.Links, l)
		}
		r.Files = append(r.Files, fr)
	}
	return r
}
