package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	cases := []struct{ file, want string }{
		{"pass\n", "pass"},
		{"pass\r\n", "pass"},
		{"pass\n\n", "pass\n"}, // one newline only
		{"\xef\xbb\xbfpässwörd\r\n", "pässwörd"},
		{"", ""},
		{"\n", ""},
		{" spaced ", " spaced "},
	}
	for i, c := range cases {
		p := filepath.Join(dir, "s"+string(rune('a'+i)))
		if err := os.WriteFile(p, []byte(c.file), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := readSecretFile(p)
		if err != nil || string(got) != c.want {
			t.Errorf("%q: got %q, %v; want %q", c.file, got, err, c.want)
		}
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, bytes.Repeat([]byte("x"), maxSecretFile+1), 0o600)
	if _, err := readSecretFile(big); exitCode(err) != exitUsage {
		t.Errorf("oversized file: %v (exit %d)", err, exitCode(err))
	}
}

// A secret read from a pipe (`--passphrase-file <(...)`) is read to its
// end, not cut at the first write.
func TestReadSecretFilePipe(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	mkfifo(t, fifo)
	go func() {
		f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		defer f.Close()
		f.Write([]byte("pass"))
		time.Sleep(50 * time.Millisecond)
		f.Write([]byte("word\n"))
	}()
	got, err := readSecretFile(fifo)
	if err != nil || string(got) != "password" {
		t.Fatalf("got %q, %v; want \"password\"", got, err)
	}
}
