package kit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

const testJSON = `[{"provider": "KMS", "keyId": "44", "key": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}]`

var testPass = []byte("correct horse battery staple")

func sealT(t testing.TB, plain, pass []byte) []byte {
	t.Helper()
	b, err := Seal(plain, pass, &SealOptions{LogN: MinLogN})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noKDF fails the test when key work is done: the refusals below must
// come before it.
func noKDF(t *testing.T) kdf {
	return func([]byte, []byte, int) ([]byte, error) {
		t.Fatal("key derivation ran on a kit that should have been refused first")
		return nil, nil
	}
}

func TestSealOpen(t *testing.T) {
	sealed := sealT(t, []byte(testJSON), testPass)
	if !IsSealed(sealed) || !strings.HasPrefix(string(sealed), Magic+"\nscrypt 10 8 1 ") {
		t.Fatalf("header: %q", sealed[:40])
	}
	got, err := Open(sealed, testPass, nil)
	if err != nil || string(got) != testJSON {
		t.Fatalf("Open: %q, %v", got, err)
	}
	// Two seals of the same plaintext differ (fresh salt).
	if again := sealT(t, []byte(testJSON), testPass); bytes.Equal(again, sealed) {
		t.Fatal("two seals are identical: the salt is not fresh")
	}
	if IsSealed([]byte(testJSON)) {
		t.Fatal("a KEK JSON file is taken for a sealed kit")
	}
}

func TestSealRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		plain, pass []byte
		logN        int
	}{
		"empty passphrase": {[]byte(testJSON), nil, MinLogN},
		"empty plaintext":  {nil, testPass, MinLogN},
		"too large":        {make([]byte, MaxPayload+1), testPass, MinLogN},
		"work too low":     {[]byte(testJSON), testPass, MinLogN - 1},
		"work too high":    {[]byte(testJSON), testPass, MaxLogN + 1},
	} {
		if _, err := Seal(c.plain, c.pass, &SealOptions{LogN: c.logN}); err == nil {
			t.Errorf("%s: sealed", name)
		}
	}
}

// TestWrongPassphrase: another passphrase (one byte off, a prefix, empty)
// is ErrWrongKey, never corrupt.
func TestWrongPassphrase(t *testing.T) {
	sealed := sealT(t, []byte(testJSON), testPass)
	off := append([]byte(nil), testPass...)
	off[0] ^= 1
	for _, p := range [][]byte{off, testPass[:len(testPass)-1], nil, append(append([]byte(nil), testPass...), '\n')} {
		_, err := Open(sealed, p, nil)
		if !errors.Is(err, keysafe.ErrWrongKey) || !errors.Is(err, ErrWrongPassphrase) || errors.Is(err, keysafe.ErrCorrupt) {
			t.Errorf("passphrase %q: %v, want a wrong key", p, err)
		}
	}
}

// TestEveryByteFlipped: flipping any one byte never opens. In the
// ciphertext it is damage (ErrCorrupt), never a wrong passphrase: the
// header MAC proved the passphrase. In the header it is damage, an
// unsupported field, or (salt, work factor, length, MAC changed to other
// valid values) a MAC that no longer verifies.
func TestEveryByteFlipped(t *testing.T) {
	// The KDF is the fuzz target's stand-in: this test is about reading
	// the bytes, and runs hundreds of opens.
	sealed, err := seal([]byte(testJSON), testPass, MinLogN, bytes.Repeat([]byte{3}, SaltLen), fastKDF)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := ParseHeader(sealed)
	if err != nil {
		t.Fatal(err)
	}
	hdrLen := len(h.all)
	for i := range sealed {
		b := append([]byte(nil), sealed...)
		b[i] ^= 0x01
		_, err := open(b, testPass, MaxLogN, func(p, s []byte, logN int) ([]byte, error) {
			if logN > MinLogN+1 {
				t.Fatalf("byte %d: work factor %d reached the KDF", i, logN)
			}
			return fastKDF(p, s, logN)
		})
		switch {
		case err == nil:
			t.Fatalf("byte %d flipped: opened", i)
		case i >= hdrLen:
			if !errors.Is(err, keysafe.ErrCorrupt) || errors.Is(err, keysafe.ErrWrongKey) {
				t.Fatalf("ciphertext byte %d flipped: %v, want corrupt", i, err)
			}
		default:
			if !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) && !errors.Is(err, keysafe.ErrWrongKey) {
				t.Fatalf("header byte %d flipped: %v", i, err)
			}
		}
	}
	// With scrypt itself: one flipped ciphertext byte is corrupt.
	real := sealT(t, []byte(testJSON), testPass)
	real[len(real)-1] ^= 0x80
	if _, err := Open(real, testPass, nil); !errors.Is(err, keysafe.ErrCorrupt) || errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("a flipped tag byte: %v, want corrupt", err)
	}
}

