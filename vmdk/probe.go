package vmdk

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// ProbeKind says what a file holds, from its first bytes.
type ProbeKind string

// Kinds Probe tells apart.
const (
	// ProbeDescriptor is a text descriptor file (its extents are other
	// files).
	ProbeDescriptor ProbeKind = "descriptor"
	// ProbeMonolithic is a hosted sparse file with an embedded descriptor:
	// a disk of its own (monolithicSparse, streamOptimized).
	ProbeMonolithic ProbeKind = "monolithic"
	// ProbeSparseExtent is a hosted sparse file without a descriptor: an
	// extent of a split disk (NAME-s001.vmdk).
	ProbeSparseExtent ProbeKind = "sparse extent"
	// ProbeCOWD is an ESXi VMFSSPARSE delta extent (NAME-delta.vmdk).
	ProbeCOWD ProbeKind = "COWD delta extent"
	// ProbeSESparse is an ESXi SEsparse delta extent (NAME-sesparse.vmdk).
	ProbeSESparse ProbeKind = "SEsparse delta extent"
	// ProbeData is anything else: a flat extent, a raw image, or not a
	// VMDK at all.
	ProbeData ProbeKind = "data"
)

// Probed is what Probe found.
type Probed struct {
	Kind ProbeKind
	// Descriptor is the parsed descriptor (text or embedded), nil for
	// extents and data.
	Descriptor *Descriptor
	// Sparse holds the sparse header fields of KDMV files.
	Sparse *SparseHeaderInfo
}

// SparseHeaderInfo is the public part of a hosted sparse header.
type SparseHeaderInfo struct {
	Version          uint32 `json:"version"`
	Flags            uint32 `json:"flags"`
	CapacitySectors  uint64 `json:"capacitySectors"`
	GrainSectors     uint64 `json:"grainSectors"`
	DescriptorOffset uint64 `json:"descriptorOffset"`
	DescriptorSize   uint64 `json:"descriptorSectors"`
	GDOffset         uint64 `json:"gdOffset"`
	Compressed       bool   `json:"compressed"`
}

// Disk reports whether the file is a disk of its own (a chain link):
// a descriptor or a monolithic file.
func (p *Probed) Disk() bool { return p.Kind == ProbeDescriptor || p.Kind == ProbeMonolithic }

// Encrypted reports whether the descriptor names encryption keys.
func (p *Probed) Encrypted() bool { return p.Descriptor != nil && p.Descriptor.EncryptionKeys != "" }

// Probe says what the file r (size bytes, name for errors) is, reading at
// most its first 512 bytes and the descriptor (MaxDescriptorSize). It is
// the one place that tells VMDK kinds apart by content; Open and every
// command that lists files (inspect, scan, vmdk info) use it. Text that is
// not a valid descriptor, or a sparse header with impossible fields, is an
// error wrapping ErrCorrupt or ErrUnsupported; bytes that look like no
// VMDK are ProbeData with no error.
func Probe(r io.ReaderAt, size int64, name string) (*Probed, error) {
	var hb [sparseHeaderLen]byte
	n, err := r.ReadAt(hb[:min(int64(len(hb)), max(size, 0))], 0)
	if err != nil && err != io.EOF && n < int(min(int64(len(hb)), max(size, 0))) {
		return nil, fmt.Errorf("vmdk: read %s: %w", name, err)
	}
	head := hb[:n]
	switch {
	case n >= 4 && binary.LittleEndian.Uint32(head) == sparseMagic:
		h, err := parseSparseHeader(head, name, 0)
		if err != nil {
			return nil, err
		}
		info := &SparseHeaderInfo{Version: h.Version, Flags: h.Flags, CapacitySectors: h.Capacity, GrainSectors: h.GrainSize,
			DescriptorOffset: h.DescriptorOffset, DescriptorSize: h.DescriptorSize, GDOffset: h.GDOffset, Compressed: h.CompressAlgo == compressDeflate}
		if h.DescriptorOffset == 0 || h.DescriptorSize == 0 {
			return &Probed{Kind: ProbeSparseExtent, Sparse: info}, nil
		}
		if h.DescriptorSize > MaxDescriptorSize/SectorSize || int64(h.DescriptorOffset) > size/SectorSize ||
			int64(h.DescriptorOffset+h.DescriptorSize)*SectorSize > size {
			return nil, corruptf(name, 28, "sparse header descriptorOffset", "descriptor of %d sectors at sector %d does not fit the %d-byte file", h.DescriptorSize, h.DescriptorOffset, size)
		}
		buf := make([]byte, h.DescriptorSize*SectorSize)
		if err := ReadFull(r, buf, int64(h.DescriptorOffset)*SectorSize); err != nil {
			return nil, corruptf(name, int64(h.DescriptorOffset)*SectorSize, "embedded descriptor", "cannot read: %v", err)
		}
		d, err := ParseDescriptor(buf, name)
		if err != nil {
			return nil, err
		}
		return &Probed{Kind: ProbeMonolithic, Descriptor: d, Sparse: info}, nil
	case n >= 4 && string(head[:4]) == "COWD":
		return &Probed{Kind: ProbeCOWD}, nil
	case n >= 8 && binary.LittleEndian.Uint64(head) == seSparseConstMagic:
		return &Probed{Kind: ProbeSESparse}, nil
	}
	if size <= 0 || size > MaxDescriptorSize || !looksLikeText(head) {
		return &Probed{Kind: ProbeData}, nil
	}
	buf := make([]byte, size)
	if err := ReadFull(r, buf, 0); err != nil {
		return nil, fmt.Errorf("vmdk: read %s: %w", name, err)
	}
	if !looksLikeText(buf) || !looksLikeDescriptor(buf) {
		return &Probed{Kind: ProbeData}, nil
	}
	d, err := ParseDescriptor(buf, name)
	if err != nil {
		return nil, err
	}
	return &Probed{Kind: ProbeDescriptor, Descriptor: d}, nil
}

// looksLikeDescriptor reports whether text holds a line a descriptor has
// (createType, an extent line, or the header comment), so that a stray
// text file is data, not a corrupt descriptor.
func looksLikeDescriptor(b []byte) bool {
	for _, m := range []string{"# Disk DescriptorFile", "createType", "CID=", "RW ", "RDONLY ", "NOACCESS "} {
		if bytes.Contains(b, []byte(m)) {
			return true
		}
	}
	return false
}
