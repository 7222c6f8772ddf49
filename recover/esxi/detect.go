package esxi

import (
	"bytes"
	"errors"
	"io"
	"path"
	"strings"
)

// Detection of ESXi host files, for a datastore or disk scan.

// Kind is what Detect recognised.
type Kind string

// Kinds.
const (
	KindUnknown      Kind = ""
	KindEnvelope     Kind = "envelope"            // a DataTransformEnvelope (local.tgz.ve, an encrypted core dump)
	KindKeyStore     Kind = "key store"           // encryption.info
	KindVisorTar     Kind = "visor tar"           // an uncompressed vmtar (boot module)
	KindStateArchive Kind = "state archive"       // state.tgz: local.tgz.ve + encryption.info, or local.tgz
	KindConfigBundle Kind = "config bundle"       // configBundle-*.tgz: holds state.tgz
	KindPlainConfig  Kind = "plain configuration" // local.tgz itself (holds etc/vmware/esx.conf)
	KindGzipArchive  Kind = "gzip tar"            // another gzip tar (a compressed vmtar, ...)
)

// MaxDetectRead caps the decompressed bytes Detect reads from one file
// (nested archives included).
const MaxDetectRead = 64 << 20

// Details is what Detect found.
type Details struct {
	Kind Kind `json:"kind"`
	// Encrypted: the file is an envelope, or holds the host
	// configuration in one.
	Encrypted bool   `json:"encrypted"`
	KeyID     string `json:"keyId,omitempty"` // the envelope's key id
	// KeyStoreMode is the mode of the key store found ("NONE", a TPM
	// mode), "" when none.
	KeyStoreMode    string `json:"keyStoreMode,omitempty"`
	Sealed          bool   `json:"sealed,omitempty"`
	IncludeKeyCache bool   `json:"includeKeyCache,omitempty"`
	// KeyBeside: the envelope travels with a mode NONE key store, whose
	// key anyone can derive: the configuration is only obfuscated.
	KeyBeside bool `json:"keyBeside,omitempty"`
	// Plain: the host configuration is held without encryption
	// (pre-7.0 U2 local.tgz, or a plain configuration itself).
	Plain bool `json:"plain,omitempty"`
	// Secrets are the secret files readable without any key (plain
	// configurations), with why they matter.
	Secrets []HostFile `json:"secrets,omitempty"`
	// Partial: MaxDetectRead ran out before the whole file was seen.
	Partial bool `json:"partial,omitempty"`
}

// Exposed says whether whoever holds the file can read the host
// configuration: plain, or encrypted under a key derivable from the key
// store that travels with it.
func (d *Details) Exposed() bool { return d.Plain || d.KeyBeside }

// Detect recognises an ESXi host file in r[0:size]: an envelope (key id
// read, nothing decrypted), a key store, a visor tar, or a gzip archive
// holding a host configuration (looked into, nested archives included,
// reading at most MaxDetectRead decompressed bytes). An unrecognised file
// is KindUnknown with a nil error. A recognised but damaged file returns
// its kind and the error (keysafe.ErrCorrupt/ErrUnsupported).
func Detect(r io.ReaderAt, size int64) (*Details, error) {
	d := &Details{}
	head := make([]byte, min(size, 512))
	if err := readFullAt(r, head, 0); err != nil {
		return d, err
	}
	switch {
	case bytes.HasPrefix(head, []byte(headerMagic)):
		d.Kind, d.Encrypted = KindEnvelope, true
		e, err := Parse("", r, size)
		if err != nil {
			return d, err
		}
		d.KeyID = e.KeyID
		return d, nil
	case len(head) == tarBlock && string(head[257:265]) == visorMagic:
		d.Kind = KindVisorTar
		return d, nil
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		d.Kind = KindGzipArchive
		dt := &detector{d: d, budget: MaxDetectRead}
		err := dt.archive(io.NewSectionReader(r, 0, size), 0)
		if errors.Is(err, errBudget) {
			d.Partial, err = true, nil
		}
		if d.KeyStoreMode == ModeNone && d.Encrypted {
			d.KeyBeside = true
		}
		return d, err
	case size <= MaxKeyStoreSize && (bytes.Contains(head, []byte("ConfigEncData")) || bytes.Contains(head, []byte("mode"))):
		b := make([]byte, size)
		if err := readFullAt(r, b, 0); err != nil {
			return d, err
		}
		if !bytes.Contains(b, []byte("ConfigEncData")) && !bytes.Contains(b, []byte("includeKeyCache")) {
			return d, nil
		}
		ks, err := ParseKeyStore("", b)
		d.Kind = KindKeyStore
		if err != nil {
			return d, err
		}
		d.KeyStoreMode, d.Sealed, d.IncludeKeyCache, d.KeyID = ks.Mode, ks.Sealed(), ks.IncludeKeyCache, ks.KeyID
		return d, nil
	}
	return d, nil
}