// TestTruncated: every truncation and any extra byte is corrupt, found
// before any key work.
func TestTruncated(t *testing.T) {
	sealed := sealT(t, []byte(testJSON), testPass)
	for n := 0; n < len(sealed); n++ {
		if _, err := open(sealed[:n], testPass, MaxLogN, noKDF(t)); !errors.Is(err, keysafe.ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: %v, want corrupt", n, err)
		}
	}
	if _, err := open(append(append([]byte(nil), sealed...), 0), testPass, MaxLogN, noKDF(t)); !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("an extra byte: %v, want corrupt", err)
	}
}

// TestHostileHeaders: work factors and scrypt parameters beyond the caps
// are unsupported and refused before any key work; malformed numbers,
// salts and MACs are corrupt, with the field named.
func TestHostileHeaders(t *testing.T) {
	sealed := sealT(t, []byte(testJSON), testPass)
	h, ct, err := ParseHeader(sealed)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(h.all), "\n")
	salt := strings.Fields(lines[1])[4]
	mk := func(l1, l2, l3 string) []byte {
		return []byte(lines[0] + l1 + l2 + l3 + string(ct))
	}
	cases := []struct {
		name  string
		data  []byte
		want  error
		field string
	}{
		{"logN 63", mk("scrypt 63 8 1 "+salt+"\n", lines[2], lines[3]), keysafe.ErrUnsupported, "scrypt work factor"},
		{"logN 21", mk("scrypt 21 8 1 "+salt+"\n", lines[2], lines[3]), keysafe.ErrUnsupported, "scrypt work factor"},
		{"logN 9", mk("scrypt 9 8 1 "+salt+"\n", lines[2], lines[3]), keysafe.ErrUnsupported, "scrypt work factor"},
		{"huge logN", mk("scrypt 99999999999999999999 8 1 "+salt+"\n", lines[2], lines[3]), keysafe.ErrCorrupt, "scrypt work factor"},
		{"r 1073741823", mk("scrypt 10 1073741823 1 "+salt+"\n", lines[2], lines[3]), keysafe.ErrUnsupported, "scrypt r"},
		{"p 16", mk("scrypt 10 8 16 "+salt+"\n", lines[2], lines[3]), keysafe.ErrUnsupported, "scrypt p"},
		{"leading zero", mk("scrypt 010 8 1 "+salt+"\n", lines[2], lines[3]), keysafe.ErrCorrupt, "scrypt work factor"},
		{"plus sign", mk("scrypt +10 8 1 "+salt+"\n", lines[2], lines[3]), keysafe.ErrCorrupt, "scrypt work factor"},
		{"short salt", mk("scrypt 10 8 1 AAAA\n", lines[2], lines[3]), keysafe.ErrCorrupt, "salt"},
		{"salt of 18 bytes", mk("scrypt 10 8 1 "+strings.Repeat("A", 24)+"\n", lines[2], lines[3]), keysafe.ErrCorrupt, "salt"},
		{"unpadded salt", mk("scrypt 10 8 1 "+strings.TrimRight(salt, "=")+"\n", lines[2], lines[3]), keysafe.ErrCorrupt, "salt"},
		{"two spaces", mk("scrypt  10 8 1 "+salt+"\n", lines[2], lines[3]), keysafe.ErrCorrupt, "scrypt line"},
		{"CRLF", mk("scrypt 10 8 1 "+salt+"\r\n", lines[2], lines[3]), keysafe.ErrCorrupt, "salt"},
		{"huge length", mk(lines[1], "chacha20poly1305 999999999\n", lines[3]), keysafe.ErrCorrupt, "length"},
		{"zero length", mk(lines[1], "chacha20poly1305 0\n", lines[3]), keysafe.ErrCorrupt, "length"},
		{"negative length", mk(lines[1], "chacha20poly1305 -5\n", lines[3]), keysafe.ErrCorrupt, "length"},
		{"other cipher", mk(lines[1], "aes-gcm 110\n", lines[3]), keysafe.ErrCorrupt, "cipher line"},
		{"short MAC", mk(lines[1], lines[2], "--- AAAA\n"), keysafe.ErrCorrupt, "MAC"},
		{"no MAC line", mk(lines[1], lines[2], ""), keysafe.ErrCorrupt, "MAC line"},
		{"long line", mk("scrypt 10 8 1 "+strings.Repeat("A", 200)+"\n", lines[2], lines[3]), keysafe.ErrCorrupt, "scrypt line"},
		{"version 2", []byte("vmcrypt-kit/v2\n" + lines[1] + lines[2] + lines[3] + string(ct)), keysafe.ErrUnsupported, "version"},
		{"not a kit", []byte(testJSON), keysafe.ErrCorrupt, "magic"},
		{"too large", append([]byte(Magic+"\n"), make([]byte, MaxSealedSize)...), keysafe.ErrUnsupported, "size"},
	}
	for _, c := range cases {
		_, err := open(c.data, testPass, MaxLogN, noKDF(t))
		var fe *FormatError
		if !errors.Is(err, c.want) || !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: %v, want %v in field %q", c.name, err, c.want, c.field)
		}
	}
	// A reader's lower cap refuses a kit above it before any work.
	strong, err := Seal([]byte(testJSON), testPass, &SealOptions{LogN: 12})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open(strong, testPass, 11, noKDF(t)); !errors.Is(err, keysafe.ErrUnsupported) {
		t.Fatalf("work factor 12 under a cap of 11: %v", err)
	}
	if got, err := Open(strong, testPass, &OpenOptions{MaxLogN: 12}); err != nil || string(got) != testJSON {
		t.Fatalf("work factor 12 under a cap of 12: %v", err)
	}
}

