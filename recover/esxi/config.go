package esxi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The host configuration: where it is and how it opens.
//
// A host keeps its configuration in the boot bank's state.tgz (a gzip
// tar): since 7.0 U2 it holds local.tgz.ve (an Envelope) and
// encryption.info (a KeyStore), before that a plain local.tgz. A
// configBundle-*.tgz backup holds state.tgz. FindConfig takes any of these,
// a boot-bank folder or the envelope itself.

// Limits of FindConfig.
const (
	// MaxNestedArchive caps a member read into memory from a container
	// (state.tgz inside a bundle, local.tgz.ve or local.tgz inside
	// state.tgz). Real ones are well under 10 MiB.
	MaxNestedArchive = 256 << 20
	// maxContainerNames caps the member names kept per container.
	maxContainerNames = 1000
	// maxNesting caps containers inside containers.
	maxNesting = 3
)

// Names of the files of a host configuration.
const (
	NameEnvelope = "local.tgz.ve"
	NameKeyStore = "encryption.info"
	NamePlain    = "local.tgz"
	NameState    = "state.tgz"
	NameBootCfg  = "boot.cfg"
)

// Container is an archive FindConfig looked into, and what it held.
type Container struct {
	Name    string   `json:"name"`    // e.g. "configBundle-h.tgz > state.tgz"
	Members []string `json:"members"` // member names (at most 1000)
}

// HostConfig is a host configuration found by FindConfig.
type HostConfig struct {
	Path string `json:"path"` // as given
	// Kind is what Path is: "config bundle", "state archive", "boot bank
	// folder", "envelope" or "plain configuration".
	Kind string `json:"kind"`

	Envelope     *Envelope `json:"-"`
	EnvelopeFrom string    `json:"envelopeFrom,omitempty"` // "configBundle-h.tgz > state.tgz > local.tgz.ve"
	KeyStore     *KeyStore `json:"keyStore,omitempty"`
	KeyStoreFrom string    `json:"keyStoreFrom,omitempty"`

	// A plain (pre-7.0 U2) local.tgz, when there is no envelope.
	PlainFrom string `json:"plainFrom,omitempty"`
	PlainSize int64  `json:"plainSize,omitempty"`
	plain     io.ReaderAt

	// BootCfg holds boot.cfg's key=value lines of a boot-bank folder.
	BootCfg    map[string]string `json:"bootCfg,omitempty"`
	Containers []Container       `json:"containers,omitempty"`
	Notes      []string          `json:"notes,omitempty"`

	closers []io.Closer
	key     []byte // the key, once derived and checked
}

// Encrypted says whether the configuration is in an envelope.
func (h *HostConfig) Encrypted() bool { return h.Envelope != nil }

// Close releases the files FindConfig opened.
func (h *HostConfig) Close() error {
	var first error
	for _, c := range h.closers {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	h.closers = nil
	return first
}

// FindConfig finds the configuration at p: a configBundle-*.tgz, a
// state.tgz, a local.tgz.ve (its key store: keyStorePath, else
// encryption.info beside it), a plain local.tgz, or a boot-bank folder
// holding one of them. keyStorePath, when set, replaces any key store
// found. Inputs are opened read-only. Nothing is decrypted.
func FindConfig(p, keyStorePath string) (*HostConfig, error) {
	h := &HostConfig{Path: p}
	ok := false
	defer func() {
		if !ok {
			h.Close()
		}
	}()
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		if err := h.fromFolder(p); err != nil {
			return nil, err
		}
	} else if err := h.fromFile(p, filepath.Base(p)); err != nil {
		return nil, err
	}
	if keyStorePath != "" {
		b, err := readSmallFile(keyStorePath, MaxKeyStoreSize)
		if err != nil {
			return nil, err
		}
		ks, err := ParseKeyStore(keyStorePath, b)
		if err != nil {
			return nil, err
		}
		h.KeyStore, h.KeyStoreFrom = ks, keyStorePath
	}
	if h.Envelope == nil && h.plain == nil {
		return nil, corruptf(p, -1, "host configuration", "no %s or %s found (looked in %s)", NameEnvelope, NamePlain, h.lookedIn())
	}
	ok = true
	return h, nil
}

func (h *HostConfig) lookedIn() string {
	if len(h.Containers) == 0 {
		return h.Path
	}
	var n []string
	for _, c := range h.Containers {
		n = append(n, c.Name)
	}
	return strings.Join(n, ", ")
}