var errBudget = errors.New("esxi: detection budget spent")

type detector struct {
	d      *Details
	budget int64
}

type budgetReader struct {
	r  io.Reader
	dt *detector
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if b.dt.budget <= 0 {
		return 0, errBudget
	}
	if int64(len(p)) > b.dt.budget {
		p = p[:b.dt.budget]
	}
	n, err := b.r.Read(p)
	b.dt.budget -= int64(n)
	return n, err
}

// archive looks into a gzip tar; depth counts nesting.
func (dt *detector) archive(r io.Reader, depth int) error {
	if depth > maxNesting {
		return nil
	}
	zr, _, err := Decompress("", r)
	if err != nil {
		return err
	}
	var nested [][]byte
	var kinds []string
	plainConfig := false
	var secrets []HostFile
	_, err = WalkTar("", &budgetReader{zr, dt}, func(e *Entry, data io.Reader) error {
		name := strings.TrimPrefix(path.Clean("/"+e.Name), "/")
		if name == PathEsxConf {
			plainConfig = true
		}
		if s := SecretKind(name); s != "" && e.Type == TypeFile {
			secrets = append(secrets, HostFile{Name: e.Name, Type: e.Type, Mode: e.Mode, Size: e.Size, ModTime: e.ModTime, Secret: s})
		}
		base := strings.ToLower(path.Base(name))
		if e.Type != TypeFile || (strings.Contains(name, "/") && base != NameState) {
			return nil
		}
		switch base {
		case NameEnvelope:
			dt.d.Encrypted = true
			if e.Size <= dt.budget {
				b, err := io.ReadAll(data)
				if err != nil {
					return err
				}
				if env, err := Parse("", bytes.NewReader(b), int64(len(b))); err == nil {
					dt.d.KeyID = env.KeyID
				}
			}
			kinds = append(kinds, base)
		case NameKeyStore:
			if e.Size <= MaxKeyStoreSize {
				b, err := io.ReadAll(data)
				if err != nil {
					return err
				}
				if ks, err := ParseKeyStore("", b); err == nil {
					dt.d.KeyStoreMode, dt.d.Sealed, dt.d.IncludeKeyCache = ks.Mode, ks.Sealed(), ks.IncludeKeyCache
				}
			}
			kinds = append(kinds, base)
		case NamePlain, NameState:
			if e.Size <= dt.budget {
				b, err := io.ReadAll(data)
				if err != nil {
					return err
				}
				nested = append(nested, b)
			}
			kinds = append(kinds, base)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if plainConfig {
		dt.d.Plain = true
		dt.d.Secrets = append(dt.d.Secrets, secrets...)
		if depth == 0 {
			dt.d.Kind = KindPlainConfig
		}
		return nil
	}
	if depth == 0 {
		for _, k := range kinds {
			switch k {
			case NameState:
				dt.d.Kind = KindConfigBundle
			case NameEnvelope, NameKeyStore, NamePlain:
				if dt.d.Kind != KindConfigBundle {
					dt.d.Kind = KindStateArchive
				}
			}
		}
	}
	for _, b := range nested {
		if err := dt.archive(bytes.NewReader(b), depth+1); err != nil {
			return err
		}
	}
	return nil
}
