package vmx

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// newDiskKey returns a fresh XTS disk key.
func newDiskKey() *keysafe.Key {
	k := &keysafe.Key{Cipher: keysafe.CipherXTSAES256, Bytes: make([]byte, 64)}
	rand.Read(k.Bytes)
	return k
}

// phraseKeys returns encryptionKeys text locking k under pass.
func phraseKeys(t testing.TB, k *keysafe.Key, pass string) string {
	t.Helper()
	p, err := keysafe.LockPhrase(k, []byte(pass), keysafe.CipherXTSAES256, 1000, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keysafe.NewList(p).String()
}

// writeDisk writes a 1 MiB disk; the data is not encrypted (a passphrase
// change never reads it), only its bytes must survive.
func writeDisk(t testing.TB, path, sub, keys string, parent *vmdk.ParentInfo) {
	t.Helper()
	src := bytes.Repeat([]byte("disk data "), 1<<20/10+1)[:1<<20]
	o := &vmdk.WriteOptions{Subformat: sub, EncryptionKeys: keys, Parent: parent, CID: 0x1234}
	if keys != "" {
		o.IOFilters = "vmwarevmcrypt"
	}
	if err := vmdk.Write(context.Background(), path, bytes.NewReader(src), int64(len(src)), nil, o); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t testing.TB, path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// diskSum hashes what a disk (whole chain) reads.
func diskSum(t testing.TB, path string) [32]byte {
	t.Helper()
	d, err := vmdk.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// apply writes a rewrap as the CLI does (here without the care).
func apply(t testing.TB, dl DiskLink) {
	t.Helper()
	if !dl.Embedded {
		if err := os.WriteFile(dl.Path, dl.New, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.OpenFile(dl.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(dl.New, dl.Offset); err != nil {
		t.Fatal(err)
	}
}

// A VM with every kind of disk: the links a passphrase change must rewrap
// are rewrapped (a chain's base and delta, embedded and separate
// descriptors), the others are listed and left alone; after writing, each
// rewrapped link opens with the new passphrase only, and every byte outside
// the encryptionKeys line is as it was.
func TestChangeDiskPassphrases(t *testing.T) {
	dir := t.TempDir()
	keys := map[string]*keysafe.Key{}
	mk := func(name, sub, lock string, parent *vmdk.ParentInfo) {
		k := newDiskKey()
		keys[name] = k
		var ek string
		switch lock {
		case "old", "other":
			ek = phraseKeys(t, k, lock)
		case "fqid":
			p, _ := keysafe.LockFQID(k, "KMS", "9", bytes.Repeat([]byte{1}, 32), rand.Reader)
			ek = keysafe.NewList(p).String()
		}
		writeDisk(t, filepath.Join(dir, name), sub, ek, parent)
	}
	mk("base.vmdk", vmdk.SubformatMonolithicSparse, "old", nil)
	mk("base-000001.vmdk", vmdk.SubformatMonolithicSparse, "old", &vmdk.ParentInfo{CID: 0x1234, FileNameHint: "base.vmdk"})
	mk("split.vmdk", vmdk.SubformatTwoGbMaxExtentSparse, "old", nil)
	mk("stream.vmdk", vmdk.SubformatStreamOptimized, "old", nil)
	mk("kms.vmdk", vmdk.SubformatStreamOptimized, "fqid", nil)
	mk("other.vmdk", vmdk.SubformatMonolithicFlat, "other", nil)
	mk("plain.vmdk", vmdk.SubformatMonolithicSparse, "", nil)
	// The split disk's descriptor, as a user's editor left it: CRLF and a
	// comment; every byte of it must survive.
	sp := filepath.Join(dir, "split.vmdk")
	b, _ := os.ReadFile(sp)
	os.WriteFile(sp, append([]byte("# edited by hand\r\n"), bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))...), 0o644)

	settings := mustParse(t, []byte(`nvme0:0.fileName = "base-000001.vmdk"
nvme0:0.present = "TRUE"
nvme0:1.fileName = "split.vmdk"
nvme0:1.present = "TRUE"
nvme0:2.fileName = "kms.vmdk"
nvme0:2.present = "TRUE"
nvme0:3.fileName = "other.vmdk"
nvme0:3.present = "TRUE"
sata0:0.fileName = "plain.vmdk"
sata0:0.present = "TRUE"
sata0:1.fileName = "gone.vmdk"
sata0:1.present = "TRUE"
scsi0:0.fileName = "stream.vmdk"
scsi0:0.present = "TRUE"
scsi0:1.fileName = "base.vmdk"
scsi0:1.present = "TRUE"
`))
	names := []string{"base.vmdk", "base-000001.vmdk", "split.vmdk", "split-s001.vmdk", "stream.vmdk", "kms.vmdk", "other.vmdk", "other-flat.vmdk", "plain.vmdk"}
	sums := map[string][32]byte{}
	for _, n := range names {
		sums[n] = fileSum(t, filepath.Join(dir, n))
	}
	reads := map[string][32]byte{}
	for _, n := range []string{"base-000001.vmdk", "split.vmdk", "stream.vmdk", "base.vmdk"} {
		reads[n] = diskSum(t, filepath.Join(dir, n))
	}

	links, err := ChangeDiskPassphrases(dir, settings, []byte("old"), []byte("new"), keysafe.RelockOptions{}, nil, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if fileSum(t, filepath.Join(dir, n)) != sums[n] {
			t.Fatalf("%s changed before anything was written", n)
		}
	}
	want := map[string]struct {
		dev, status string
		emb         bool
	}{
		"base-000001.vmdk": {"nvme0:0", DiskRewrapped, true},
		"base.vmdk":        {"nvme0:0", DiskRewrapped, true}, // listed once, with the first disk naming it
		"split.vmdk":       {"nvme0:1", DiskRewrapped, false},
		"kms.vmdk":         {"nvme0:2", DiskKeyProvider, false},
		"other.vmdk":       {"nvme0:3", DiskOtherPassphrase, false},
		"plain.vmdk":       {"sata0:0", DiskPlain, false},
		"gone.vmdk":        {"sata0:1", DiskMissing, false},
		"stream.vmdk":      {"scsi0:0", DiskRewrapped, true},
	}
	if len(links) != len(want) {
		t.Fatalf("%d links: %+v", len(links), links)
	}
	for _, l := range links {
		w, ok := want[filepath.Base(l.Path)]
		if !ok || l.Device != w.dev || l.Status != w.status || l.Embedded != w.emb {
			t.Fatalf("%s: %s %s embedded %v, want %+v", l.Path, l.Device, l.Status, l.Embedded, w)
		}
		if l.Status != DiskRewrapped {
			if l.New != nil {
				t.Fatalf("%s: new text for a link left alone", l.Path)
			}
			continue
		}
		if l.Relocked != 1 || l.Kept != 0 || len(l.New) != len(l.Old) && l.Embedded {
			t.Fatalf("%s: %+v", l.Path, l)
		}
		before, _ := os.ReadFile(l.Path)
		apply(t, l)
		after, _ := os.ReadFile(l.Path)
		if l.Embedded {
			end := l.Offset + int64(len(l.New))
			if len(after) != len(before) || !bytes.Equal(after[:l.Offset], before[:l.Offset]) || !bytes.Equal(after[end:], before[end:]) {
				t.Fatalf("%s: bytes outside the descriptor area changed", l.Path)
			}
		}
		// Line by line: only encryptionKeys differs.
		ob := strings.SplitAfter(string(bytes.TrimRight(l.Old, "\x00")), "\n")
		nb := strings.SplitAfter(string(bytes.TrimRight(l.New, "\x00")), "\n")
		if len(ob) != len(nb) {
			t.Fatalf("%s: %d lines -> %d", l.Path, len(ob), len(nb))
		}
		for i := range ob {
			if ob[i] != nb[i] && !(strings.HasPrefix(ob[i], "encryptionKeys=\"") && strings.HasSuffix(nb[i], ob[i][len(strings.TrimRight(ob[i], "\r\n")):])) {
				t.Fatalf("%s: line %d changed: %q -> %q", l.Path, i+1, ob[i], nb[i])
			}
		}
		desc, err := vmdk.ReadDescriptor(l.Path)
		if err != nil {
			t.Fatal(err)
		}
		loc, err := keysafe.Parse(desc.EncryptionKeys)
		if err != nil {
			t.Fatal(err)
		}
		k, err := keysafe.UnlockPhrase(loc.Pairs()[0], []byte("new"))
		if err != nil || !bytes.Equal(k.Bytes, keys[filepath.Base(l.Path)].Bytes) {
			t.Fatalf("%s: new passphrase: %v", l.Path, err)
		}
		if _, err := keysafe.UnlockPhrase(loc.Pairs()[0], []byte("old")); !errors.Is(err, keysafe.ErrWrongKey) {
			t.Fatalf("%s: old passphrase still opens: %v", l.Path, err)
		}
	}
	for n, s := range reads {
		if diskSum(t, filepath.Join(dir, n)) != s {
			t.Fatalf("%s reads differently after the rewrap", n)
		}
	}
	for _, n := range []string{"split-s001.vmdk", "kms.vmdk", "other.vmdk", "other-flat.vmdk", "plain.vmdk"} {
		if fileSum(t, filepath.Join(dir, n)) != sums[n] {
			t.Fatalf("%s changed", n)
		}
	}
	// A second change, old -> new again: nothing opens with "old" now.
	links, err = ChangeDiskPassphrases(dir, settings, []byte("old"), []byte("x"), keysafe.RelockOptions{}, nil, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Status == DiskRewrapped {
			t.Fatalf("%s rewrapped with a passphrase that no longer opens it", l.Path)
		}
	}
}

// A descriptor embedded in a sparse file whose area cannot hold the new
// text is refused (nothing is returned to write); a broken disk is an
// error, not a disk skipped.
func TestChangeDiskPassphrasesRefusals(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.vmdk")
	// The unescaped rendering the vSphere API prints opens like the
	// canonical text; written back canonically it is longer. Made with zero salt
	// and id (no '/' in the fields), it fills the area to the last byte.
	k := newDiskKey()
	pair, err := keysafe.LockPhrase(k, []byte("old"), keysafe.CipherXTSAES256, 1000, zeroReader{})
	if err != nil {
		t.Fatal(err)
	}
	canon := keysafe.NewList(pair).String()
	short, _ := keysafe.Unescape(canon)
	if l, err := keysafe.Parse(short); err != nil || len(short) >= len(canon) {
		t.Fatalf("unescaped rendering does not parse: %v", err)
	} else if _, err := keysafe.UnlockPhrase(l.Pairs()[0], []byte("old")); err != nil {
		t.Fatalf("unescaped rendering does not open: %v", err)
	}
	writeDisk(t, p, vmdk.SubformatMonolithicSparse, short, nil)
	b, _ := os.ReadFile(p)
	off, n, _, err := vmdk.DescriptorArea(bytes.NewReader(b), int64(len(b)), p)
	if err != nil {
		t.Fatal(err)
	}
	text := bytes.TrimRight(b[off:off+n], "\x00")
	pad := int(n) - len(text) - 1 - len("#\n")
	full := append(append(append([]byte(nil), text...), '#'), append(bytes.Repeat([]byte("x"), pad), '\n')...)
	copy(b[off:], full)
	os.WriteFile(p, b, 0o644)
	settings := mustParse(t, []byte("scsi0:0.fileName = \"d.vmdk\"\nscsi0:0.present = \"TRUE\"\n"))
	sum := fileSum(t, p)
	links, err := ChangeDiskPassphrases(dir, settings, []byte("old"), []byte("new"), keysafe.RelockOptions{}, nil, rand.Reader)
	if !errors.Is(err, ErrDescriptorFull) || !errors.Is(err, keysafe.ErrUnsupported) || links != nil {
		t.Fatalf("full area: %v, want ErrDescriptorFull", err)
	}
	if fileSum(t, p) != sum {
		t.Fatal("disk changed")
	}
	// A truncated disk does not open: an error, not a skipped disk.
	os.Truncate(p, 1024)
	if _, err := ChangeDiskPassphrases(dir, settings, []byte("old"), []byte("new"), keysafe.RelockOptions{}, nil, rand.Reader); !errors.Is(err, vmdk.ErrCorrupt) {
		t.Fatalf("truncated disk: %v", err)
	}
}

func TestRewrapDescriptor(t *testing.T) {
	in := "# Disk DescriptorFile\r\nversion=1\r\nencryptionKeys  =  \"old\"  \r\nCID=fffffffe\r\nparentCID=ffffffff\r\ncreateType=\"monolithicSparse\"\r\n\r\nRW 2048 SPARSE \"d.vmdk\"\r\n\r\nddb.iofilters = \"vmwarevmcrypt\"\r\n"
	out, err := RewrapDescriptor([]byte(in), "d.vmdk", "vmware:key/list/()")
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(in, `encryptionKeys  =  "old"  `, `encryptionKeys  =  "vmware:key/list/()"  `, 1)
	if string(out) != want {
		t.Fatalf("got %q", out)
	}
	for _, c := range []struct{ name, text, keys string }{
		{"no encryptionKeys", "createType=\"monolithicSparse\"\n", "k"},
		{"twice", "encryptionKeys=\"a\"\nencryptionKeys=\"b\"\ncreateType=\"x\"\n", "k"},
		{"no createType", "encryptionKeys=\"a\"\n", "k"},
	} {
		if _, err := RewrapDescriptor([]byte(c.text), "d", c.keys); !errors.Is(err, vmdk.ErrCorrupt) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	if _, err := RewrapDescriptor([]byte(in), "d", "a\"b"); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Errorf("quote in the keys: %v", err)
	}
}
