package vmx

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

const vectors = "testdata/vectors/"

func readVector(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(vectors + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, b []byte) *File {
	t.Helper()
	f, err := ParseBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Bytes(), b) {
		t.Fatal("VMX does not round-trip byte for byte")
	}
	return f
}

// open unlocks a VMX with a passphrase.
func open(t testing.TB, f *File, pass string) (*Decrypted, error) {
	t.Helper()
	l, err := f.KeySafe()
	if err != nil {
		return nil, err
	}
	k, err := keysafe.UnlockPhrase(l.Pairs()[0], []byte(pass))
	if err != nil {
		return nil, err
	}
	return Decrypt(f, k)
}

func TestWorkstationVector(t *testing.T) {
	f := mustParse(t, readVector(t, "workstation-encrypted.vmx"))
	d, err := open(t, f, "password")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(d.Text)
	if len(d.Text) != 3872 || hex.EncodeToString(sum[:]) != "750c6db6913bfc255c6510e50629dadbb9df61f8b55701b3668898cac4705e73" {
		t.Fatalf("decrypted %d bytes, sha256 %x", len(d.Text), sum)
	}
	dfk, err := d.Settings.DataFileKey()
	if err != nil || dfk.Dict() != "type=key:cipher=AES-256:key=Sz2MzrpfNC4qr0T1oAb93ggFb86IrHWSQTel4Z6Fyds%3d" {
		t.Fatalf("dataFileKey %v %v", dfk, err)
	}
	if v, _ := d.Settings.Get("cryptoState"); v != "encrypted" {
		t.Fatalf("cryptoState %q", v)
	}
	disks := Disks(d.Settings)
	if len(disks) != 1 || disks[0] != (Disk{"nvme0:0", "Virtual Disk.vmdk"}) {
		t.Fatalf("disks %+v", disks)
	}
	if NVRAM(d.Settings, "Encrypted VM.vmx") != "Encrypted VM.nvram" {
		t.Fatal("nvram")
	}
	p := PostureOf(f, d.Settings, false)
	if !p.Encrypted || p.Firmware != "efi" || p.VMotionEncryption != "opportunistic" || *p.SecureBoot || p.VTPM {
		t.Fatalf("posture %+v", p)
	}
	if len(p.Conflicts) != 1 || !strings.Contains(p.Conflicts[0], "vMotion") {
		t.Fatalf("conflicts %q", p.Conflicts)
	}
	// Without the key the body settings are unknown.
	p0 := PostureOf(f, nil, false)
	if p0.SettingsRead || p0.Firmware != "" || p0.SecureBoot != nil || !p0.Encrypted {
		t.Fatalf("posture without key %+v", p0)
	}
	// The recovered VMX: no encryption.*, dataFileKey or cryptoState.
	rec := mustParse(t, d.Recovered())
	for _, k := range []string{"encryption.keySafe", "encryption.data", "dataFileKey", "cryptoState"} {
		if _, ok := rec.Get(k); ok {
			t.Errorf("recovered VMX still has %s", k)
		}
	}
	if v, _ := rec.Get("displayName"); v != "Encrypted VM" || len(rec.Lines) != len(d.Settings.Lines)-2+2 {
		t.Errorf("recovered VMX: %d lines", len(rec.Lines))
	}
	// The decrypted file: plain header lines, then the text as it is.
	out := d.Bytes()
	if !bytes.HasPrefix(out, []byte(".encoding = \"UTF-8\"\ndisplayName = \"Encrypted VM\"\nconfig.version")) || !bytes.HasSuffix(out, d.Text) {
		t.Fatalf("decrypted file starts %q", out[:80])
	}
}

func TestXTSVector(t *testing.T) {
	f := mustParse(t, readVector(t, "xts-selfgen.vmx"))
	d, err := open(t, f, "password")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(d.Text)
	if len(d.Text) != 187 || hex.EncodeToString(sum[:]) != "4b55b418e0240c23e6da739a5d82db831dc698b863275864a6bc28875bed2d04" {
		t.Fatalf("decrypted %d bytes, sha256 %x", len(d.Text), sum)
	}
	dfk, err := d.Settings.DataFileKey()
	if err != nil || dfk.Cipher != keysafe.CipherXTSAES256 {
		t.Fatalf("dataFileKey %v %v", dfk, err)
	}
	for i, c := range dfk.Bytes {
		if c != byte(0x80+i) {
			t.Fatalf("dataFileKey byte %d = %#x", i, c)
		}
	}
}

