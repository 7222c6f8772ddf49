package esxi

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// The members of testdata/test.vgz and their contents (SOURCES.md).
var realVMTarMembers = map[string]string{
	"test/":             "",
	"test/file1":        strings.Repeat("a", 512) + "\n",
	"test/file2":        strings.Repeat("b", 1024) + "\n",
	"test/file3":        strings.Repeat("c", 2048) + "\n",
	"test/subdir/":      "",
	"test/subdir/file4": strings.Repeat("f", 2048) + "\n",
}

func walkAll(t *testing.T, name string, r io.Reader) (string, map[string]string, []*Entry, error) {
	t.Helper()
	got := map[string]string{}
	var ents []*Entry
	format, err := WalkTar(name, r, func(e *Entry, d io.Reader) error {
		b, err := io.ReadAll(d)
		if err != nil {
			return err
		}
		got[e.Name] = string(b)
		ents = append(ents, e)
		return nil
	})
	return format, got, ents, err
}

// TestRealVMTar: the real visor tar lists and reads its six members with
// the listed contents, plain and gzip-compressed, and extracts them.
func TestRealVMTar(t *testing.T) {
	raw := readTestdata(t, realVMTar)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw)
	zw.Close()
	for _, c := range []struct {
		name string
		in   []byte
		comp Compression
	}{{"plain", raw, CompressionNone}, {"gzip", gz.Bytes(), CompressionGzip}} {
		r, comp, err := Decompress(c.name, bytes.NewReader(c.in))
		if err != nil || comp != c.comp {
			t.Fatalf("%s: %v %v", c.name, comp, err)
		}
		format, got, ents, err := walkAll(t, c.name, r)
		if err != nil || format != "visor tar" {
			t.Fatalf("%s: %s %v", c.name, format, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(realVMTarMembers) {
			t.Fatalf("%s: members %v", c.name, got)
		}
		for _, e := range ents {
			if !e.Visor || (e.Type == TypeFile) != (e.DataOffset >= 4096) || e.Gname != "games" {
				t.Fatalf("%s: entry %+v", c.name, e)
			}
		}
	}
	out := filepath.Join(t.TempDir(), "out")
	x, format, err := Extract("test.vgz", bytes.NewReader(raw), out, DefaultLimits)
	if err != nil || format != "visor tar" || x.Members != 6 || x.Written != 513+1025+2049+2049 {
		t.Fatalf("extract: %v %+v", err, x)
	}
	for n, want := range realVMTarMembers {
		p := filepath.Join(out, filepath.FromSlash(n))
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.IsDir() {
			continue
		}
		b, _ := os.ReadFile(p)
		if string(b) != want || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %d bytes, mode %v", n, len(b), st.Mode())
		}
	}
	if names := dirList(t, out); fmt.Sprint(names) != "[test]" {
		t.Fatalf("outdir holds %v", names)
	}
}

func dirList(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	return n
}

// TestCompressionRefused: xz, bzip2 and zstd are refused as unsupported
// (naming the field), not misread as a tar.
func TestCompressionRefused(t *testing.T) {
	for _, m := range []string{"\xfd7zXZ\x00\x00\x04", "BZh91AY&SY", "\x28\xb5\x2f\xfd\x00\x00"} {
		_, _, err := Decompress("x", strings.NewReader(m))
		if !errors.Is(err, keysafe.ErrUnsupported) || fieldOf(err) != "compression" {
			t.Fatalf("%q: %v", m, err)
		}
	}
	// A damaged gzip stream is corrupt.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(readTestdata(t, realVMTar))
	zw.Close()
	b := gz.Bytes()
	b[len(b)-6] ^= 0xff // the CRC
	r, _, err := Decompress("x", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := walkAll(t, "x", r); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("gzip CRC: %v", err)
	}
}

// visorHeader builds one visor tar header.
func visorHeader(name string, typ byte, size int64, dataOff uint32) []byte {
	h := make([]byte, 512)
	copy(h, name)
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	copy(h[124:], fmt.Sprintf("%011o\x00", size))
	copy(h[136:], "14105025630\x00")
	h[156] = typ
	copy(h[257:], visorMagic)
	h[496], h[497], h[498], h[499] = byte(dataOff), byte(dataOff>>8), byte(dataOff>>16), byte(dataOff>>24)
	setChecksum(h)
	return h
}

func setChecksum(h []byte) {
	copy(h[148:156], "        ")
	var s int64
	for _, c := range h {
		s += int64(c)
	}
	copy(h[148:], fmt.Sprintf("%06o\x00 ", s))
}

