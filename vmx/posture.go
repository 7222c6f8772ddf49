package vmx

import (
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Posture is the security posture of a VM, from its settings. Fields that
// live inside encryption.data are unknown ("" or nil) until the VM is
// decrypted; SettingsRead says whether they were read.
type Posture struct {
	Encrypted      bool   `json:"encrypted"`
	EncryptionType string `json:"encryptionType,omitempty"` // vmx.encryptionType
	SettingsRead   bool   `json:"settingsRead"`             // decrypted (or plain) settings were read
	VTPM           bool   `json:"vtpm"`                     // vtpm.present
	Firmware       string `json:"firmware,omitempty"`       // "efi" or "bios"; "" unknown
	SecureBoot     *bool  `json:"secureBoot,omitempty"`     // uefi.secureBoot.enabled
	// VMotionEncryption is migrate.encryptionMode: disabled,
	// opportunistic (the default) or required.
	VMotionEncryption string   `json:"vmotionEncryption,omitempty"`
	FaultTolerance    *bool    `json:"faultTolerance,omitempty"` // an ft.* / ftcpt.* setting enabled
	MemorySnapshots   bool     `json:"memorySnapshots"`          // .vmsn or .vmem files present (from the caller)
	Conflicts         []string `json:"conflicts"`                // one readable sentence each
}

// IsTrue reads a VMX boolean ("TRUE", "true", "1", "yes").
func IsTrue(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}

// ftEnabled reports whether any ft.* or ftcpt.* setting is a true boolean.
func ftEnabled(fs ...*File) bool {
	for _, f := range fs {
		if f == nil {
			continue
		}
		for _, l := range f.Lines {
			if l.Kind == Setting && (hasPrefixFold(l.Key, "ft.") || hasPrefixFold(l.Key, "ftcpt.")) && IsTrue(l.Value) {
				return true
			}
		}
	}
	return false
}

// PostureOf computes the posture. outer is the VMX as stored; settings is
// the decrypted settings (nil when not decrypted; for a plain VMX pass
// outer again). memorySnapshots says whether .vmsn/.vmem files exist.
func PostureOf(outer, settings *File, memorySnapshots bool) Posture {
	var p Posture
	_, _, p.Encrypted, _ = outer.Encryption()
	p.EncryptionType, _ = outer.Get("vmx.encryptionType")
	p.MemorySnapshots = memorySnapshots
	get := func(k string) (string, bool) {
		if settings != nil {
			if v, ok := settings.Get(k); ok {
				return v, true
			}
		}
		return outer.Get(k)
	}
	v, _ := get("vtpm.present")
	p.VTPM = IsTrue(v)
	if settings != nil {
		p.SettingsRead = true
		p.Firmware = "bios"
		if v, ok := get("firmware"); ok && strings.TrimSpace(v) != "" {
			p.Firmware = strings.ToLower(strings.TrimSpace(v))
		}
		v, _ := get("uefi.secureBoot.enabled")
		sb := IsTrue(v)
		p.SecureBoot = &sb
		p.VMotionEncryption = "opportunistic"
		if v, ok := get("migrate.encryptionMode"); ok && strings.TrimSpace(v) != "" {
			p.VMotionEncryption = strings.ToLower(strings.TrimSpace(v))
		}
		ft := ftEnabled(outer, settings)
		p.FaultTolerance = &ft
	} else if ftEnabled(outer) {
		ft := true
		p.FaultTolerance = &ft
	}
	p.Conflicts = []string{}
	if p.Encrypted && memorySnapshots {
		p.Conflicts = append(p.Conflicts, "memory snapshot files (.vmsn/.vmem) exist on an encrypted VM")
	}
	if p.Encrypted && p.FaultTolerance != nil && *p.FaultTolerance {
		p.Conflicts = append(p.Conflicts, "Fault Tolerance is enabled on an encrypted VM")
	}
	if p.VTPM && !p.Encrypted {
		p.Conflicts = append(p.Conflicts, "a vTPM is present but the VM is not encrypted")
	}
	if p.SecureBoot != nil && *p.SecureBoot && p.Firmware != "efi" {
		p.Conflicts = append(p.Conflicts, "Secure Boot is enabled without EFI firmware")
	}
	if p.Encrypted && p.VMotionEncryption != "" && p.VMotionEncryption != "required" {
		p.Conflicts = append(p.Conflicts, "the VM is encrypted but vMotion encryption is "+p.VMotionEncryption+", not required")
	}
	return p
}

// Disk is a virtual disk attached to the VM.
type Disk struct {
	Device   string `json:"device"`   // e.g. "nvme0:0"
	FileName string `json:"fileName"` // as written (relative to the VM folder or absolute)
}

var diskKey = regexp.MustCompile(`(?i)^((?:scsi|nvme|sata|ide)\d+:\d+)\.filename$`)

// Disks lists the present disks of the settings (scsiX:Y, nvmeX:Y,
// sataX:Y, ideX:Y with .present TRUE), skipping CD-ROMs and other
// non-disk devices, sorted by device.
func Disks(f *File) []Disk {
	var out []Disk
	seen := map[string]bool{}
	for _, l := range f.Lines {
		if l.Kind != Setting {
			continue
		}
		m := diskKey.FindStringSubmatch(l.Key)
		if m == nil {
			continue
		}
		dev := strings.ToLower(m[1])
		if seen[dev] {
			continue
		}
		seen[dev] = true
		present, _ := f.Get(dev + ".present")
		if !IsTrue(present) {
			continue
		}
		dt, _ := f.Get(dev + ".deviceType")
		dt = strings.ToLower(dt)
		name, _ := f.Get(dev + ".fileName")
		if strings.HasPrefix(dt, "cdrom") || (dt != "" && !strings.Contains(dt, "disk")) ||
			!strings.EqualFold(path.Ext(name), ".vmdk") {
			continue
		}
		out = append(out, Disk{Device: dev, FileName: name})
	}
	sort.Slice(out, func(i, j int) bool { return deviceLess(out[i].Device, out[j].Device) })
	return out
}

// deviceLess orders "nvme0:1" before "nvme0:10" and buses by name.
func deviceLess(a, b string) bool {
	split := func(s string) (string, int, int) {
		i := strings.IndexAny(s, "0123456789")
		bus, rest, _ := strings.Cut(s[i:], ":")
		x, _ := strconv.Atoi(bus)
		y, _ := strconv.Atoi(rest)
		return s[:i], x, y
	}
	an, ax, ay := split(a)
	bn, bx, by := split(b)
	if an != bn {
		return an < bn
	}
	if ax != bx {
		return ax < bx
	}
	return ay < by
}

// NVRAM returns the VM's NVRAM file name: the nvram setting, or the VMX
// name with .nvram.
func NVRAM(f *File, vmxName string) string {
	if v, ok := f.Get("nvram"); ok && v != "" {
		return v
	}
	return strings.TrimSuffix(vmxName, path.Ext(vmxName)) + ".nvram"
}