// TestGoldenKit: a kit sealed by this version (testdata/v1.kit, see
// testdata/SOURCES) still opens to the same bytes: the format is pinned.
func TestGoldenKit(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "v1.kit"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(data, []byte("vmcrypt golden kit"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != goldenSHA256 || string(got) != testJSON {
		t.Fatalf("golden kit opens to %q", got)
	}
}

const goldenSHA256 = "bc7f98a7112907ff0f6e4e2b7331e8771b609d1c3830598df3ee57a1ef461632"

// TestPythonPeer: python3-cryptography, following docs/formats.md §17
// alone (testdata/kit.py), opens kits vmcrypt seals, refusing a wrong
// passphrase (its exit 3) and a flipped ciphertext byte (exit 5); vmcrypt
// opens kits the peer seals, byte for byte the same as its own seal with
// the same salt.
func TestPythonPeer(t *testing.T) {
	py := "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import cryptography.hazmat.primitives.kdf.scrypt").CombinedOutput(); err != nil {
		t.Fatalf("the peer needs python3-cryptography (apt-get install python3-cryptography): %v %s", err, out)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pass := write("pass", testPass)
	wrong := write("wrong", []byte("not it"))
	sealed := sealT(t, []byte(testJSON), testPass)
	kitFile := write("kit", sealed)
	out, err := exec.Command(py, "testdata/kit.py", "open", kitFile, pass).Output()
	if err != nil || string(out) != testJSON {
		t.Fatalf("the peer does not open vmcrypt's kit: %v %q", err, out)
	}
	exitOf := func(err error) int {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		return -1
	}
	if _, err := exec.Command(py, "testdata/kit.py", "open", kitFile, wrong).Output(); exitOf(err) != 3 {
		t.Fatalf("the peer with a wrong passphrase: %v", err)
	}
	flipped := append([]byte(nil), sealed...)
	flipped[len(flipped)-20] ^= 0x80
	if _, err := exec.Command(py, "testdata/kit.py", "open", write("flipped", flipped), pass).Output(); exitOf(err) != 5 {
		t.Fatalf("the peer with a flipped byte: %v", err)
	}

	salt := bytes.Repeat([]byte{0x5a}, SaltLen)
	theirs, err := exec.Command(py, "testdata/kit.py", "seal", write("plain", []byte(testJSON)), pass, "10", hex.EncodeToString(salt)).Output()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Open(theirs, testPass, nil)
	if err != nil || string(got) != testJSON {
		t.Fatalf("vmcrypt does not open the peer's kit: %v", err)
	}
	ours, err := seal([]byte(testJSON), testPass, 10, salt, scryptKDF)
	if err != nil || !bytes.Equal(ours, theirs) {
		t.Fatalf("same salt, different kits:\n%q\n%q", ours, theirs)
	}
}