// TestBadVMTar: damaged visor headers and data offsets are refused with
// their sentinel and field.
func TestBadVMTar(t *testing.T) {
	raw := readTestdata(t, realVMTar)
	mut := func(f func(b []byte)) []byte { b := append([]byte(nil), raw...); f(b); return b }
	cases := []struct {
		name  string
		b     []byte
		want  error
		field string
	}{
		{"checksum", mut(func(b []byte) { b[512] = 'X' }), keysafe.ErrCorrupt, "tar checksum"},
		{"size not octal", mut(func(b []byte) { copy(b[512+124:], "9999"); setChecksum(b[512:1024]) }), keysafe.ErrCorrupt, `tar size of "test/file3"`},
		{"data inside headers", mut(func(b []byte) { b[512+496], b[512+497] = 0, 2; setChecksum(b[512:1024]) }), keysafe.ErrCorrupt, `visor data offset of "test/file3"`},
		{"data past the end", mut(func(b []byte) { b[512+498] = 1; setChecksum(b[512:1024]) }), keysafe.ErrCorrupt, `visor data offset of "test/file3"`},
		{"data runs past the end", raw[:len(raw)-10], keysafe.ErrCorrupt, `visor data of "test/file1"`},
		{"pax header", mut(func(b []byte) { b[512+156] = 'x'; setChecksum(b[512:1024]) }), keysafe.ErrUnsupported, `tar type of "test/file3"`},
		{"truncated header", raw[:700], keysafe.ErrCorrupt, "tar header"},
	}
	for _, c := range cases {
		_, _, _, err := walkAll(t, c.name, bytes.NewReader(c.b))
		if !errors.Is(err, c.want) || fieldOf(err) != c.field {
			t.Errorf("%s: got %v (field %q), want %v at %q", c.name, err, fieldOf(err), c.want, c.field)
		}
	}
	// Two members whose data overlap.
	arch := append(visorHeader("a", '0', 100, 1536), visorHeader("b", '0', 100, 1536+50)...)
	arch = append(arch, make([]byte, 1024)...)
	arch = append(arch, make([]byte, 1024)...)
	if _, _, _, err := walkAll(t, "overlap", bytes.NewReader(arch)); !errors.Is(err, keysafe.ErrCorrupt) || fieldOf(err) != `visor data offset of "b"` {
		t.Fatalf("overlap: %v", err)
	}
}

type member struct {
	name, link string
	typ        byte
	body       string
}

func makeTar(t testing.TB, ms []member) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, m := range ms {
		h := &tar.Header{Name: m.name, Linkname: m.link, Typeflag: m.typ, Mode: 0o644, ModTime: time.Unix(1600000000, 0), Format: tar.FormatGNU}
		if m.typ == tar.TypeReg {
			h.Size = int64(len(m.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, m.body)
	}
	tw.Close()
	return b.Bytes()
}

// sparseClaim is a GNU sparse member claiming 10 GB (10^10 bytes) with one
// 512-byte stored fragment at its end.
func sparseClaim() []byte {
	const real = 10_000_000_000
	h := make([]byte, 512)
	copy(h, "big.img")
	copy(h[100:], "0000644\x00")
	copy(h[108:], "0000000\x00")
	copy(h[116:], "0000000\x00")
	copy(h[124:], fmt.Sprintf("%011o\x00", 512))
	copy(h[136:], "14105025630\x00")
	h[156] = 'S'
	copy(h[257:], "ustar  \x00")
	copy(h[386:], fmt.Sprintf("%011o\x00", real-512))
	copy(h[398:], fmt.Sprintf("%011o\x00", 512))
	copy(h[483:], fmt.Sprintf("%011o\x00", real))
	setChecksum(h)
	out := append(h, bytes.Repeat([]byte{'z'}, 512)...)
	return append(out, make([]byte, 1024)...)
}

// TestHostileTar: absolute paths, "..", symbolic and hard links out, a
// path through a link, a 10 GB sparse claim, duplicates, too many members:
// each refused (ErrUnsafeMember, exit 5 in the CLI), nothing written
// outside the output folder and nothing left inside it.
func TestHostileTar(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	os.Mkdir(outside, 0o700)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600)
	evil := filepath.Join(outside, "evil")
	ok := member{name: "etc/ok.conf", typ: tar.TypeReg, body: "fine"}
	cases := []struct {
		name  string
		arch  []byte
		limit bool
	}{
		{"absolute", makeTar(t, []member{ok, {name: evil, typ: tar.TypeReg, body: "x"}}), false},
		{"dotdot", makeTar(t, []member{ok, {name: "../outside/evil", typ: tar.TypeReg, body: "x"}}), false},
		{"inner dotdot", makeTar(t, []member{ok, {name: "etc/../../outside/evil", typ: tar.TypeReg, body: "x"}}), false},
		{"symlink out", makeTar(t, []member{ok, {name: "l", link: "../outside", typ: tar.TypeSymlink}, {name: "l/evil", typ: tar.TypeReg, body: "x"}}), false},
		{"absolute symlink", makeTar(t, []member{ok, {name: "l", link: outside, typ: tar.TypeSymlink}, {name: "l/evil", typ: tar.TypeReg, body: "x"}}), false},
		{"symlink chain", makeTar(t, []member{ok, {name: "x", link: ".", typ: tar.TypeSymlink}, {name: "x/y", link: "..", typ: tar.TypeSymlink}, {name: "y/outside/evil", typ: tar.TypeReg, body: "x"}}), false},
		{"through an inner link", makeTar(t, []member{ok, {name: "l", link: "etc", typ: tar.TypeSymlink}, {name: "l/evil", typ: tar.TypeReg, body: "x"}}), false},
		{"hard link absolute", makeTar(t, []member{ok, {name: "h", link: filepath.Join(outside, "secret"), typ: tar.TypeLink}}), false},
		{"hard link out", makeTar(t, []member{ok, {name: "h", link: "../outside/secret", typ: tar.TypeLink}}), false},
		{"hard link to nothing", makeTar(t, []member{ok, {name: "h", link: "etc/none", typ: tar.TypeLink}}), false},
		{"duplicate", makeTar(t, []member{ok, ok}), false},
		{"through a file", makeTar(t, []member{ok, {name: "etc/ok.conf/evil", typ: tar.TypeReg, body: "x"}}), false},
		{"backslash", makeTar(t, []member{ok, {name: `..\outside\evil`, typ: tar.TypeReg, body: "x"}}), false},
		{"sparse 10 GB", append(makeTar(t, []member{ok})[:1024], sparseClaim()...), true},
	}
	for _, c := range cases {
		out := filepath.Join(base, "out")
		_, _, err := Extract(c.name, bytes.NewReader(c.arch), out, DefaultLimits)
		want := keysafe.ErrCorrupt
		if c.limit {
			want = keysafe.ErrUnsupported
		}
		if !errors.Is(err, ErrUnsafeMember) || !errors.Is(err, want) {
			t.Errorf("%s: %v", c.name, err)
		}
		if _, err := os.Lstat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: output folder left behind", c.name)
			os.RemoveAll(out)
		}
		if names := dirList(t, outside); fmt.Sprint(names) != "[secret]" {
			t.Errorf("%s: outside holds %v", c.name, names)
		}
		if names := dirList(t, base); fmt.Sprint(names) != "[outside]" {
			t.Errorf("%s: base holds %v", c.name, names)
		}
	}
	// The sparse claim is read as 10 GB (the walker sees the real size).
	var size int64
	WalkTar("sparse", bytes.NewReader(sparseClaim()), func(e *Entry, _ io.Reader) error { size = e.Size; return nil })
	if size != 10_000_000_000 {
		t.Fatalf("sparse member read as %d bytes", size)
	}
	// Limits: members and total size.
	three := makeTar(t, []member{{name: "a", typ: tar.TypeReg, body: "12345"}, {name: "b", typ: tar.TypeReg, body: "12345"}, {name: "c", typ: tar.TypeReg, body: "12345"}})
	for _, lim := range []Limits{{MaxMembers: 2, MaxMemberSize: 100, MaxTotalSize: 100}, {MaxMembers: 10, MaxMemberSize: 4, MaxTotalSize: 100}, {MaxMembers: 10, MaxMemberSize: 100, MaxTotalSize: 12}} {
		out := filepath.Join(base, "out")
		if _, _, err := Extract("three", bytes.NewReader(three), out, lim); !errors.Is(err, keysafe.ErrUnsupported) {
			t.Errorf("limits %+v: %v", lim, err)
		}
		if _, err := os.Lstat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("limits %+v: output left", lim)
		}
	}
}

