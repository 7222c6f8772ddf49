package outfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Create + Commit publishes the file; an existing name is refused unless
// replace; Abort leaves nothing.
func TestCreateCommitAbort(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "out.img")
	f, err := Create(final, 0o600, false)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("data")
	if err := f.Commit(false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(final); string(b) != "data" {
		t.Fatalf("got %q", b)
	}
	if _, err := Create(final, 0o600, false); !errors.Is(err, ErrExists) {
		t.Fatalf("existing output: %v", err)
	}
	g, err := Create(final, 0o600, true)
	if err != nil {
		t.Fatal(err)
	}
	g.WriteString("half")
	g.Abort()
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("left %v", ents)
	}
	if _, err := Create(filepath.Join(dir, "no", "x"), 0o600, false); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing folder: %v", err)
	}
}

// RemoveStale removes the temporaries of a dead run (file or staging
// folder, lock free) and leaves a live run's (lock held) and other files.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	deadFile := filepath.Join(dir, ".a.img"+Mark+"111")
	os.WriteFile(deadFile, []byte("decrypted"), 0o600)
	deadDir := filepath.Join(dir, ".recover"+Mark+"222")
	os.Mkdir(deadDir, 0o700)
	os.WriteFile(filepath.Join(deadDir, lockName), nil, 0o600)
	live, err := Create(filepath.Join(dir, "b.img"), 0o600, false)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Abort()
	liveDir, err := MkdirTemp(dir, "recover")
	if err != nil {
		t.Fatal(err)
	}
	defer liveDir.Remove()
	other := filepath.Join(dir, "keep.vmdk")
	os.WriteFile(other, nil, 0o600)
	removed := RemoveStale(dir)
	if len(removed) != 2 {
		t.Fatalf("removed %v, want the two dead temporaries", removed)
	}
	for _, p := range []string{deadFile, deadDir} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left", p)
		}
	}
	for _, p := range []string{live.Name(), liveDir.Path, other} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s removed: %v", p, err)
		}
	}
}
