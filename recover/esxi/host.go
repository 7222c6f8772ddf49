package esxi

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"io"
	"path"
	"sort"
	"strings"
	"time"
)

// What a host configuration says: the summary esxi inspect prints.

// Limits of Inspect.
const (
	// MaxConfigFileRead caps esx.conf and vmInventory.xml read into memory.
	MaxConfigFileRead = 16 << 20
	// maxSettings caps the esx.conf lines kept as crypto settings.
	maxSettings = 200
	// maxVMs caps the VMs kept from vmInventory.xml.
	maxVMs = 100_000
)

// Paths inside local.tgz.
const (
	PathEsxConf     = "etc/vmware/esx.conf"
	PathVMInventory = "etc/vmware/hostd/vmInventory.xml"
)

// HostFile is one member of the configuration archive.
type HostFile struct {
	Name     string    `json:"name"`
	Type     EntryType `json:"type"`
	Mode     int64     `json:"mode"`
	Size     int64     `json:"size"`
	ModTime  time.Time `json:"mtime"`
	Linkname string    `json:"linkname,omitempty"`
	// Secret says why the file matters to whoever holds it (a private
	// key, password hashes), "" otherwise.
	Secret string `json:"secret,omitempty"`
}

// VM is one entry of vmInventory.xml.
type VM struct {
	ID   string `json:"id"`   // objID (the VM's id on the host)
	Path string `json:"path"` // vmxCfgPath
}

// Setting is one esx.conf line.
type Setting struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// HostInfo is what the configuration says.
type HostInfo struct {
	Files       []HostFile `json:"files"`
	TotalSize   int64      `json:"totalSize"`
	Version     string     `json:"version,omitempty"`
	VersionFrom string     `json:"versionFrom,omitempty"`
	HostName    string     `json:"hostName,omitempty"`
	SystemUUID  string     `json:"systemUuid,omitempty"`
	HasEsxConf  bool       `json:"hasEsxConf"`
	HasVMList   bool       `json:"hasVmInventory"`
	VMs         []VM       `json:"vms"`
	// CryptoSettings are the esx.conf lines about encryption, crypto
	// state, key providers or KMS (none on a host that never used them).
	CryptoSettings []Setting `json:"cryptoSettings"`
	// CryptoState is the value of an esx.conf key ending in cryptoState
	// or cryptoMode, "" when the configuration does not say.
	CryptoState string `json:"cryptoState,omitempty"`
}

// Secrets lists the files whose Secret is set.
func (hi *HostInfo) Secrets() []HostFile {
	var s []HostFile
	for _, f := range hi.Files {
		if f.Secret != "" {
			s = append(s, f)
		}
	}
	return s
}

// Inspect walks the configuration (Walk: the tag is verified before and
// after) and summarises it.
func (h *HostConfig) Inspect() (*HostInfo, error) {
	hi := &HostInfo{VMs: []VM{}, CryptoSettings: []Setting{}}
	var esxConf, inv []byte
	err := h.Walk(func(e *Entry, d io.Reader) error {
		name := strings.TrimPrefix(path.Clean("/"+e.Name), "/")
		hi.Files = append(hi.Files, HostFile{Name: e.Name, Type: e.Type, Mode: e.Mode, Size: e.Size, ModTime: e.ModTime, Linkname: e.Linkname, Secret: SecretKind(name)})
		hi.TotalSize += e.Size
		if e.Type != TypeFile || e.Size > MaxConfigFileRead {
			return nil
		}
		switch name {
		case PathEsxConf:
			b, err := io.ReadAll(io.LimitReader(d, e.Size))
			esxConf = b
			return err
		case PathVMInventory:
			b, err := io.ReadAll(io.LimitReader(d, e.Size))
			inv = b
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if h.BootCfg["build"] != "" {
		hi.Version, hi.VersionFrom = h.BootCfg["build"], NameBootCfg+" build"
	}
	if esxConf != nil {
		hi.HasEsxConf = true
		for _, s := range ParseEsxConf(esxConf) {
			k := strings.ToLower(s.Key)
			switch {
			case k == "/adv/misc/hostname":
				hi.HostName = s.Value
			case k == "/system/uuid":
				hi.SystemUUID = s.Value
			case k == "/resourcegroups/version" && hi.Version == "":
				hi.Version, hi.VersionFrom = s.Value, "esx.conf /resourceGroups/version"
			}
			if isCryptoKey(k) && len(hi.CryptoSettings) < maxSettings {
				hi.CryptoSettings = append(hi.CryptoSettings, s)
				if base := path.Base(k); base == "cryptostate" || base == "cryptomode" {
					hi.CryptoState = s.Value
				}
			}
		}
	}
	if inv != nil {
		hi.HasVMList = true
		vms, err := ParseVMInventory(PathVMInventory, inv)
		if err != nil {
			return nil, err
		}
		hi.VMs = vms
	}
	return hi, nil
}

func isCryptoKey(k string) bool {
	for _, w := range []string{"crypto", "encryption", "kms", "kmip", "keyprovider", "keypersist"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// SecretKind says why a configuration file matters to whoever holds it,
// or "".
func SecretKind(name string) string {
	base := path.Base(name)
	switch {
	case strings.HasPrefix(name, "etc/ssh/") && strings.HasPrefix(base, "ssh_host_") && strings.HasSuffix(base, "_key"):
		return "SSH host private key"
	case name == "etc/vmware/ssl/rui.key":
		return "host TLS private key"
	case strings.HasPrefix(name, "etc/vmware/") && strings.HasSuffix(base, ".key"):
		return "private key"
	case name == "etc/shadow":
		return "password hashes"
	case name == "etc/vmware/encryption.info":
		return "configuration key store (copy)"
	case name == "etc/vmware/license.cfg":
		return "license"
	}
	return ""
}

// ParseEsxConf reads esx.conf lines `/path = "value"` (others skipped).
func ParseEsxConf(b []byte) []Setting {
	var out []Setting
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		k = strings.TrimSpace(k)
		if !ok || !strings.HasPrefix(k, "/") {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		out = append(out, Setting{k, v})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// ParseVMInventory reads hostd's vmInventory.xml: the VMs registered on
// the host. Damaged XML is keysafe.ErrCorrupt.
func ParseVMInventory(file string, b []byte) ([]VM, error) {
	var doc struct {
		Entries []struct {
			ObjID string `xml:"objID"`
			Path  string `xml:"vmxCfgPath"`
		} `xml:"ConfigEntry"`
	}
	if len(b) > MaxConfigFileRead {
		return nil, unsupportedf(file, -1, "vmInventory.xml", "more than %d bytes", MaxConfigFileRead)
	}
	if err := xml.Unmarshal(b, &doc); err != nil {
		return nil, corruptf(file, -1, "vmInventory.xml", "%v", err)
	}
	vms := []VM{}
	for _, e := range doc.Entries {
		if len(vms) == maxVMs {
			break
		}
		vms = append(vms, VM{ID: strings.TrimSpace(e.ObjID), Path: strings.TrimSpace(e.Path)})
	}
	return vms, nil
}
