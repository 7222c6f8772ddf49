package vmdk

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A split sparse disk whose descriptor gives its first extent a size other
// than its header's reads as qemu reads it: each sparse extent is as large
// as its header says (the descriptor would shift every later extent), and
// a warning says so.
func TestExtentSizeFromHeaderLikeQemu(t *testing.T) {
	dir := t.TempDir()
	const size = 4 << 20
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i/512 + i%251)
	}
	p := filepath.Join(dir, "split.vmdk")
	if err := Write(context.Background(), p, bytes.NewReader(data), size, []Run{{Off: 0, Len: size, State: Data}},
		&WriteOptions{Subformat: SubformatTwoGbMaxExtentSparse, SplitSize: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	desc, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, sectors := range []string{"2048", "6144"} {
		bad := strings.Replace(string(desc), "RW 4096 SPARSE", "RW "+sectors+" SPARSE", 1)
		if bad == string(desc) {
			t.Fatalf("no extent line of 4096 sectors in\n%s", desc)
		}
		if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		want := qemuRaw(t, p)
		d, err := Open(p, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(io.NewSectionReader(d, 0, d.Size()))
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || len(got) != size {
			t.Fatalf("descriptor %s sectors: %d bytes, qemu %d; equal %v", sectors, len(got), len(want), bytes.Equal(got, want))
		}
		if w := strings.Join(d.Warnings(), "\n"); !strings.Contains(w, "using the header's") {
			t.Fatalf("descriptor %s sectors: no warning in %q", sectors, w)
		}
	}
}
