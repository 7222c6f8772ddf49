package recover

import (
	"encoding/json"
	"path/filepath"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/vm"
)

// Report is recover-report.json. Paths in it use forward slashes, so that
// the report does not depend on the OS that wrote it.
type Report struct {
	Tool      string       `json:"tool"`
	VMX       string       `json:"vmx"`
	OutDir    string       `json:"outDir"`
	Format    string       `json:"format"`
	Flatten   bool         `json:"flatten"`
	Started   time.Time    `json:"started"`
	Seconds   float64      `json:"seconds"`
	KeySafe   KeyUse       `json:"keySafe"`
	Disks     []DiskReport `json:"disks"`
	DataFiles []FileReport `json:"dataFiles"`
	VTPM      *VTPMReport  `json:"vtpm,omitempty"`
	Outputs   []Output     `json:"outputs"`
	Warnings  []string     `json:"warnings,omitempty"`
	Notes     []string     `json:"notes,omitempty"`
}

// KeyUse says which source opened a locator.
type KeyUse struct {
	Locker string `json:"locker"`
	Source string `json:"source"`
	Cipher string `json:"cipher"`
}

// DiskReport describes one recovered disk.
type DiskReport struct {
	Device        string       `json:"device"`
	FileName      string       `json:"fileName"`
	Size          int64        `json:"size"`
	DataBytes     int64        `json:"dataBytes"`
	Links         []vm.LinkKey `json:"links"`
	Output        string       `json:"output"`
	ContentSHA256 string       `json:"contentSha256"` // sha256 of the plain virtual disk (as qemu-img convert -O raw gives it)
	Verified      string       `json:"verified"`
	Seconds       float64      `json:"seconds"`
}

// FileReport describes one data file.
type FileReport struct {
	File      string `json:"file"`
	Output    string `json:"output"`
	Encrypted bool   `json:"encrypted"`
	Size      int64  `json:"size"`
	// MAC: "verified (model)", "not checked (unknown scheme)", "not
	// checked (ignored)"; empty for plain files.
	MAC string `json:"mac,omitempty"`
}

// Output is one written file with its sha256.
type Output struct {
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// newReport starts the report of a run.
func (p *Plan) newReport(outDir string, start time.Time) *Report {
	v, o := p.VM, &p.opts
	return &Report{
		Tool: "vmcrypt recover", VMX: slash(v.VMXPath), OutDir: slash(outDir), Format: o.Format,
		Flatten: o.Flatten || o.Format == FormatRaw, Started: start.UTC(),
		KeySafe: KeyUse{Locker: v.Opened.Locker, Source: v.Opened.Source, Cipher: v.ConfigKey.Cipher},
		VTPM:    p.vtpm,
	}
}

// finish adds warnings and notes, and the report as JSON.
func (r *Report) finish(p *Plan, start time.Time) ([]byte, error) {
	r.Warnings = append(append([]string(nil), p.VM.Warnings...), p.warns...)
	r.Notes = p.VM.Notes()
	r.Seconds = time.Since(start).Seconds()
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(js, '\n'), nil
}

// slash writes a path with forward slashes (reports are the same on every
// OS).
func slash(p string) string { return filepath.ToSlash(p) }