func (h *HostConfig) fromFolder(dir string) error {
	h.Kind = "boot bank folder"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	find := func(match func(string) bool) []string {
		var out []string
		for _, e := range ents {
			if !e.IsDir() && match(strings.ToLower(e.Name())) {
				out = append(out, e.Name())
			}
		}
		sort.Strings(out)
		return out
	}
	if b := find(func(n string) bool { return n == NameBootCfg }); len(b) == 1 {
		if data, err := readSmallFile(filepath.Join(dir, b[0]), 64<<10); err == nil {
			h.BootCfg = parseBootCfg(data)
		}
	}
	if env := find(func(n string) bool { return n == NameEnvelope }); len(env) == 1 {
		return h.fromFile(filepath.Join(dir, env[0]), env[0])
	}
	if s := find(func(n string) bool { return n == NameState }); len(s) == 1 {
		err := h.fromFile(filepath.Join(dir, s[0]), s[0])
		h.Kind = "boot bank folder"
		return err
	}
	if pl := find(func(n string) bool { return n == NamePlain }); len(pl) == 1 {
		err := h.fromFile(filepath.Join(dir, pl[0]), pl[0])
		h.Kind = "boot bank folder"
		return err
	}
	if cb := find(func(n string) bool { return strings.HasPrefix(n, "configbundle") && strings.HasSuffix(n, ".tgz") }); len(cb) > 0 {
		if len(cb) > 1 {
			return fmt.Errorf("%s holds %d configuration bundles (%s): name one", dir, len(cb), strings.Join(cb, ", "))
		}
		return h.fromFile(filepath.Join(dir, cb[0]), cb[0])
	}
	return corruptf(dir, -1, "host configuration", "no %s, %s, %s or configBundle-*.tgz in the folder", NameEnvelope, NameState, NamePlain)
}

// fromFile classifies a file by its content.
func (h *HostConfig) fromFile(p, label string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	h.closers = append(h.closers, f)
	head := make([]byte, 512)
	n, _ := f.ReadAt(head, 0)
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte(headerMagic)):
		if h.Kind == "" {
			h.Kind = "envelope"
		}
		env, err := Parse(p, f, st.Size())
		if err != nil {
			return err
		}
		h.Envelope, h.EnvelopeFrom = env, label
		beside := filepath.Join(filepath.Dir(p), NameKeyStore)
		if b, err := readSmallFile(beside, MaxKeyStoreSize); err == nil {
			ks, err := ParseKeyStore(beside, b)
			if err != nil {
				return err
			}
			h.KeyStore, h.KeyStoreFrom = ks, NameKeyStore+" beside it"
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return h.fromArchive(label, io.NewSectionReader(f, 0, st.Size()), st.Size(), 0)
	}
	return corruptf(p, 0, "magic", "neither an envelope nor a gzip archive")
}

// fromArchive looks into a gzip tar: a bundle (holds state.tgz), a state
// archive (holds local.tgz.ve / encryption.info / local.tgz) or a plain
// configuration itself (holds etc/vmware/esx.conf).
func (h *HostConfig) fromArchive(label string, r io.ReaderAt, size int64, depth int) error {
	if depth > maxNesting {
		return unsupportedf(label, -1, "nesting", "archives nested more than %d deep", maxNesting)
	}
	zr, _, err := Decompress(label, io.NewSectionReader(r, 0, size))
	if err != nil {
		return err
	}
	c := Container{Name: label}
	var nested []struct {
		name string
		data []byte
	}
	var isPlainConfig bool
	_, err = WalkTar(label, zr, func(e *Entry, d io.Reader) error {
		if len(c.Members) < maxContainerNames {
			c.Members = append(c.Members, e.Name)
		}
		clean := strings.TrimPrefix(path.Clean("/"+e.Name), "/")
		base := strings.ToLower(path.Base(clean))
		if clean == "etc/vmware/esx.conf" {
			isPlainConfig = true
		}
		if e.Type != TypeFile || strings.Contains(clean, "/") && base != NameState {
			return nil // only top-level files (state.tgz may sit in a folder of a bundle)
		}
		switch base {
		case NameEnvelope, NamePlain, NameState, NameKeyStore:
		default:
			return nil
		}
		limit := int64(MaxNestedArchive)
		if base == NameKeyStore {
			limit = MaxKeyStoreSize
		}
		if e.Size > limit {
			return unsupportedf(label, -1, "member "+e.Name, "%d bytes, more than the %d read", e.Size, limit)
		}
		b, err := io.ReadAll(io.LimitReader(d, e.Size))
		if err != nil {
			return err
		}
		if int64(len(b)) != e.Size {
			return corruptf(label, -1, "member "+e.Name, "truncated")
		}
		nested = append(nested, struct {
			name string
			data []byte
		}{base, b})
		return nil
	})
	if err != nil {
		return err
	}
	h.Containers = append(h.Containers, c)
	if isPlainConfig && len(nested) == 0 {
		if h.Kind == "" {
			h.Kind = "plain configuration"
		}
		return h.setPlain(label, r, size)
	}
	var state []byte
	for _, n := range nested {
		from := label + " > " + n.name
		switch n.name {
		case NameEnvelope:
			if h.Envelope != nil {
				h.Notes = append(h.Notes, "another "+NameEnvelope+" in "+label+" ignored")
				continue
			}
			env, err := Parse(from, bytes.NewReader(n.data), int64(len(n.data)))
			if err != nil {
				return err
			}
			h.Envelope, h.EnvelopeFrom = env, from
		case NameKeyStore:
			ks, err := ParseKeyStore(from, n.data)
			if err != nil {
				return err
			}
			h.KeyStore, h.KeyStoreFrom = ks, from
		case NamePlain:
			if h.plain == nil {
				if err := h.setPlain(from, bytes.NewReader(n.data), int64(len(n.data))); err != nil {
					return err
				}
			}
		case NameState:
			if state != nil {
				h.Notes = append(h.Notes, "another "+NameState+" in "+label+" ignored")
				continue
			}
			state = n.data
		}
	}
	if h.Kind == "" {
		switch {
		case state != nil:
			h.Kind = "config bundle"
		default:
			h.Kind = "state archive"
		}
	}
	if state != nil && h.Envelope == nil && h.plain == nil {
		return h.fromArchive(label+" > "+NameState, bytes.NewReader(state), int64(len(state)), depth+1)
	}
	if h.Envelope != nil && h.plain != nil {
		h.Notes = append(h.Notes, "both "+NameEnvelope+" and a plain "+NamePlain+": the envelope is used")
		h.plain, h.PlainFrom, h.PlainSize = nil, "", 0
	}
	return nil
}

