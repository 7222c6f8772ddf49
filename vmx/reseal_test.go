package vmx

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// testdata reads a file copied into testdata/ (see testdata/SOURCES.md).
func testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/vectors/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// uglyVMX is an encrypted VMX with everything a byte-exact round trip must
// keep: a BOM, CRLF, comments, blank lines, |XX escapes, an odd line, a
// repeated key, a key-safe line with odd spacing and no final newline.
func uglyVMX(t testing.TB, pass string) (*File, *keysafe.Key, []byte) {
	t.Helper()
	ck := &keysafe.Key{Cipher: keysafe.CipherXTSAES256, Bytes: make([]byte, 64)}
	rand.Read(ck.Bytes)
	dfk := &keysafe.Key{Cipher: keysafe.CipherXTSAES256, Bytes: make([]byte, 64)}
	rand.Read(dfk.Bytes)
	body := "# settings\r\nnvram = \"x.nvram\"\r\nannotation = \"a|0Ab|7Cc|22\"\r\n\r\nodd line here\r\nfoo = \"1\"\r\nfoo = \"2\"\r\n" +
		"dataFileKey = \"" + EncodeValue(dfk.Dict()) + "\"\r\ncryptoState = \"encrypted\"\r\nlast = \"no newline\""
	p, err := keysafe.LockPhrase(ck, []byte(pass), keysafe.CipherAES256, 1000, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	data, err := EncryptData(ck, []byte(body), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	outer := "\xef\xbb\xbf# my VM\r\n.encoding = \"UTF-8\"\r\ndisplayName = \"Caf|C3|A9 |22q|22\"\r\n\r\n" +
		"encryption.keySafe=  \"" + keysafe.NewList(p).String() + "\"  \r\nvtpm.present = \"TRUE\"\r\nencryption.data = \"" + data + "\""
	return mustParse(t, []byte(outer)), ck, []byte(body)
}

// sameExcept checks that two files have the same lines, byte for byte,
// except the settings named in changed (case-insensitive), and returns how
// many lines differ.
func sameExcept(t *testing.T, a, b *File, changed ...string) int {
	t.Helper()
	if a.BOM != b.BOM || len(a.Lines) != len(b.Lines) {
		t.Fatalf("BOM %v/%v, %d/%d lines", a.BOM, b.BOM, len(a.Lines), len(b.Lines))
	}
	n := 0
	for i := range a.Lines {
		x, y := a.Lines[i], b.Lines[i]
		if x.Raw == y.Raw && x.EOL == y.EOL {
			continue
		}
		n++
		ok := false
		for _, k := range changed {
			if x.Kind == Setting && strings.EqualFold(x.Key, k) && x.Key == y.Key && x.EOL == y.EOL {
				ok = true
			}
		}
		if !ok {
			t.Fatalf("line %d changed: %q -> %q", i+1, x.Raw, y.Raw)
		}
	}
	return n
}

func TestChangePassphraseVectors(t *testing.T) {
	for _, name := range []string{"workstation-encrypted.vmx", "xts-selfgen.vmx"} {
		f := mustParse(t, testdata(t, name))
		before, _ := open(t, f, "password")
		r, err := ChangePassphrase(f, []byte("password"), []byte("correct horse"), keysafe.RelockOptions{}, rand.Reader)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.Relocked != 1 || r.Kept != 0 || r.ConfigKey == nil {
			t.Fatalf("%s: %+v", name, r)
		}
		out := mustParse(t, r.File.Bytes())
		if n := sameExcept(t, f, out, KeyKeySafe); n != 1 {
			t.Fatalf("%s: %d lines changed, want the key safe only", name, n)
		}
		if _, err := open(t, out, "password"); !errors.Is(err, keysafe.ErrWrongKey) {
			t.Fatalf("%s: old passphrase after the change: %v", name, err)
		}
		after, err := open(t, out, "correct horse")
		if err != nil {
			t.Fatalf("%s: new passphrase: %v", name, err)
		}
		if !bytes.Equal(after.Bytes(), before.Bytes()) || !bytes.Equal(r.Settings.Bytes(), before.Text) {
			t.Fatalf("%s: decrypted settings changed", name)
		}
		if name == "workstation-encrypted.vmx" {
			if s := sha256.Sum256(after.Text); hex.EncodeToString(s[:]) != "750c6db6913bfc255c6510e50629dadbb9df61f8b55701b3668898cac4705e73" {
				t.Fatal("settings differ from the documented sha256")
			}
		}
		if f2 := mustParse(t, testdata(t, name)); !bytes.Equal(f2.Bytes(), f.Bytes()) {
			t.Fatal("input changed")
		}
	}
}

// The ugly file: only the key-safe line changes, and it keeps its spacing.
func TestChangePassphraseByteExact(t *testing.T) {
	f, ck, body := uglyVMX(t, "old")
	in := f.Bytes()
	r, err := ChangePassphrase(f, []byte("old"), []byte("new"), keysafe.RelockOptions{Rounds: 2000}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Bytes(), in) {
		t.Fatal("input changed")
	}
	out := mustParse(t, r.File.Bytes())
	sameExcept(t, f, out, KeyKeySafe)
	i := out.find(KeyKeySafe)
	if !strings.HasPrefix(out.Lines[i].Raw, `encryption.keySafe=  "vmware:key/list/(pair/(phrase/`) || !strings.HasSuffix(out.Lines[i].Raw, `"  `) || out.Lines[i].EOL != "\r\n" {
		t.Fatalf("key-safe line layout lost: %q", out.Lines[i].Raw)
	}
	if !bytes.Equal(r.ConfigKey.Bytes, ck.Bytes) || !bytes.Equal(r.Settings.Bytes(), body) {
		t.Fatal("config key or settings differ")
	}
	d, err := open(t, out, "new")
	if err != nil || !bytes.Equal(d.Text, body) {
		t.Fatalf("new passphrase: %v", err)
	}
	ks, _ := out.KeySafe()
	pp, _ := keysafe.ParsePhraseParams(ks.Pairs()[0].Locker.KeyGenData)
	if pp.Rounds != 2000 {
		t.Fatalf("rounds %d, want 2000", pp.Rounds)
	}
}

// encryption.bundle (the vSphere API's name) is relocked like keySafe;
// with both, both change together.
func TestChangePassphraseBundle(t *testing.T) {
	f, _, _ := uglyVMX(t, "old")
	ks, _, _, _ := f.Encryption()
	for _, keys := range [][]string{{KeyBundle}, {KeyKeySafe, KeyBundle}} {
		g := f.clone()
		g.Delete(KeyKeySafe)
		for _, k := range keys {
			g.insertPlain(SettingLine(k, ks, "\r\n"))
		}
		r, err := ChangePassphrase(g, []byte("old"), []byte("new"), keysafe.RelockOptions{}, rand.Reader)
		if err != nil {
			t.Fatalf("%v: %v", keys, err)
		}
		if n := sameExcept(t, g, r.File, keys...); n != len(keys) {
			t.Fatalf("%v: %d lines changed", keys, n)
		}
		if _, err := open(t, mustParse(t, r.File.Bytes()), "new"); err != nil {
			t.Fatalf("%v: %v", keys, err)
		}
	}
}

func TestChangePassphraseRefusals(t *testing.T) {
	f, ck, _ := uglyVMX(t, "old")
	fq, _ := keysafe.LockFQID(ck, "KMS", "7", bytes.Repeat([]byte{1}, 32), rand.Reader)
	fqid := f.clone()
	fqid.setAll(KeyKeySafe, keysafe.NewList(fq).String())
	badData := f.clone()
	_, data, _, _ := f.Encryption()
	badData.setAll(KeyData, data[:len(data)-8]+"AAAAAAA=")
	for _, c := range []struct {
		name string
		f    *File
		old  string
		want error
	}{
		{"wrong old passphrase", f, "Old", keysafe.ErrWrongKey},
		{"key provider VM", fqid, "old", keysafe.ErrNotPhrase},
		{"not encrypted", mustParse(t, []byte("a = \"b\"\n")), "old", keysafe.ErrUnsupported},
		{"damaged encryption.data", badData, "old", keysafe.ErrCorrupt},
	} {
		if r, err := ChangePassphrase(c.f, []byte(c.old), []byte("new"), keysafe.RelockOptions{}, rand.Reader); !errors.Is(err, c.want) || r != nil {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := ChangePassphrase(badData, []byte("old"), []byte("new"), keysafe.RelockOptions{}, rand.Reader); errors.Is(err, keysafe.ErrWrongKey) {
		t.Error("damaged data reported as a wrong passphrase")
	}
}

// Reseal: the settings change, the key-safe line is byte-identical, every
// other outer line too; unchanged text keeps encryption.data as it is.
func TestReseal(t *testing.T) {
	f, ck, body := uglyVMX(t, "pw")
	same, err := Reseal(f, ck, body, rand.Reader)
	if err != nil || !bytes.Equal(same.Bytes(), f.Bytes()) {
		t.Fatalf("unchanged settings changed the file: %v", err)
	}
	edited := bytes.Replace(body, []byte(`nvram = "x.nvram"`), []byte(`nvram = "y.nvram"`), 1)
	edited = append(edited, "\r\n# added\r\nnew.key = \"v|22w\""...)
	out, err := Reseal(f, ck, edited, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if n := sameExcept(t, f, mustParse(t, out.Bytes()), KeyData); n != 1 {
		t.Fatalf("%d outer lines changed", n)
	}
	d, err := open(t, mustParse(t, out.Bytes()), "pw")
	if err != nil || !bytes.Equal(d.Text, edited) {
		t.Fatalf("decrypts to %q: %v", d.Text, err)
	}
	if v, _ := d.Settings.Get("new.key"); v != `v"w` {
		t.Fatalf("new.key = %q", v)
	}
	other := &keysafe.Key{Cipher: keysafe.CipherXTSAES256, Bytes: make([]byte, 64)}
	if _, err := Reseal(f, other, edited, rand.Reader); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("another config key: %v", err)
	}
}

func TestCheckSettings(t *testing.T) {
	_, _, body := uglyVMX(t, "pw")
	old := string(body)
	dfk := old[strings.Index(old, "dataFileKey"):]
	dfk = dfk[:strings.Index(dfk, "\r\n")]
	for _, c := range []struct {
		name   string
		edited string
		want   error // nil: accepted
		line   int
	}{
		{"unchanged", old, nil, 0},
		{"a comment, a blank line and a setting", old + "\n# note\n\nx.y:z-w_1 = \"|7C\"\n", nil, 0},
		{"a line removed", strings.Replace(old, "foo = \"1\"\r\n", "", 1), nil, 0},
		{"the odd line that was there is not judged", strings.Replace(old, "nvram", "nvrom", 1), nil, 0},
		{"no quotes", old + "\nx = 1\n", ErrSyntax, 11},
		{"unterminated quote", "a = \"b\n" + old, ErrSyntax, 1},
		{"a quote inside", old + "\nx = \"a\"b\"\n", ErrSyntax, 11},
		{"not key = value", "what is this\n" + old, ErrSyntax, 1},
		{"key with a blank", old + "\na b = \"c\"\n", ErrSyntax, 11},
		{"key with a slash", old + "\na/b = \"c\"\n", ErrSyntax, 11},
		{"not UTF-8", old + "\nx = \"\xff\"\n", ErrSyntax, 11},
		{"a key given twice", old + "\nnvram = \"z\"\n", ErrSyntax, 2},
		{"a byte-order mark", "\xef\xbb\xbf" + old, ErrSyntax, 1},
		{"dataFileKey removed", strings.Replace(old, dfk, "", 1), ErrProtected, 0},
		{"dataFileKey changed", strings.Replace(old, "cipher=XTS-AES-256", "cipher=AES-256", 1), ErrProtected, 0},
		{"dataFileKey given twice", old + "\n" + dfk + "\n", ErrSyntax, 0},
		{"cryptoState changed", strings.Replace(old, `cryptoState = "encrypted"`, `cryptoState = "none"`, 1), ErrProtected, 0},
		{"cryptoState removed", strings.Replace(old, `cryptoState = "encrypted"`, `# gone`, 1), ErrProtected, 0},
		{"a key safe inside", old + "\nencryption.keySafe = \"vmware:key/null/\"\n", ErrProtected, 0},
	} {
		err := CheckSettings([]byte(old), []byte(c.edited))
		switch {
		case c.want == nil && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != nil && !errors.Is(err, c.want):
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		case c.line != 0:
			var se *SyntaxError
			if !errors.As(err, &se) || se.Line != c.line {
				t.Errorf("%s: %v, want line %d", c.name, err, c.line)
			}
		}
	}
}

func TestApply(t *testing.T) {
	f, ck, body := uglyVMX(t, "pw")
	out, done, err := Apply(f, ck, []Change{
		{Key: "NVRAM", Value: "y.nvram"},       // settings, keeps the spelling "nvram"
		{Key: "foo", Value: "3"},               // the last of two
		{Key: "annotation", Value: "a\nb|c"},   // escaped on write
		{Key: "guestinfo.new", Value: "v"},     // added to the settings
		{Key: "vtpm.ek", Value: "E"},           // a new plain key: before encryption.*
		{Key: "displayName", Value: "Renamed"}, // a plain key: changes in place
		{Key: "last", Unset: true},
		{Key: "never.there", Unset: true},
		{Key: "cryptostate.not", Value: "x"},
		{Key: "odd", Value: "1"},
	}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Applied{
		"NVRAM": {Action: Changed}, "foo": {Action: Changed}, "annotation": {Action: Changed},
		"guestinfo.new": {Action: Added}, "vtpm.ek": {Plain: true, Action: Added}, "displayName": {Plain: true, Action: Changed},
		"last": {Action: Removed}, "never.there": {Action: Absent}, "cryptostate.not": {Action: Added}, "odd": {Action: Added},
	}
	for _, a := range done {
		if w := want[a.Key]; a.Plain != w.Plain || a.Action != w.Action {
			t.Errorf("%s: %+v, want %+v", a.Key, a, w)
		}
	}
	o := mustParse(t, out.Bytes())
	ks1, _, _, _ := f.Encryption()
	ks2, _, _, _ := o.Encryption()
	if ks1 != ks2 || o.Lines[5].Raw != f.Lines[4].Raw || o.Lines[5].EOL != f.Lines[4].EOL {
		t.Fatal("the key-safe line changed")
	}
	if !strings.HasPrefix(string(o.Bytes()), "\xef\xbb\xbf# my VM\r\n.encoding = \"UTF-8\"\r\ndisplayName = \"Renamed\"\r\n\r\nvtpm.ek = \"E\"\r\nencryption.keySafe=  \"") {
		t.Fatalf("outer file:\n%s", o.Bytes())
	}
	d, err := open(t, o, "pw")
	if err != nil {
		t.Fatal(err)
	}
	wantText := strings.NewReplacer(
		`nvram = "x.nvram"`, `nvram = "y.nvram"`,
		"foo = \"2\"", "foo = \"3\"",
		`annotation = "a|0Ab|7Cc|22"`, `annotation = "a|0Ab|7Cc"`,
		"\r\nlast = \"no newline\"", "",
	).Replace(string(body)) + "\r\nguestinfo.new = \"v\"\r\ncryptostate.not = \"x\"\r\nodd = \"1\"\r\n"
	if string(d.Text) != wantText {
		t.Fatalf("settings:\n%q\nwant\n%q", d.Text, wantText)
	}
	for _, c := range []struct {
		ch   Change
		want error
	}{
		{Change{Key: "dataFileKey", Value: "x"}, ErrProtected},
		{Change{Key: "DATAFILEKEY", Unset: true}, ErrProtected},
		{Change{Key: "cryptoState", Value: "none"}, ErrProtected},
		{Change{Key: "encryption.keySafe", Value: "x"}, ErrProtected},
		{Change{Key: "encryption.data", Unset: true}, ErrProtected},
		{Change{Key: "a b", Value: "x"}, ErrSyntax},
		{Change{Key: "", Value: "x"}, ErrSyntax},
	} {
		if _, _, err := Apply(f, ck, []Change{c.ch}, rand.Reader); !errors.Is(err, c.want) {
			t.Errorf("%+v: %v, want %v", c.ch, err, c.want)
		}
	}
}