// flipData returns the workstation VMX with encryption.data changed by f.
func withData(t *testing.T, f func(raw []byte) []byte) *File {
	vf := mustParse(t, readVector(t, "workstation-encrypted.vmx"))
	_, data, _, _ := vf.Encryption()
	raw, _ := base64.StdEncoding.DecodeString(data)
	vf.Set(KeyData, base64.StdEncoding.EncodeToString(f(raw)))
	return vf
}

func TestDataCorruptionIsNotWrongKey(t *testing.T) {
	cases := map[string]func([]byte) []byte{
		"flipped MAC byte":        func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
		"flipped ciphertext byte": func(b []byte) []byte { b[100] ^= 0x40; return b },
		"flipped last block":      func(b []byte) []byte { b[len(b)-21] ^= 1; return b },
		"truncated by a block":    func(b []byte) []byte { return b[:len(b)-16] },
		"impossible length":       func(b []byte) []byte { return b[:len(b)-3] },
		"too short":               func(b []byte) []byte { return b[:40] },
	}
	for name, mut := range cases {
		f := withData(t, mut)
		if _, err := open(t, f, "password"); !errors.Is(err, keysafe.ErrCorrupt) || errors.Is(err, keysafe.ErrWrongKey) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	f := mustParse(t, readVector(t, "workstation-encrypted.vmx"))
	_, data, _, _ := f.Encryption()
	f.Set(KeyData, data[:len(data)-5]) // truncated base64
	if _, err := open(t, f, "password"); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Errorf("truncated base64: %v", err)
	}
	if _, err := open(t, mustParse(t, readVector(t, "workstation-encrypted.vmx")), "wrong"); !errors.Is(err, keysafe.ErrWrongKey) {
		t.Errorf("wrong passphrase: %v", err)
	}
}

// uglify rewrites the workstation VMX the ways real files differ.
func TestUglyInput(t *testing.T) {
	orig := string(readVector(t, "workstation-encrypted.vmx"))
	lines := strings.Split(strings.TrimSuffix(orig, "\n"), "\n")
	// lines: .encoding, displayName, encryption.keySafe, encryption.data
	ks := strings.Replace(lines[2], "encryption.keySafe", "ENCRYPTION.KEYSAFE", 1)
	data := strings.Replace(lines[3], "encryption.data", "Encryption.Data", 1)
	variants := map[string]string{
		"CRLF":                strings.ReplaceAll(orig, "\n", "\r\n"),
		"data before keySafe": strings.Join([]string{lines[0], lines[1], lines[3], lines[2]}, "\n") + "\n",
		"keys in any case":    strings.Join([]string{lines[0], lines[1], ks, data}, "\n"),
		"key safe first, extra header lines, comments": "# written by hand\r\n" + lines[2] + "\r\n\r\nvmx.encryptionType = \"vmware\"\r\n" +
			"encryptedVM.guid = \"{1234}\"\r\nmanagedvm.autoAddVTPM = \"software\"\r\n" + lines[0] + "\r\n" + lines[1] + "\r\n" + lines[3] + "\r\n",
		"bundle instead of keySafe": strings.Replace(orig, "encryption.keySafe", "encryption.bundle", 1),
		"spaces around =":           strings.Replace(orig, "encryption.keySafe = ", "encryption.keySafe   =\t", 1),
		"BOM":                       "\xef\xbb\xbf" + orig,
	}
	for name, v := range variants {
		f := mustParse(t, []byte(v))
		d, err := open(t, f, "password")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		sum := sha256.Sum256(d.Text)
		if hex.EncodeToString(sum[:]) != "750c6db6913bfc255c6510e50629dadbb9df61f8b55701b3668898cac4705e73" {
			t.Errorf("%s: wrong text", name)
		}
	}
}