// TestExtractKeepsSafeLinksAndSkipsDevices: inner links are made, devices
// and FIFOs skipped, a truncated archive is corrupt, a non-empty output
// folder refused.
func TestExtractKeepsSafeLinksAndSkipsDevices(t *testing.T) {
	arch := makeTar(t, []member{
		{name: "./etc/", typ: tar.TypeDir},
		{name: "etc/a.conf", typ: tar.TypeReg, body: "A"},
		{name: "etc/link", link: "a.conf", typ: tar.TypeSymlink},
		{name: "etc/hard", link: "etc/a.conf", typ: tar.TypeLink},
		{name: "dev/null", typ: tar.TypeChar},
		{name: "run/fifo", typ: tar.TypeFifo},
	})
	out := filepath.Join(t.TempDir(), "o")
	x, _, err := Extract("ok", bytes.NewReader(arch), out, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Skipped) != 2 || x.Members != 4 {
		t.Fatalf("%+v", x)
	}
	if b, err := os.ReadFile(filepath.Join(out, "etc", "link")); err != nil || string(b) != "A" {
		t.Fatalf("link: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(out, "etc", "hard")); err != nil || string(b) != "A" {
		t.Fatalf("hard link: %q %v", b, err)
	}
	// Non-empty output folder.
	if _, _, err := Extract("ok", bytes.NewReader(arch), out, DefaultLimits); !errors.Is(err, os.ErrExist) {
		t.Fatalf("non-empty outdir: %v", err)
	}
	// Truncated inside a member's data.
	big := makeTar(t, []member{{name: "f", typ: tar.TypeReg, body: strings.Repeat("x", 5000)}})
	out2 := filepath.Join(t.TempDir(), "o2")
	if _, _, err := Extract("cut", bytes.NewReader(big[:3000]), out2, DefaultLimits); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("truncated: %v", err)
	}
	if _, err := os.Lstat(out2); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("truncated: output left")
	}
}
