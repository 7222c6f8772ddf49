package vm

import (
	"context"
	"fmt"

	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/xts"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// LinkKey says how one link of a disk chain was opened.
type LinkKey struct {
	File      string `json:"file"`                 // the link's descriptor or monolithic file
	Level     int    `json:"level"`                // 0 = top
	Encrypted bool   `json:"encrypted"`            // the link carries encryptionKeys
	Locker    string `json:"locker,omitempty"`     // e.g. "phrase", "fqid provider/keyId"
	Source    string `json:"source,omitempty"`     // key source that opened it
	Cipher    string `json:"cipher,omitempty"`     // XTS-AES-256
	Modelled  bool   `json:"modelled,omitempty"`   // data decrypted through the MODEL of docs/formats.md §8
	SubFormat string `json:"createType,omitempty"` // the link's createType
}

// OpenedDisk is a disk chain with the key of every encrypted link opened.
type OpenedDisk struct {
	VMDK  *vmdk.Disk // the chain as stored
	Plain *PlainDisk // the decrypted chain (the whole chain applied)
	Links []LinkKey  // top first

	ciphers []SectorCipher
	runs    [][]vmdk.Run // each link's own allocation map
}

// Close closes the chain's files.
func (o *OpenedDisk) Close() error { return o.VMDK.Close() }

// OpenDisk opens the VMDK chain at path read-only and, for every link that
// carries encryptionKeys, parses the locator and opens it with r. A link
// that is marked encrypted (ddb.iofilters) without encryptionKeys is
// corrupt. r may be nil for a chain with no encrypted link. Nothing is
// decrypted yet.
func OpenDisk(ctx context.Context, path string, r *keys.Resolver, opts *vmdk.OpenOptions) (*OpenedDisk, error) {
	d, err := vmdk.Open(path, opts)
	if err != nil {
		return nil, err
	}
	od, err := openChain(ctx, d, r)
	if err != nil {
		d.Close()
		return nil, err
	}
	return od, nil
}

func openChain(ctx context.Context, d *vmdk.Disk, r *keys.Resolver) (*OpenedDisk, error) {
	links := d.Links()
	od := &OpenedDisk{VMDK: d, ciphers: make([]SectorCipher, len(links)), runs: make([][]vmdk.Run, len(links))}
	for i, l := range links {
		lk := LinkKey{File: l.Path, Level: i, SubFormat: l.Descriptor.CreateType}
		if l.EncryptionKeys == "" {
			if l.Descriptor.Encrypted() {
				return nil, fmt.Errorf("%s: marked encrypted (ddb.iofilters) but has no encryptionKeys: %w", l.Path, keysafe.ErrCorrupt)
			}
		} else {
			loc, err := keysafe.Parse(l.EncryptionKeys)
			if err != nil {
				return nil, fmt.Errorf("%s: encryptionKeys: %w", l.Path, err)
			}
			if r == nil {
				r = keys.NewResolver()
			}
			k, opened, err := r.Open(ctx, loc)
			if err != nil {
				return nil, fmt.Errorf("%s: disk key: %w", l.Path, err)
			}
			if k.Cipher != keysafe.CipherXTSAES256 {
				return nil, fmt.Errorf("%s: disk key cipher %s, encrypted disks use %s: %w", l.Path, k.Cipher, keysafe.CipherXTSAES256, keysafe.ErrUnsupported)
			}
			c, err := xts.New(k.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", l.Path, err)
			}
			od.ciphers[i] = c
			lk.Encrypted, lk.Locker, lk.Source, lk.Cipher, lk.Modelled = true, opened.Locker, opened.Source, k.Cipher, true
		}
		own, err := l.Allocated()
		if err != nil {
			return nil, err
		}
		od.runs[i] = own
		od.Links = append(od.Links, lk)
	}
	runs, err := d.Allocated()
	if err != nil {
		return nil, err
	}
	plain, err := NewPlainDisk(&chainAdapter{d: d, runs: runs}, od.ciphers, links[0].Path)
	if err != nil {
		return nil, err
	}
	od.Plain = plain
	return od, nil
}

// Encrypted reports whether any link is encrypted.
func (o *OpenedDisk) Encrypted() bool {
	for _, c := range o.ciphers {
		if c != nil {
			return true
		}
	}
	return false
}

// LinkView returns the decrypted disk as link level shows it (the chain
// from that link down) and that link's own allocation map, expanded to
// whole grains of grain bytes (0: not expanded), for writing the link as a
// delta of its own.
func (o *OpenedDisk) LinkView(level int, grain int64) (*PlainDisk, []vmdk.Run, error) {
	links := o.VMDK.Links()
	sub := &subChain{d: o.VMDK, from: level, size: links[level].Size()}
	sub.runs = mergeLevels(o.runs[level:], level, sub.size)
	v, err := NewPlainDisk(sub, o.ciphers[level:], links[level].Path)
	if err != nil {
		return nil, nil, err
	}
	own := o.runs[level]
	if grain > 0 {
		own = expandRuns(own, grain, sub.size)
	}
	return v, own, nil
}

// chainAdapter is the Chain of a whole *vmdk.Disk.
type chainAdapter struct {
	d    *vmdk.Disk
	runs []vmdk.Run
}

func (c *chainAdapter) Size() int64      { return c.d.Size() }
func (c *chainAdapter) Runs() []vmdk.Run { return c.runs }
func (c *chainAdapter) Levels() int      { return len(c.d.Links()) }
func (c *chainAdapter) ReadLevel(level int, p []byte, off int64) error {
	return vmdk.ReadFull(c.d.Links()[level], p, off)
}

// subChain is the chain from link `from` down; its levels count from 0.
type subChain struct {
	d    *vmdk.Disk
	from int
	size int64
	runs []vmdk.Run
}

func (c *subChain) Size() int64      { return c.size }
func (c *subChain) Runs() []vmdk.Run { return c.runs }
func (c *subChain) Levels() int      { return len(c.d.Links()) - c.from }
func (c *subChain) ReadLevel(level int, p []byte, off int64) error {
	return vmdk.ReadFull(c.d.Links()[c.from+level], p, off)
}

// mergeLevels merges per-link allocation maps (top first, absolute levels
// starting at base) into the map of the chain: a link's Data or Zero hides
// what its parents hold. Levels in the result count from 0 = levels[0].
// Runs are clipped to size.
func mergeLevels(levels [][]vmdk.Run, base int, size int64) []vmdk.Run {
	var cur []vmdk.Run
	for li, runs := range levels {
		var out []vmdk.Run
		i := 0
		// gaps of cur are filled with runs of this level.
		var pos int64
		emit := func(gapStart, gapEnd int64) {
			for ; i < len(runs) && runs[i].Off+runs[i].Len <= gapStart; i++ {
			}
			for j := i; j < len(runs) && runs[j].Off < gapEnd; j++ {
				s := max(runs[j].Off, gapStart)
				e := min(runs[j].Off+runs[j].Len, gapEnd, size)
				if e > s {
					out = append(out, vmdk.Run{Off: s, Len: e - s, State: runs[j].State, Level: li})
				}
			}
		}
		for _, r := range cur {
			if r.Off > pos {
				emit(pos, r.Off)
			}
			out = append(out, r)
			pos = r.Off + r.Len
		}
		emit(pos, size)
		// keep sorted (emits and cur are interleaved in order)
		cur = out
	}
	_ = base
	// merge adjacent runs of the same state and level
	var m []vmdk.Run
	for _, r := range cur {
		if n := len(m); n > 0 && m[n-1].Off+m[n-1].Len == r.Off && m[n-1].State == r.State && m[n-1].Level == r.Level {
			m[n-1].Len += r.Len
			continue
		}
		m = append(m, r)
	}
	return m
}

// expandRuns widens a link's own runs to whole grains: a grain touched by
// any Data becomes one Data grain (read through the chain view, so bytes
// the link does not hold come from its parents, as a copy-on-write delta
// stores them); whole Zero grains stay Zero; partial Zero grains become
// Data (they read as zeros through the view).
func expandRuns(runs []vmdk.Run, grain, size int64) []vmdk.Run {
	var out []vmdk.Run
	var add func(s, e int64, st vmdk.State)
	add = func(s, e int64, st vmdk.State) {
		if e <= s {
			return
		}
		if n := len(out); n > 0 {
			last := &out[n-1]
			lend := last.Off + last.Len
			switch {
			case lend > s && last.State == st:
				last.Len = max(lend, e) - last.Off
				return
			case lend > s && st == vmdk.Data: // the shared grain becomes Data
				last.Len = s - last.Off
				if last.Len <= 0 {
					out = out[:n-1]
				}
				add(s, e, st)
				return
			case lend > s: // last is Data, keeps the shared grain
				add(lend, e, st)
				return
			case lend == s && last.State == st:
				last.Len = e - last.Off
				return
			}
		}
		out = append(out, vmdk.Run{Off: s, Len: e - s, State: st})
	}
	for _, r := range runs {
		s := r.Off / grain * grain
		e := min((r.Off+r.Len+grain-1)/grain*grain, size)
		if r.State != vmdk.Zero {
			add(s, e, vmdk.Data)
			continue
		}
		// Whole zero grains stay Zero; partly covered edge grains become
		// Data (read through the view, so zeros where the link has them).
		is := min((r.Off+grain-1)/grain*grain, e)
		ie := (r.Off + r.Len) / grain * grain
		if r.Off+r.Len == size {
			ie = size
		}
		if ie <= is {
			add(s, e, vmdk.Data)
			continue
		}
		add(s, is, vmdk.Data)
		add(is, ie, vmdk.Zero)
		add(ie, e, vmdk.Data)
	}
	return out
}

// StoredBytes is the number of Data bytes the links store, each link
// counted (what a copy that keeps the chain writes).
func (o *OpenedDisk) StoredBytes() int64 {
	var n int64
	for _, runs := range o.runs {
		for _, r := range runs {
			if r.State == vmdk.Data {
				n += r.Len
			}
		}
	}
	return n
}
