package vmdk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// writeSmall writes a 1 MiB disk of one subformat and returns its path.
func writeSmall(t testing.TB, subformat string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "d.vmdk")
	src := bytes.Repeat([]byte{7}, 1<<20)
	if err := Write(context.Background(), p, bytes.NewReader(src), int64(len(src)), nil, &WriteOptions{Subformat: subformat, EncryptionKeys: "vmware:key/list/()"}); err != nil {
		t.Fatal(err)
	}
	return p
}

// DescriptorArea finds the area ReadDescriptor reads in monolithicSparse
// and streamOptimized files, says "not embedded" for a descriptor file and
// refuses a split disk's extent (no descriptor inside).
func TestDescriptorArea(t *testing.T) {
	for _, sub := range []string{SubformatMonolithicSparse, SubformatStreamOptimized} {
		p := writeSmall(t, sub)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		off, n, emb, err := DescriptorArea(bytes.NewReader(b), int64(len(b)), p)
		if err != nil || !emb || off < 512 || n < 512 || n%512 != 0 {
			t.Fatalf("%s: area %d+%d embedded %v: %v", sub, off, n, emb, err)
		}
		want, err := ReadDescriptor(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseDescriptor(b[off:off+n], p)
		if err != nil || got.String() != want.String() || got.EncryptionKeys != "vmware:key/list/()" {
			t.Fatalf("%s: area does not hold the descriptor: %v", sub, err)
		}
	}
	split := writeSmall(t, SubformatTwoGbMaxExtentSparse)
	b, _ := os.ReadFile(split)
	if _, _, emb, err := DescriptorArea(bytes.NewReader(b), int64(len(b)), split); emb || err != nil {
		t.Fatalf("descriptor file: embedded %v, %v", emb, err)
	}
	ext := filepath.Join(filepath.Dir(split), "d-s001.vmdk")
	b, _ = os.ReadFile(ext)
	if _, _, _, err := DescriptorArea(bytes.NewReader(b), int64(len(b)), ext); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("extent of a split disk: %v, want ErrUnsupported", err)
	}
}

// One header field at a time: an area past the end, too large or over a
// grain directory is corrupt.
func TestDescriptorAreaRefusals(t *testing.T) {
	p := writeSmall(t, SubformatMonolithicSparse)
	orig, _ := os.ReadFile(p)
	le := binary.LittleEndian
	for _, c := range []struct {
		name string
		set  func(b []byte)
	}{
		{"past the end", func(b []byte) { le.PutUint64(b[28:], uint64(len(b)/512)) }},
		{"too large", func(b []byte) { le.PutUint64(b[36:], MaxDescriptorSize/512+1) }},
		{"offset beyond any file", func(b []byte) { le.PutUint64(b[28:], 0x8000000000000000) }},
		{"over the grain directory", func(b []byte) { le.PutUint64(b[56:], le.Uint64(b[28:])+1) }},
		{"over the redundant grain directory", func(b []byte) { le.PutUint64(b[48:], le.Uint64(b[28:])) }},
	} {
		b := append([]byte(nil), orig...)
		c.set(b)
		if _, _, _, err := DescriptorArea(bytes.NewReader(b), int64(len(b)), p); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", c.name, err)
		}
	}
}

// FuzzDescriptorArea: any header never panics, and an area it returns lies
// inside the file, after the header, within MaxDescriptorSize.
func FuzzDescriptorArea(f *testing.F) {
	h := make([]byte, 1024)
	copy(h, "KDMV")
	le := binary.LittleEndian
	le.PutUint32(h[4:], 1)
	le.PutUint64(h[20:], 128)
	le.PutUint64(h[28:], 1)
	le.PutUint64(h[36:], 1)
	le.PutUint32(h[44:], 512)
	f.Add(h)
	f.Add([]byte("# Disk DescriptorFile\n"))
	f.Add(h[:100])
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1<<16 {
			return
		}
		off, n, emb, err := DescriptorArea(bytes.NewReader(b), int64(len(b)), "fuzz")
		if err != nil || !emb {
			if off != 0 || n != 0 {
				t.Fatal("area returned with an error or for a text file")
			}
			return
		}
		if off < 512 || n <= 0 || n > MaxDescriptorSize || off+n > int64(len(b)) {
			t.Fatalf("area %d+%d outside a %d-byte file", off, n, len(b))
		}
	})
}
