package vmdk

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// A sparse file whose grains would pass 2 TiB (2^32 sectors, the reach of
// a 32-bit grain-table entry) is refused before the grain is written,
// never stored under an entry that wrapped around.
func TestSparseWriterRefusesPast2TiB(t *testing.T) {
	w := &diskWriter{dir: t.TempDir(), o: &WriteOptions{}}
	of, err := w.create("big.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	defer of.f.Close()
	s := newSparseOut(of, 0, 4<<40, 64<<10, nil) // a 4 TiB disk
	g := make([]byte, 64<<10)
	if err := s.put(&grainJob{kind: jobGrain, off: 0, n: 64 << 10, state: Data, buf: g}); err != nil {
		t.Fatal(err)
	}
	// The state after 2 TiB of grains (not written here: the file stays sparse).
	s.next = (maxGTESector + 1) * SectorSize
	err = s.put(&grainJob{kind: jobGrain, off: 3 << 40, n: 64 << 10, state: Data, buf: g})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "2 TiB") {
		t.Fatalf("grain past 2 TiB: %v", err)
	}
	// The last sector an entry can name is still accepted.
	s.next = maxGTESector * SectorSize
	if err := s.put(&grainJob{kind: jobGrain, off: 3 << 40, n: 64 << 10, state: Data, buf: g}); err != nil {
		t.Fatalf("grain at sector 2^32-1: %v", err)
	}
	if got := s.gt[((3<<40)/(64<<10))%wGTEs]; got != maxGTESector {
		t.Fatalf("entry %d, want %d", got, uint32(maxGTESector))
	}
}

// OutputFiles names exactly the files Write creates, for every subformat.
func TestOutputFilesMatchWrite(t *testing.T) {
	const size = 5<<20 + 512
	for _, c := range []struct {
		sf    string
		split int64
	}{
		{SubformatMonolithicSparse, 0}, {SubformatMonolithicFlat, 0}, {SubformatStreamOptimized, 0},
		{SubformatTwoGbMaxExtentSparse, 0}, {SubformatTwoGbMaxExtentSparse, 1 << 20},
	} {
		dir := t.TempDir()
		p := filepath.Join(dir, "out.vmdk")
		o := &WriteOptions{Subformat: c.sf, SplitSize: c.split}
		want := OutputFiles(p, size, o)
		if err := Write(context.Background(), p, bytes.NewReader(make([]byte, size)), size, []Run{{Off: 0, Len: size, State: Zero}}, o); err != nil {
			t.Fatal(err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range ents {
			got = append(got, e.Name())
		}
		sort.Strings(got)
		sorted := append([]string(nil), want...)
		sort.Strings(sorted)
		if strings.Join(got, " ") != strings.Join(sorted, " ") || want[0] != "out.vmdk" {
			t.Fatalf("%s split %d: Write made %v, OutputFiles says %v", c.sf, c.split, got, want)
		}
	}
}