func TestParseLines(t *testing.T) {
	in := "# comment\r\n\r\nA.B = \"x|22y|7Cz\"\r\nodd line\r\nnum = 5\r\nlast = \"v\""
	f := mustParse(t, []byte(in))
	if f.EOL() != "\r\n" || len(f.Lines) != 6 {
		t.Fatalf("%d lines, eol %q", len(f.Lines), f.EOL())
	}
	if v, _ := f.Get("a.b"); v != `x"y|z` {
		t.Fatalf("a.b = %q", v)
	}
	if v, _ := f.Get("NUM"); v != "5" {
		t.Fatalf("num = %q", v)
	}
	if f.Lines[3].Kind != Other || f.Lines[0].Kind != Comment || f.Lines[1].Kind != Blank {
		t.Fatal("kinds")
	}
	f.Set("a.b", `q"|#`)
	f.Set("new.key", "n")
	want := "# comment\r\n\r\nA.B = \"q|22|7C#\"\r\nodd line\r\nnum = 5\r\nlast = \"v\"\r\nnew.key = \"n\"\r\n"
	if string(f.Bytes()) != want {
		t.Fatalf("got %q", f.Bytes())
	}
	f2 := mustParse(t, f.Bytes())
	if v, _ := f2.Get("A.B"); v != `q"|#` {
		t.Fatalf("re-read %q", v)
	}
	f.Delete("NEW.KEY")
	if _, ok := f.Get("new.key"); ok {
		t.Fatal("delete")
	}
	big := bytes.Repeat([]byte("a = \"b\"\n"), MaxFileSize/8+1)
	if _, err := ParseBytes(big); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("oversized VMX: %v", err)
	}
}

