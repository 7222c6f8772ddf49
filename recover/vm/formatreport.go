package vm

import (
	"encoding/base64"
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"

	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// FormatReport is what a maintainer needs to extend vmcrypt's models to a
// real VM's files, and nothing secret: shapes, lengths, names, header
// fields and yes/no answers; never a key, passphrase, salt, IV, plaintext
// or ciphertext byte, nor a setting's value.
type FormatReport struct {
	Tool      string          `json:"tool"`
	Opened    bool            `json:"opened"` // keys were given and opened the VM
	VMX       VMXShape        `json:"vmx"`
	KeySafe   []LocatorShape  `json:"keySafe,omitempty"`
	Disks     []DiskShape     `json:"disks,omitempty"`
	DataFiles []DataFileShape `json:"dataFiles,omitempty"`
	Other     []string        `json:"otherFiles,omitempty"`
	Notes     []string        `json:"notes,omitempty"`
}

// VMXShape describes the .vmx file.
type VMXShape struct {
	Bytes        int      `json:"bytes"`
	Lines        int      `json:"lines"`
	CRLF         bool     `json:"crlf"`
	BOM          bool     `json:"bom"`
	PlainKeys    []string `json:"plainKeys"` // setting names outside encryption.data
	DataBytes    int      `json:"encryptionDataBytes,omitempty"`
	SettingsKeys int      `json:"settingsKeys,omitempty"` // how many settings encryption.data holds (opened)
	Problems     []string `json:"problems,omitempty"`
}

// LocatorShape describes one pair of a key locator.
type LocatorShape struct {
	Where        string   `json:"where"` // "vmx" or a disk file name
	Locker       string   `json:"locker"`
	MAC          string   `json:"mac"`
	LockedBytes  int      `json:"lockedBytes"`
	Pass2Key     string   `json:"pass2key,omitempty"`
	Cipher       string   `json:"cipher,omitempty"`
	Rounds       string   `json:"rounds,omitempty"`
	KeyIDLen     int      `json:"keyIdLength,omitempty"`
	Opened       bool     `json:"opened,omitempty"`
	OtherEntries []string `json:"otherEntries,omitempty"` // bundle entry types besides type=key
}

// DiskShape describes one link of a disk chain.
type DiskShape struct {
	File            string   `json:"file"`
	Level           int      `json:"level"`
	CreateType      string   `json:"createType"`
	DescriptorKeys  []string `json:"descriptorKeys"`
	Extents         []string `json:"extents"` // type and format of each
	GrainSize       int64    `json:"grainSize,omitempty"`
	Encrypted       bool     `json:"encrypted"`
	FirstDataOffset int64    `json:"firstAllocatedOffset"` // -1: nothing allocated
	SampledUnits    int      `json:"sampledUnits"`         // 512-byte units sampled
	ZeroUnits       int      `json:"allZeroUnits"`         // of them, stored as all zeros
	Error           string   `json:"error,omitempty"`
}

// DataFileShape describes one data file.
type DataFileShape struct {
	File        string `json:"file"`
	Kind        string `json:"kind"`
	Size        int64  `json:"size"`
	Container   bool   `json:"container"` // starts with the §9 magic
	Version     uint32 `json:"version,omitempty"`
	DataPerPage uint32 `json:"dataPerPage,omitempty"`
	IVSize      uint32 `json:"ivSize,omitempty"`
	MACSize     uint32 `json:"macSize,omitempty"`
	Reserved    uint32 `json:"reserved,omitempty"`
	LogicalSize uint64 `json:"logicalSize,omitempty"`
	Pages       int64  `json:"pages,omitempty"`
	MACChecked  int    `json:"pagesMacChecked,omitempty"`
	MACMatched  int    `json:"pagesMatchingModelMac"`
	MAC         string `json:"mac,omitempty"`
	PlainMagic  string `json:"plaintextMagicOk,omitempty"` // "yes"/"no" (opened)
	Error       string `json:"error,omitempty"`
}

// formatSampleUnits caps the units sampled per disk link.
const formatSampleUnits = 8192

// NewFormatReport describes an opened VM (locked or not; opened with
// KeepGoing so that every file is described).
func NewFormatReport(v *VM) *FormatReport {
	r := &FormatReport{Tool: "vmcrypt format report", Opened: v.Encrypted() && !v.Locked}
	raw, _ := os.ReadFile(v.VMXPath)
	r.VMX = VMXShape{Bytes: len(raw), Lines: len(v.File.Lines), BOM: v.File.BOM, CRLF: v.File.EOL() == "\r\n", Problems: v.File.Problems()}
	for _, k := range v.File.Keys() {
		r.VMX.PlainKeys = append(r.VMX.PlainKeys, k)
	}
	if _, data, ok, _ := v.File.Encryption(); ok {
		if b, err := base64.StdEncoding.DecodeString(data); err == nil {
			r.VMX.DataBytes = len(b)
		}
	}
	if v.Settings != nil && v.Decrypted != nil {
		r.VMX.SettingsKeys = len(v.Settings.Keys())
	}
	if v.KeySafe != nil {
		r.KeySafe = append(r.KeySafe, locatorShapes("vmx", v.KeySafe, v)...)
	}
	for _, d := range v.Disks {
		if d.OpenedDisk == nil {
			r.Disks = append(r.Disks, DiskShape{File: filepath.Base(d.Path), Error: safeErr(d.Err)})
			continue
		}
		for i, l := range d.VMDK.Links() {
			r.Disks = append(r.Disks, diskShape(l, i))
			if l.EncryptionKeys != "" {
				if loc, err := keysafe.Parse(l.EncryptionKeys); err == nil {
					r.KeySafe = append(r.KeySafe, locatorShapes(filepath.Base(l.Path), loc, nil)...)
				}
			}
		}
	}
	for _, f := range v.DataFiles {
		r.DataFiles = append(r.DataFiles, dataFileShape(f, v))
	}
	for _, f := range v.Files {
		if f.Kind == KindExtent || f.Kind == KindVMX {
			continue
		}
		known := false
		for _, d := range v.DataFiles {
			known = known || d.Name == f.Name
		}
		if !known && f.Kind != KindDisk {
			r.Other = append(r.Other, f.Name+" ("+f.Kind+")")
		}
	}
	r.Notes = v.Notes()
	sort.Strings(r.Other)
	return r
}

// locatorShapes describes the pairs of a locator. With v (the VMX's key
// safe, opened), the pair that opened it is marked and a bundle's other
// entry types are not known here (only their count in the plaintext is
// secret-free; see UnlockFQIDBundle).
func locatorShapes(where string, l *keysafe.Locator, v *VM) []LocatorShape {
	var out []LocatorShape
	for i, p := range l.Pairs() {
		s := LocatorShape{Where: where, MAC: p.MAC, LockedBytes: len(p.Locked)}
		if p.Locker != nil {
			s.Locker = string(p.Locker.Type)
			switch p.Locker.Type {
			case keysafe.TypePhrase:
				if d, err := keysafe.ParseDict(p.Locker.KeyGenData); err == nil {
					s.Pass2Key, _ = d.Get("pass2key")
					s.Cipher, _ = d.Get("cipher")
					s.Rounds, _ = d.Get("rounds")
				}
			case keysafe.TypeFQID:
				s.KeyIDLen = len(p.Locker.KeyID)
			}
		}
		if v != nil && !v.Locked && v.ConfigKey != nil && v.Opened.Pair == i {
			s.Opened = true
		}
		out = append(out, s)
	}
	return out
}

func diskShape(l *vmdk.Link, level int) DiskShape {
	s := DiskShape{File: filepath.Base(l.Path), Level: level, CreateType: l.Descriptor.CreateType, DescriptorKeys: l.Descriptor.Keys(),
		GrainSize: l.GrainSize, Encrypted: l.EncryptionKeys != "", FirstDataOffset: -1}
	for _, e := range l.Extents {
		s.Extents = append(s.Extents, e.Line.Type+" "+e.Format)
	}
	buf := make([]byte, vmdk.SectorSize)
	err := l.WalkAllocated(func(r vmdk.Run) error {
		if r.State != vmdk.Data {
			return nil
		}
		if s.FirstDataOffset < 0 {
			s.FirstDataOffset = r.Off
		}
		for off := r.Off; off+vmdk.SectorSize <= r.Off+r.Len; off += vmdk.SectorSize {
			if s.SampledUnits >= formatSampleUnits {
				return errEnough
			}
			if err := vmdk.ReadFull(l, buf, off); err != nil {
				return err
			}
			s.SampledUnits++
			if vmdk.AllZero(buf) {
				s.ZeroUnits++
			}
		}
		return nil
	})
	if err != nil && err != errEnough {
		s.Error = safeErr(err)
	}
	return s
}

var errEnough = os.ErrClosed // a sentinel to stop a walk early

func dataFileShape(f *DataFile, v *VM) DataFileShape {
	s := DataFileShape{File: f.Name, Kind: f.Kind, Size: f.StoredSize, MAC: f.MAC}
	if f.Err != nil {
		s.Error = safeErr(f.Err)
	}
	fh, err := os.Open(f.Path)
	if err != nil {
		s.Error = safeErr(err)
		return s
	}
	defer fh.Close()
	var h [32]byte
	if n, _ := fh.ReadAt(h[:], 0); n < 32 || !datafile.IsDataFile(h[:]) {
		return s
	}
	le := binary.LittleEndian
	s.Container = true
	s.Version, s.DataPerPage, s.IVSize, s.MACSize, s.Reserved = le.Uint32(h[4:]), le.Uint32(h[8:]), le.Uint32(h[12:]), le.Uint32(h[16:]), le.Uint32(h[20:])
	s.LogicalSize = le.Uint64(h[24:])
	if f.StoredSize > datafile.HeaderSize {
		s.Pages = (f.StoredSize - datafile.HeaderSize) / datafile.PageSize
	}
	if v.DataFileKey != nil {
		s.MACChecked, s.MACMatched, err = datafile.MACSurvey(fh, f.StoredSize, v.DataFileKey.Bytes, 64)
		if err != nil && s.Error == "" {
			s.Error = safeErr(err)
		}
		if chk := plainCheck(f.Kind); chk != nil && f.Err == nil {
			if r, err := f.Open(); err == nil {
				first := make([]byte, min(int64(datafile.DataPerPage), r.Size()))
				r.ReadAt(first, 0)
				r.Close()
				s.PlainMagic = "yes"
				if chk(first) != nil {
					s.PlainMagic = "no"
				}
			}
		}
	}
	return s
}

// safeErr is an error's text for the report: errors name files, offsets
// and fields, never key bytes.
func safeErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