func (h *HostConfig) setPlain(from string, r io.ReaderAt, size int64) error {
	h.plain, h.PlainFrom, h.PlainSize = r, from, size
	return nil
}

// Key returns the key that opens the envelope: derived from the key store
// (mode NONE). A sealed store is a *SealedError (exit 4); no key store is
// a *keysafe.KeyNotFoundError; a store whose key id differs from the
// envelope's is keysafe.ErrWrongKey.
func (h *HostConfig) Key() ([]byte, error) {
	if h.Envelope == nil {
		return nil, errors.New("esxi: the configuration is not encrypted")
	}
	if h.key != nil {
		return h.key, nil
	}
	if h.KeyStore == nil {
		return nil, &keysafe.KeyNotFoundError{Provider: "ESXi key store", KeyID: h.Envelope.KeyID,
			Hint: "the host's " + NameKeyStore + " was not found with " + h.EnvelopeFrom}
	}
	if h.KeyStore.KeyID != "" && !strings.EqualFold(h.KeyStore.KeyID, h.Envelope.KeyID) {
		return nil, fmt.Errorf("%s holds key id %s, but %s needs %s: %w", h.KeyStoreFrom, h.KeyStore.KeyID, h.EnvelopeFrom, h.Envelope.KeyID, keysafe.ErrWrongKey)
	}
	key, err := h.KeyStore.Key()
	if err != nil {
		return nil, err
	}
	if err := h.Envelope.CheckKey(key); err != nil {
		return nil, err
	}
	h.key = key
	return key, nil
}

// WriteLocalTgz writes the configuration archive (local.tgz) to w:
// decrypted from the envelope (tag checked at the end: publish w's bytes
// only on success), or a plain one copied as is. It returns the envelope
// result (nil for a plain configuration).
func (h *HostConfig) WriteLocalTgz(w io.Writer, progress func(done, total int64)) (*Result, error) {
	if h.Envelope == nil {
		_, err := io.Copy(w, io.NewSectionReader(h.plain, 0, h.PlainSize))
		return nil, err
	}
	key, err := h.Key()
	if err != nil {
		return nil, err
	}
	return h.Envelope.Decrypt(key, w, DecryptOptions{Progress: progress})
}

// Walk calls fn for every member of the configuration archive. An
// envelope's tag is verified first (no plaintext is parsed before), and
// again at the end of the decrypting pass: Walk returns nil only then,
// so fn's results may be trusted only when Walk returns nil.
func (h *HostConfig) Walk(fn func(*Entry, io.Reader) error) error {
	name := h.PlainFrom
	if h.Envelope == nil {
		zr, _, err := Decompress(name, io.NewSectionReader(h.plain, 0, h.PlainSize))
		if err != nil {
			return err
		}
		_, err = WalkTar(name, zr, fn)
		return err
	}
	name = h.EnvelopeFrom
	key, err := h.Key()
	if err != nil {
		return err
	}
	opt := DecryptOptions{}
	ctx, err := h.Envelope.Verify(key, opt)
	if err != nil {
		return err
	}
	opt.Contexts = []string{ctx}
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := h.Envelope.Decrypt(key, pw, opt)
		pw.CloseWithError(err)
		done <- err
	}()
	zr, _, err := Decompress(name+" (decrypted)", pr)
	if err == nil {
		_, err = WalkTar(name+" (decrypted)", zr, fn)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, pr)
	}
	pr.CloseWithError(errWalkStopped)
	derr := <-done
	if err != nil {
		if derr != nil && !errors.Is(derr, errWalkStopped) {
			return derr // the data changed between the passes: the tag says so
		}
		return err
	}
	return derr
}

var errWalkStopped = errors.New("esxi: walk stopped")

func parseBootCfg(b []byte) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), "=")
		if ok && k != "" && len(m) < 64 {
			m[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return m
}

// readSmallFile reads a file of at most max bytes (keysafe.ErrUnsupported
// beyond).
func readSmallFile(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, unsupportedf(p, -1, "size", "more than the %d bytes read", max)
	}
	return b, nil
}