func TestEncryptionSettingsAmbiguous(t *testing.T) {
	orig := string(readVector(t, "workstation-encrypted.vmx"))
	for name, v := range map[string]string{
		"key safe twice":        orig + strings.Split(orig, "\n")[2] + "\n",
		"data without key safe": ".encoding = \"UTF-8\"\nencryption.data = \"AAAA\"\n",
	} {
		f := mustParse(t, []byte(v))
		if _, err := f.KeySafe(); !errors.Is(err, keysafe.ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if l, err := mustParse(t, []byte("a = \"b\"\n")).KeySafe(); l != nil || err != nil {
		t.Errorf("plain VMX: %v %v", l, err)
	}
}

func phraseLock(pass string, cipher string) Lock {
	return func(k *keysafe.Key) (*keysafe.Locator, error) {
		p, err := keysafe.LockPhrase(k, []byte(pass), cipher, 1000, rand.Reader)
		if err != nil {
			return nil, err
		}
		return keysafe.NewList(p), nil
	}
}

func TestEncryptInverse(t *testing.T) {
	for _, name := range []string{"workstation-encrypted.vmx", "xts-selfgen.vmx"} {
		f := mustParse(t, readVector(t, name))
		d, err := open(t, f, "password")
		if err != nil {
			t.Fatal(err)
		}
		x := d.Bytes()
		for _, c := range []string{keysafe.CipherAES256, keysafe.CipherXTSAES256} {
			enc, key, err := Encrypt(mustParse(t, x), phraseLock("pw", c), EncryptOptions{Cipher: c}, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if key.Cipher != c {
				t.Fatalf("config key cipher %s", key.Cipher)
			}
			enc2 := mustParse(t, enc.Bytes())
			d2, err := open(t, enc2, "pw")
			if err != nil {
				t.Fatalf("%s/%s: %v", name, c, err)
			}
			if !bytes.Equal(d2.Bytes(), x) || !bytes.Equal(d2.Text, d.Text) {
				t.Fatalf("%s/%s: decrypt(encrypt(x)) != x", name, c)
			}
			if h, _ := enc2.Get("displayName"); h == "" {
				t.Fatal("displayName not kept plain")
			}
		}
	}
	// A plain VM gets dataFileKey and cryptoState inside, CRLF kept.
	plain := ".encoding = \"UTF-8\"\r\ndisplayName = \"p\"\r\nfirmware = \"efi\"\r\nvtpm.present = \"TRUE\"\r\n"
	enc, _, err := Encrypt(mustParse(t, []byte(plain)), phraseLock("pw", keysafe.CipherAES256), EncryptOptions{}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(enc.Bytes(), []byte("\r\nencryption.keySafe = \"vmware:key/list/(pair/(phrase/")) || bytes.Contains(bytes.ReplaceAll(enc.Bytes(), []byte("\r\n"), nil), []byte("\n")) {
		t.Fatalf("encrypted plain VM:\n%s", enc.Bytes())
	}
	d, err := open(t, enc, "pw")
	if err != nil {
		t.Fatal(err)
	}
	if k, err := d.Settings.DataFileKey(); err != nil || k == nil || len(k.Bytes) != 32 {
		t.Fatalf("dataFileKey %v %v", k, err)
	}
	if v, _ := d.Settings.Get("cryptoState"); v != "encrypted" {
		t.Fatal("cryptoState")
	}
	if v, _ := d.Settings.Get("vtpm.present"); v != "" {
		t.Fatal("vtpm.present moved inside")
	}
	if v, _ := d.Header.Get("vtpm.present"); v != "TRUE" {
		t.Fatal("vtpm.present not kept plain")
	}
	if _, _, err := Encrypt(enc, phraseLock("pw", keysafe.CipherAES256), EncryptOptions{}, rand.Reader); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("encrypting twice: %v", err)
	}
}

func TestPostureConflicts(t *testing.T) {
	f := mustParse(t, []byte("vtpm.present = \"TRUE\"\nuefi.secureBoot.enabled = \"TRUE\"\nfirmware = \"bios\"\n"))
	p := PostureOf(f, f, false)
	if len(p.Conflicts) != 2 || p.Encrypted {
		t.Fatalf("%+v", p)
	}
	ws := mustParse(t, readVector(t, "workstation-encrypted.vmx"))
	inner := mustParse(t, []byte("firmware = \"efi\"\nmigrate.encryptionMode = \"required\"\nftcpt.enabled = \"TRUE\"\n"))
	p = PostureOf(ws, inner, true)
	if len(p.Conflicts) != 2 || p.VMotionEncryption != "required" || !*p.FaultTolerance {
		t.Fatalf("%+v", p)
	}
}

func TestDisks(t *testing.T) {
	f := mustParse(t, []byte(`scsi0:1.fileName = "b.vmdk"
scsi0:1.present = "TRUE"
scsi0:0.fileName = "a.vmdk"
scsi0:0.present = "true"
sata0:0.fileName = "x.iso"
sata0:0.deviceType = "cdrom-image"
sata0:0.present = "TRUE"
ide0:0.fileName = "gone.vmdk"
ide0:0.present = "FALSE"
nvme0:10.fileName = "n10.vmdk"
nvme0:10.present = "TRUE"
nvme0:2.fileName = "n2.vmdk"
nvme0:2.present = "TRUE"
`))
	got := Disks(f)
	want := []Disk{{"nvme0:2", "n2.vmdk"}, {"nvme0:10", "n10.vmdk"}, {"scsi0:0", "a.vmdk"}, {"scsi0:1", "b.vmdk"}}
	if len(got) != len(want) {
		t.Fatalf("%+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%+v", got)
		}
	}
}

func TestParseReaderAt(t *testing.T) {
	b := readVector(t, "xts-selfgen.vmx")
	f, err := Parse(bytes.NewReader(b), int64(len(b)))
	if err != nil || !bytes.Equal(f.Bytes(), b) {
		t.Fatalf("Parse: %v", err)
	}
	if _, err := Parse(bytes.NewReader(b), int64(len(b))+10); err == nil {
		t.Fatal("short read accepted")
	}
	if _, err := Parse(bytes.NewReader(nil), MaxFileSize+1); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("size above the cap: %v", err)
	}
	if f, err := Parse(bytes.NewReader(nil), 0); err != nil || len(f.Lines) != 0 {
		t.Fatalf("empty: %v", err)
	}
}

func TestReadFile(t *testing.T) {
	f, err := ReadFile(vectors + "workstation-encrypted.vmx")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Bytes(), readVector(t, "workstation-encrypted.vmx")) {
		t.Fatal("ReadFile does not give back the file byte for byte")
	}
	dir := t.TempDir()
	if _, err := ReadFile(dir); err == nil || !strings.Contains(err.Error(), "is a folder, not a .vmx file") {
		t.Fatalf("folder: got %v", err)
	}
	if _, err := ReadFile(dir + "/missing.vmx"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: got %v", err)
	}
	big := dir + "/big.vmx"
	if err := os.WriteFile(big, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, MaxFileSize+1); err != nil {
		t.Fatal(err)
	}
	_, err = ReadFile(big)
	if !errors.Is(err, keysafe.ErrUnsupported) || !strings.HasPrefix(err.Error(), big+": ") {
		t.Fatalf("oversized file: got %v", err)
	}
}
