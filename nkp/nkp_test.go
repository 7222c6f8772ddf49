package nkp

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha512"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

const vectors = "../vmx/testdata/vectors"

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPKCS12KDF pins RFC 7292 appendix B.2 with the vectors of
// golang.org/x/crypto/pkcs12 (pbkdf_test.go: a long key; an I_j that gains
// a leading zero byte) and rust-openssl's pkcs12_kdf test (SHA-512, v=128,
// non-ASCII password).
func TestPKCS12KDF(t *testing.T) {
	cases := []struct {
		name       string
		h          hashAlg
		pass, salt []byte
		id         byte
		iter, n    int
		want       string
	}{
		{"long key", hashAlg{new: sha1.New}, bmpPassword([]byte("sesame")), bytes.Repeat([]byte{0xff}, 8), 1, 2048, 24,
			"7cd9fd3e2b3be7691a44e3bef0f9ea0fb9b897d4e325d9d1"},
		{"leading zero", hashAlg{new: sha1.New}, []byte{0, 0}, []byte("\xf3\x7e\x05\xb5\x18\x32\x4b\x4b"), 1, 2048, 24,
			"00f759ff47d14dd03665d5943cb3c4a39a2555c02aed66e1"},
		{"sha512 utf8", hashAlg{new: sha512.New}, bmpPassword([]byte("ge@äheim")), []byte{1, 2, 3, 4, 5, 6, 7, 8}, 1, 100, 32,
			"b14a9f01bfd9dce4c9d66d2fe9937e5fd9f1afa59e370a6fa4fc81c1cc8ec8ee"},
	}
	for _, c := range cases {
		got := hex.EncodeToString(pkcs12KDF(c.h.new, c.id, c.pass, c.salt, c.iter, c.n))
		if got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
}

// TestBMPPassword pins the JDK's PKCS12 encoding: UTF-16BE plus 00 00; the
// empty password is just the terminator.
func TestBMPPassword(t *testing.T) {
	for in, want := range map[string]string{"": "0000", "ab": "006100620000", "ä𝄞": "00e4d834dd1e0000"} {
		if got := hex.EncodeToString(bmpPassword([]byte(in))); got != want {
			t.Errorf("bmpPassword(%q) = %s, want %s", in, got, want)
		}
	}
}

// fixtures made by keytool / Java (testdata/README.md).
var fixtures = []struct {
	file, password, id, key, mac, scheme string
}{
	{"keytool-modern.p12", "secret123", "ec41612e-cc4c-5386-a3a5-f24b43d97d01", "5753fd45b817806bf2f5db6ce7ad125b69696fa6d83995af557a8118b0c11d93", "HMAC-SHA-256", "PBES2"},
	{"keytool-legacy.p12", "secret123", "11111111-2222-3333-4444-555555555555", "a51ed22b18ce20363623009182a46189d7bd1efbd0aad12ac91e78f83d2a5bc3", "HMAC-SHA-1", "pbeWithSHAAnd3-KeyTripleDES-CBC"},
	{"java-empty-password.p12", "", "22222222-2222-3333-4444-555555555555", "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "HMAC-SHA-256", "PBES2"},
}

func TestJavaFixtures(t *testing.T) {
	for _, f := range fixtures {
		t.Run(f.file, func(t *testing.T) {
			raw := readFixture(t, f.file)
			b, err := Parse(bytes.NewReader(raw), int64(len(raw)))
			if err != nil {
				t.Fatal(err)
			}
			if b.MAC == nil || b.MAC.Algorithm != f.mac {
				t.Fatalf("MAC %+v, want %s", b.MAC, f.mac)
			}
			bag := b.Containers[0].Bags[0]
			if bag.Type != "secretBag" || bag.FriendlyName != f.id || bag.Encryption.Scheme != f.scheme {
				t.Fatalf("bag %+v", bag)
			}
			kdks, err := b.Open([]byte(f.password))
			if err != nil {
				t.Fatal(err)
			}
			if len(kdks) != 1 || kdks[0].ID.String() != f.id || hex.EncodeToString(kdks[0].Key) != f.key {
				t.Fatalf("got %s %x", kdks[0].ID, kdks[0].Key)
			}
			for _, wrong := range []string{"secret124", "x", "Secret123"} {
				if _, err := b.Open([]byte(wrong)); !errors.Is(err, keysafe.ErrWrongKey) {
					t.Fatalf("password %q: %v, want ErrWrongKey", wrong, err)
				}
			}
		})
	}
	// The empty-password file opens with exactly the Java encoding (00 00);
	// the OpenSSL NULL variant must not be what made it work.
	b, _ := ParseBytes(readFixture(t, "java-empty-password.p12"))
	if !b.mac.verify([]byte{0, 0}, b.authSafe) {
		t.Fatal("Java's empty password is not the BMP terminator 00 00")
	}
}

// TestPrivateKeyInfoMatchesJava: the PKCS#8 plaintext Marshal encrypts is
// byte for byte what keytool encrypted.
func TestPrivateKeyInfoMatchesJava(t *testing.T) {
	b, err := ParseBytes(readFixture(t, "keytool-modern.p12"))
	if err != nil {
		t.Fatal(err)
	}
	bag := b.Containers[0].Bags[0]
	pki, err := bag.pbe.decrypt([]byte("secret123"), bmpPassword([]byte("secret123")), bag.sealed)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := hex.DecodeString(fixtures[0].key)
	if !bytes.Equal(pki, privateKeyInfo(key)) {
		t.Fatalf("Java PKCS#8 %x\nvmcrypt     %x", pki, privateKeyInfo(key))
	}
}

func newTestKDK(t testing.TB, provider string) *KDK {
	k, err := NewKDK(provider)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestMarshalRoundTrip(t *testing.T) {
	for _, pw := range []string{"", "pässwörd 🔑", "secret123"} {
		for _, prov := range []string{"", "nkp-prod"} {
			k := newTestKDK(t, prov)
			raw, err := Marshal(k, []byte(pw), &WriteOptions{Iterations: 1000})
			if err != nil {
				t.Fatal(err)
			}
			b, err := ParseBytes(raw)
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Open([]byte(pw))
			if err != nil {
				t.Fatalf("pw %q: %v", pw, err)
			}
			if got[0].ID != k.ID || !bytes.Equal(got[0].Key, k.Key) || got[0].Provider != prov {
				t.Fatalf("round trip: %+v vs %+v", got[0], k)
			}
			if _, err := b.Open([]byte(pw + "x")); !errors.Is(err, keysafe.ErrWrongKey) {
				t.Fatalf("wrong password: %v", err)
			}
		}
	}
}

// TestDeterministicWrite: with a seeded Rand and a fixed Time, Marshal and
// WrapRand give the same bytes every run (fixtures rely on it).
func TestDeterministicWrite(t *testing.T) {
	k := &KDK{ID: UUID{1, 2, 3}, Key: bytes.Repeat([]byte{7}, 32), Provider: "p"}
	seeded := func() *bytes.Reader { return bytes.NewReader(bytes.Repeat([]byte{9, 8, 7}, 40)) }
	opt := func() *WriteOptions {
		return &WriteOptions{Iterations: 10, Time: time.Unix(1700000000, 0), Rand: seeded()}
	}
	a, err := Marshal(k, []byte("pw"), opt())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Marshal(k, []byte("pw"), opt())
	if !bytes.Equal(a, b) {
		t.Fatal("Marshal with the same Rand and Time differs")
	}
	ka, _ := k.WrapRand(bytes.Repeat([]byte{1}, 32), seeded())
	kb, _ := k.WrapRand(bytes.Repeat([]byte{1}, 32), seeded())
	if ka.String() != kb.String() {
		t.Fatal("WrapRand with the same stream differs")
	}
	if kek, err := k.Unwrap(ka); err != nil || !bytes.Equal(kek, bytes.Repeat([]byte{1}, 32)) {
		t.Fatal(err)
	}
}

// TestTruncation: every cut point of a backup is ErrCorrupt, never a wrong
// password and never a KDK; so are trailing bytes.
func TestTruncation(t *testing.T) {
	k := newTestKDK(t, "p")
	raw, err := Marshal(k, []byte("pw"), &WriteOptions{Iterations: 1})
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(raw); n++ {
		b, err := ParseBytes(raw[:n])
		if err == nil {
			_, err = b.Open([]byte("pw"))
		}
		if !errors.Is(err, keysafe.ErrCorrupt) {
			t.Fatalf("cut at %d of %d: %v, want ErrCorrupt", n, len(raw), err)
		}
	}
	for _, extra := range [][]byte{{0}, {0x30, 0}, []byte("junk")} {
		if _, err := ParseBytes(append(append([]byte(nil), raw...), extra...)); !errors.Is(err, keysafe.ErrCorrupt) {
			t.Fatalf("trailing %x: %v", extra, err)
		}
	}
}

// TestFlipEveryByte flips each byte of a backup. Inside the encrypted key
// entry (its PBES2 parameters and ciphertext) a flip cannot be told from a
// wrong password: ErrWrongKey, ErrCorrupt or ErrUnsupported. Everywhere
// else it must be ErrCorrupt or ErrUnsupported, never ErrWrongKey, and
// never a success.
func TestFlipEveryByte(t *testing.T) {
	k := newTestKDK(t, "p")
	raw, err := Marshal(k, []byte("pw"), &WriteOptions{Iterations: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := ParseBytes(raw)
	bag := b.Containers[0].Bags[0]
	start := bytes.Index(raw, bag.pbe.salt) - 64 // the EncryptedPrivateKeyInfo begins shortly before the salt
	stop := bytes.Index(raw, bag.sealed) + len(bag.sealed)
	if start < 0 || stop < start {
		t.Fatal("cannot locate the key entry")
	}
	for i := range raw {
		for _, x := range []byte{0x01, 0x80} {
			c := append([]byte(nil), raw...)
			c[i] ^= x
			var kdks []KDK
			pb, err := ParseBytes(c)
			if err == nil {
				kdks, err = pb.Open([]byte("pw"))
			}
			if err == nil {
				// A flip the DER cannot see (e.g. a BMP char of the alias
				// making another valid UUID) still breaks the MAC.
				t.Fatalf("flip %#x at %d: opened %v", x, i, kdks[0].ID)
			}
			inEntry := i >= start && i < stop
			switch {
			case errors.Is(err, keysafe.ErrCorrupt), errors.Is(err, keysafe.ErrUnsupported):
			case errors.Is(err, keysafe.ErrWrongKey) && inEntry:
			default:
				t.Fatalf("flip %#x at %d (entry %d..%d): %v", x, i, start, stop, err)
			}
		}
	}
}

// buildBackup assembles a backup with the given iteration counts and no
// real crypto (the caps must refuse it before any KDF work).
func buildBackup(pbkdf2Iter, macIter int) []byte {
	salt := make([]byte, 20)
	pbes2 := seq(mustOID(oidPBES2), seq(
		seq(mustOID(oidPBKDF2), seq(octet(salt), integer(pbkdf2Iter), integer(32), seq(mustOID(oidHMACWithSHA256), []byte{5, 0}))),
		seq(mustOID(oidAES256CBC), octet(make([]byte, 16)))))
	bag := seq(mustOID(oidSecretBag), explicit0(seq(mustOID(oidShroudedKeyBag), explicit0(octet(seq(pbes2, octet(make([]byte, 64))))))),
		set(seq(mustOID(oidFriendlyName), set(bmpString("ec41612e-cc4c-5386-a3a5-f24b43d97d01")))))
	authSafe := seq(seq(mustOID(oidData), explicit0(octet(seq(bag)))))
	mac := seq(seq(seq(mustOID(oidSHA256), []byte{5, 0}), octet(make([]byte, 32))), octet(salt), integer(macIter))
	return seq(integer(3), seq(mustOID(oidData), explicit0(octet(authSafe))), mac)
}

func TestIterationCap(t *testing.T) {
	for _, c := range []struct{ kdf, mac int }{
		{MaxIterations + 1, 1}, {1, MaxIterations + 1}, {1 << 30, 1}, {1, 1<<31 - 1}, {1, 1 << 40},
	} {
		start := time.Now()
		_, err := ParseBytes(buildBackup(c.kdf, c.mac))
		if !errors.Is(err, keysafe.ErrUnsupported) {
			t.Fatalf("%+v: %v, want ErrUnsupported", c, err)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("%+v: refusal took %v: KDF work was done", c, d)
		}
	}
	// At the cap itself the structure parses (the work is the caller's choice).
	if _, err := ParseBytes(buildBackup(MaxIterations, MaxIterations)); err != nil {
		t.Fatal(err)
	}
	// And a well-formed file of low counts with a zeroed MAC is a wrong password.
	b, err := ParseBytes(buildBackup(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(nil); !errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("zero MAC: %v", err)
	}
}

// TestTotalIterationCap: each count under MaxIterations but many entries
// at it would keep Open busy for an hour; the total is refused as
// unsupported before any KDF work, in Parse for what it sees and in Open
// for the key entries of an encrypted container.
func TestTotalIterationCap(t *testing.T) {
	salt := make([]byte, 20)
	shrouded := func(it int) []byte {
		pbes2 := seq(mustOID(oidPBES2), seq(
			seq(mustOID(oidPBKDF2), seq(octet(salt), integer(it), integer(32), seq(mustOID(oidHMACWithSHA256), []byte{5, 0}))),
			seq(mustOID(oidAES256CBC), octet(make([]byte, 16)))))
		return seq(mustOID(oidShroudedKeyBag), explicit0(seq(pbes2, octet(make([]byte, 64)))),
			set(seq(mustOID(oidFriendlyName), set(bmpString("ec41612e-cc4c-5386-a3a5-f24b43d97d01")))))
	}
	n := MaxTotalIterations/MaxIterations + 1
	var bags [][]byte
	for range n {
		bags = append(bags, shrouded(MaxIterations))
	}
	pw := []byte("pw")
	start := time.Now()
	authSafe := seq(seq(mustOID(oidData), explicit0(octet(seq(bags...)))))
	if _, err := ParseBytes(pfx(authSafe, pw, salt, 1)); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("%d entries at the cap: %v, want ErrUnsupported", n, err)
	}
	// The same entries inside an encrypted container: only Open sees them.
	alg, ct, err := pbes2Encrypt(pw, seq(bags...), salt, make([]byte, 16), 1)
	if err != nil {
		t.Fatal(err)
	}
	ed := seq(integer(0), seq(mustOID(oidData), alg, der(2, 0, false, ct)))
	authSafe = seq(seq(mustOID(oidEncryptedData), explicit0(ed)))
	b, err := ParseBytes(pfx(authSafe, pw, salt, 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(pw); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("encrypted container: %v, want ErrUnsupported", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("refusals took %v: KDF work was done", d)
	}
	// Two entries fewer are within the total and parse.
	authSafe = seq(seq(mustOID(oidData), explicit0(octet(seq(bags[2:]...)))))
	if _, err := ParseBytes(pfx(authSafe, pw, salt, 1)); err != nil {
		t.Fatal(err)
	}
	// With HMAC-SHA1, PBKDF2 runs two passes for a 32-byte key: the same
	// three entries are twice the work, over the total.
	sha1Bag := func(it int) []byte {
		pbes2 := seq(mustOID(oidPBES2), seq(
			seq(mustOID(oidPBKDF2), seq(octet(salt), integer(it), integer(32), seq(mustOID(asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}), []byte{5, 0}))),
			seq(mustOID(oidAES256CBC), octet(make([]byte, 16)))))
		return seq(mustOID(oidShroudedKeyBag), explicit0(seq(pbes2, octet(make([]byte, 64)))),
			set(seq(mustOID(oidFriendlyName), set(bmpString("ec41612e-cc4c-5386-a3a5-f24b43d97d01")))))
	}
	three := seq(sha1Bag(MaxIterations), sha1Bag(MaxIterations), sha1Bag(MaxIterations))
	authSafe = seq(seq(mustOID(oidData), explicit0(octet(three))))
	if _, err := ParseBytes(pfx(authSafe, pw, salt, 1)); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("three HMAC-SHA1 entries at the cap: %v, want ErrUnsupported", err)
	}
}

// TestIndefiniteLength: a BER indefinite-length PFX is refused as
// unsupported, not corrupt and never as a wrong password.
func TestIndefiniteLength(t *testing.T) {
	if _, err := ParseBytes([]byte{0x30, 0x80, 0x02, 0x01, 0x03, 0x00, 0x00}); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("indefinite length: %v", err)
	}
}

func TestSizeCap(t *testing.T) {
	big := make([]byte, MaxBackupSize+1)
	if _, err := Parse(bytes.NewReader(big), int64(len(big))); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("oversized: %v", err)
	}
}

// realKeyID is the 105-byte key id of vectors/keylocators.txt (a vSphere
// NKP-backed fqid locator).
func realKeyID(t testing.TB) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(vectors, "keylocators.txt"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	i := strings.Index(s, "fqid/<VMWARE-NULL>/local/")
	if i < 0 {
		t.Fatal("vector not found")
	}
	s = s[i+len("fqid/<VMWARE-NULL>/local/"):]
	s = s[:strings.IndexByte(s, ',')]
	id, err := url.PathUnescape(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRealKeyID(t *testing.T) {
	s := realKeyID(t)
	k, err := ParseKeyIDString(s)
	if err != nil {
		t.Fatal(err)
	}
	if k.KDKID.String() != "ec41612e-cc4c-5386-a3a5-f24b43d97d01" || k.Param != 100000 {
		t.Fatalf("parsed %s param %d", k.KDKID, k.Param)
	}
	if k.String() != s {
		t.Fatalf("round trip %s", k.String())
	}
	// keytool-modern.p12's KDK carries the same id but is not the real KDK:
	// the tag fails under the right id, which is a damaged key id or KDK.
	b, _ := ParseBytes(readFixture(t, "keytool-modern.p12"))
	kdks, err := b.Open([]byte("secret123"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kdks[0].Unwrap(k); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("same id, other KDK: %v", err)
	}
	// Another KDK: key not found, naming the KDK needed.
	other := newTestKDK(t, "")
	_, err = other.Unwrap(k)
	var nf *keysafe.KeyNotFoundError
	if !errors.As(err, &nf) || !strings.Contains(nf.Hint, "ec41612e-cc4c-5386-a3a5-f24b43d97d01") {
		t.Fatalf("other KDK: %v", err)
	}
}

func TestWrapUnwrap(t *testing.T) {
	kdk := newTestKDK(t, "")
	kek := make([]byte, 32)
	rand.Read(kek)
	k, err := kdk.Wrap(kek)
	if err != nil {
		t.Fatal(err)
	}
	raw := k.Bytes()
	if len(raw) != KeyIDSize {
		t.Fatal(len(raw))
	}
	back, err := ParseKeyIDString(k.String())
	if err != nil {
		t.Fatal(err)
	}
	got, err := kdk.Unwrap(back)
	if err != nil || !bytes.Equal(got, kek) {
		t.Fatalf("unwrap: %v", err)
	}
	// Every single-byte change is refused: header fields as a non-NKP id
	// (ErrCorrupt), the KDK id as another KDK (ErrKeyNotFound), the AAD,
	// IV, wrapped key and tag as a failed tag (ErrCorrupt), the param is
	// outside the AAD and so is accepted.
	for i := 0; i < KeyIDSize; i++ {
		c := append([]byte(nil), raw...)
		c[i] ^= 0x04
		pk, err := ParseKeyID(c)
		if err == nil {
			_, err = kdk.Unwrap(pk)
		}
		switch {
		case i >= offKDKID && i < offLens:
			if !errors.Is(err, keysafe.ErrKeyNotFound) {
				t.Fatalf("byte %d: %v", i, err)
			}
		case i >= KeyIDSize-paramSize:
			if err != nil {
				t.Fatalf("param byte %d: %v", i, err)
			}
		default:
			if !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatalf("byte %d: %v", i, err)
			}
		}
	}
	for _, bad := range []string{"", "!!", strings.Repeat("A", 200), k.String()[:100]} {
		if _, err := ParseKeyIDString(bad); !errors.Is(err, keysafe.ErrCorrupt) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
}

// --- peers: keytool, openssl, java. They must be installed (make peers). ---

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `make peers` (peer tests never skip)", name)
	}
	return p
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(needTool(t, name), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// javaRead reads a keystore with the JDK's own PKCS12 KeyStore (KS.java)
// and returns "alias keyhex" lines.
func javaRead(t *testing.T, file, password string) string {
	t.Helper()
	if password == "" {
		password = "-"
	}
	ks, _ := filepath.Abs(filepath.Join("testdata", "KS.java"))
	out := run(t, "java", ks, "read", file, password)
	return strings.ReplaceAll(strings.TrimSpace(out), " AES ", " ")
}

// TestKeytoolWritesVmcryptReads: fresh backups from keytool -genseckey
// (modern, -J-Dkeystore.pkcs12.legacy, and without a MAC) open, with the
// KDK the JDK reads.
func TestKeytoolWritesVmcryptReads(t *testing.T) {
	dir := t.TempDir()
	for _, v := range []struct {
		jflag, scheme string
		mac           bool
	}{
		{"", "PBES2", true},
		{"-J-Dkeystore.pkcs12.legacy", "pbeWithSHAAnd3-KeyTripleDES-CBC", true},
		{"-J-Dkeystore.pkcs12.macAlgorithm=NONE", "PBES2", false},
		{"-J-Dkeystore.pkcs12.macAlgorithm=HmacPBESHA512/256", "PBES2", true},
		{"-J-Dkeystore.pkcs12.macAlgorithm=HmacPBESHA512/224", "PBES2", true},
	} {
		id := newTestKDK(t, "").ID.String()
		f := filepath.Join(dir, id+".p12")
		args := []string{"-genseckey", "-keyalg", "AES", "-keysize", "256", "-storetype", "PKCS12",
			"-alias", id, "-keystore", f, "-storepass", "Pa55word!", "-keypass", "Pa55word!"}
		if v.jflag != "" {
			args = append([]string{v.jflag}, args...)
		}
		run(t, "keytool", args...)
		raw, _ := os.ReadFile(f)
		b, err := ParseBytes(raw)
		if err != nil {
			t.Fatal(err)
		}
		if (b.MAC != nil) != v.mac || b.Containers[0].Bags[0].Encryption.Scheme != v.scheme {
			t.Fatalf("%s: MAC %+v, scheme %s", v.jflag, b.MAC, b.Containers[0].Bags[0].Encryption.Scheme)
		}
		kdks, err := b.Open([]byte("Pa55word!"))
		if err != nil {
			t.Fatal(v.jflag, err)
		}
		if got, want := kdks[0].ID.String()+" "+hex.EncodeToString(kdks[0].Key), javaRead(t, f, "Pa55word!"); got != want {
			t.Fatalf("%s: vmcrypt %q, JDK %q", v.jflag, got, want)
		}
		// Without a MAC the entry's padding and structure catch a wrong password.
		if _, err := b.Open([]byte("Pa55word?")); !errors.Is(err, keysafe.ErrWrongKey) {
			t.Fatalf("%s wrong password: %v", v.jflag, err)
		}
	}
	// A legacy store that also holds a certificate in an RC2-40 container
	// (which vmcrypt does not decrypt): the right password opens the KDK,
	// a wrong one is a wrong password (the MAC says so), not "unsupported".
	id := newTestKDK(t, "").ID.String()
	legacy := filepath.Join(dir, "legacy-cert.p12")
	run(t, "keytool", "-J-Dkeystore.pkcs12.legacy", "-genseckey", "-keyalg", "AES", "-keysize", "256", "-storetype", "PKCS12",
		"-alias", id, "-keystore", legacy, "-storepass", "Pa55word!")
	certStore, cert := filepath.Join(dir, "cert.p12"), filepath.Join(dir, "cert.pem")
	run(t, "keytool", "-genkeypair", "-keyalg", "EC", "-alias", "ca", "-dname", "CN=ca", "-storetype", "PKCS12",
		"-keystore", certStore, "-storepass", "Pa55word!")
	run(t, "keytool", "-exportcert", "-rfc", "-alias", "ca", "-keystore", certStore, "-storepass", "Pa55word!", "-file", cert)
	run(t, "keytool", "-J-Dkeystore.pkcs12.legacy", "-importcert", "-noprompt", "-alias", "ca", "-file", cert,
		"-storetype", "PKCS12", "-keystore", legacy, "-storepass", "Pa55word!")
	raw, _ := os.ReadFile(legacy)
	lb, err := ParseBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	if kdks, err := lb.Open([]byte("Pa55word!")); err != nil || kdks[0].ID.String() != id {
		t.Fatalf("legacy store with a certificate: %v", err)
	}
	if _, err := lb.Open([]byte("Pa55word?")); !errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("legacy store with a certificate, wrong password: %v", err)
	}
	// An alias that is not a UUID is not a KDK id: unsupported, not a KDK.
	f := filepath.Join(dir, "mykey.p12")
	run(t, "keytool", "-genseckey", "-keyalg", "AES", "-keysize", "256", "-storetype", "PKCS12",
		"-alias", "mykey", "-keystore", f, "-storepass", "Pa55word!", "-keypass", "Pa55word!")
	raw, _ = os.ReadFile(f)
	b, err := ParseBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open([]byte("Pa55word!")); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("alias mykey: %v", err)
	}
}

// TestVmcryptWritesPeersRead: keytool -list lists vmcrypt's backups,
// openssl pkcs12 verifies their MAC and the JDK reads back the same KDK,
// with a password and with the empty password.
func TestVmcryptWritesPeersRead(t *testing.T) {
	dir := t.TempDir()
	for _, pw := range []string{"Pa55word!", ""} {
		k := newTestKDK(t, "nkp-1")
		raw, err := Marshal(k, []byte(pw), nil)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, k.ID.String()+".p12")
		if err := os.WriteFile(f, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		if pw != "" { // keytool cannot take an empty -storepass
			out := run(t, "keytool", "-list", "-storetype", "PKCS12", "-keystore", f, "-storepass", pw)
			if !strings.Contains(out, k.ID.String()+",") || !strings.Contains(out, "SecretKeyEntry") {
				t.Fatalf("keytool -list:\n%s", out)
			}
		}
		out := run(t, "openssl", "pkcs12", "-info", "-nokeys", "-nocerts", "-in", f, "-passin", "pass:"+pw)
		if !strings.Contains(out, "MAC: sha256, Iteration 10000") || !strings.Contains(out, "friendlyName: "+k.ID.String()) {
			t.Fatalf("openssl:\n%s", out)
		}
		// openssl must reject a wrong password (proves it checked the MAC).
		if out, err := exec.Command("openssl", "pkcs12", "-info", "-nokeys", "-nocerts", "-in", f, "-passin", "pass:wrong").CombinedOutput(); err == nil {
			t.Fatalf("openssl accepted a wrong password:\n%s", out)
		}
		if got, want := javaRead(t, f, pw), k.ID.String()+" "+hex.EncodeToString(k.Key); got != want {
			t.Fatalf("JDK read %q, want %q", got, want)
		}
	}
}
