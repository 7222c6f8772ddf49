package keysafe

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const vectors = "../testdata/vectors/"

func readVector(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(vectors + name)
	if err != nil {
		t.Fatalf("vector %s: %v", name, err)
	}
	return string(b)
}

// vmxKeySafe pulls encryption.keySafe out of a vector VMX (package vmx has
// the real parser; this avoids an import cycle).
func vmxKeySafe(t testing.TB, name string) *Locator {
	t.Helper()
	m := regexp.MustCompile(`(?m)^encryption\.keySafe = "([^"]*)"`).FindStringSubmatch(readVector(t, name))
	if m == nil {
		t.Fatalf("%s: no key safe", name)
	}
	l, err := Parse(m[1])
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if l.String() != m[1] {
		t.Fatalf("%s: key safe does not round-trip:\n got %s\nwant %s", name, l.String(), m[1])
	}
	return l
}

type locatorVector struct {
	kind, in, want string
}

// locatorVectors reads vectors/keylocators.txt (govmomi's tests and a
// vCenter event).
func locatorVectors(t testing.TB) []locatorVector {
	var out []locatorVector
	sc := bufio.NewScanner(strings.NewReader(readVector(t, "keylocators.txt")))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		kind, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		in, want, ok := strings.Cut(rest, "  =>  ")
		if !ok {
			want = in
		}
		out = append(out, locatorVector{kind, in, want})
	}
	if len(out) < 20 {
		t.Fatalf("only %d locator vectors", len(out))
	}
	return out
}

func TestLocatorVectors(t *testing.T) {
	for _, v := range locatorVectors(t) {
		l, err := Parse(v.in)
		switch v.kind {
		case "ok":
			if err != nil {
				t.Errorf("Parse(%s): %v", v.in, err)
				continue
			}
			if got := l.String(); got != v.want {
				t.Errorf("Parse(%s).String()\n got %s\nwant %s", v.in, got, v.want)
			}
		case "ok-unescaped":
			if err != nil {
				t.Errorf("Parse(%s): %v", v.in, err)
				continue
			}
			ps := l.Pairs()
			if len(ps) != 1 || ps[0].Locker.Type != TypeFQID || ps[0].Locker.KeyServerID != "KMS" ||
				ps[0].Locker.KeyID != "a4e7494f-da55-4917-9d90-560c5078866b" || len(ps[0].Locked) != 288 ||
				ps[0].Locker.UniqueID != NullField || ps[0].MAC != MACSHA256 {
				t.Errorf("unescaped vCenter bundle parsed wrong: %+v", ps)
			}
			// Canonical output parses to the same thing and is stable.
			l2, err := Parse(l.String())
			if err != nil || l2.String() != l.String() {
				t.Errorf("canonical form of the unescaped bundle does not re-parse: %v", err)
			}
		case "err":
			if err == nil {
				t.Errorf("Parse(%s) accepted, want error", v.in)
			} else if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Parse(%s) = %v, want ErrCorrupt", v.in, err)
			}
		default:
			t.Fatalf("unknown vector kind %q", v.kind)
		}
	}
}

func TestLongPair(t *testing.T) {
	var long string
	for _, v := range locatorVectors(t) {
		if strings.Contains(v.in, "HMAC%2dSHA%2d256") {
			long = v.in
		}
	}
	l, err := Parse(long)
	if err != nil {
		t.Fatal(err)
	}
	if l.Type != TypeList || len(l.List) != 1 || l.List[0].Type != TypePair {
		t.Fatalf("root is not a list of one pair: %+v", l)
	}
	p := l.Pairs()[0]
	lk := p.Locker
	if lk.Type != TypeFQID || lk.UniqueID != NullField || lk.KeyServerID != "local" {
		t.Fatalf("locker %+v", lk)
	}
	kid, err := base64.StdEncoding.DecodeString(lk.KeyID)
	if err != nil || len(kid) != 105 || len(lk.KeyID) != 140 {
		t.Fatalf("key id: %d bytes (%v), %d base64 chars", len(kid), err, len(lk.KeyID))
	}
	if p.MAC != "HMAC-SHA-256" || len(p.Locked) != 272 {
		t.Fatalf("MAC %q, locked %d bytes", p.MAC, len(p.Locked))
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if l.String() != long {
		t.Fatal("long pair does not round-trip byte for byte")
	}
}

func TestParseRefusals(t *testing.T) {
	for _, s := range []string{
		"", "vmware:key", "vmware:lock/null/x", "vmware:key/list/(", "vmware:key/list/())",
		"vmware:key/list/(,)", "vmware:key/pair/(null/%3cVMWARE%2dEMPTYSTRING%3e,HMAC)",
		"vmware:key/fqid/a/b", "vmware:key/fqid/a//c", "vmware:key/phrase/a%2/b", "vmware:key/phrase/a%zz/b",
		"vmware:key/null/x", "vmware:key/null/%3cVMWARE%2dEMPTYSTRING%3e/x",
		"vmware:key/fqid/a/b/<VMWARE-NULL>", "vmware:key/list/(rawkey/x)trailing",
		"vmware:key/pair/(null/%3cVMWARE%2dEMPTYSTRING%3e,HMAC,QQ%3d%3d%0a)",
		"vmware:key/pair/(null/%3cVMWARE%2dEMPTYSTRING%3e,HMAC,QR%3d%3d)", // non-canonical padding bits
		"vmware:key/" + strings.Repeat("list/(", MaxDepth+2) + "null/%3cVMWARE%2dEMPTYSTRING%3e" + strings.Repeat(")", MaxDepth+2),
	} {
		if _, err := Parse(s); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Parse(%q) = %v, want ErrCorrupt", s, err)
		}
	}
}

func TestDictRoundTrip(t *testing.T) {
	for _, s := range []string{
		"pass2key=PBKDF2-HMAC-SHA-1:cipher=AES-256:rounds=10000:salt=LKX/ScQY5xvee11wl/CJ6g%3d%3d",
		"type=key:cipher=AES-256:key=FIa+w+1qTXd4IsklJySWh1vh8POSEH1h00Vq2JbeLyw%3d",
		"a=%25%3a%3d",
	} {
		d, err := ParseDict(s)
		if err != nil {
			t.Fatalf("ParseDict(%s): %v", s, err)
		}
		if d.String() != s {
			t.Errorf("dict round trip:\n got %s\nwant %s", d.String(), s)
		}
	}
	d, _ := ParseDict("pass2key=PBKDF2-HMAC-SHA-1:cipher=AES-256:rounds=10000:salt=LKX/ScQY5xvee11wl/CJ6g%3d%3d")
	if v, _ := d.Get("salt"); v != "LKX/ScQY5xvee11wl/CJ6g==" {
		t.Errorf("salt %q", v)
	}
	for _, s := range []string{"", "a", "=b", "a=1:a=2", "a=%2", "a=1::b=2"} {
		if _, err := ParseDict(s); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ParseDict(%q) = %v, want ErrCorrupt", s, err)
		}
	}
}

func TestKeyDict(t *testing.T) {
	s := "type=key:cipher=AES-256:key=i7BE98D0tBWWFK9hKfi/HRfRmwKuAF4/UJtB6Z3cHM4%3d"
	k, err := ParseKeyDict(s)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(k.Bytes) != "8bb044f7c0f4b4159614af6129f8bf1d17d19b02ae005e3f509b41e99ddc1cce" || k.Dict() != s {
		t.Fatalf("key %x dict %s", k.Bytes, k.Dict())
	}
	cases := map[string]error{
		"type=key:cipher=DES:key=AAAA":     ErrUnsupported,
		"type=key:cipher=AES-256:key=AAAA": ErrCorrupt, // 3 bytes
		"type=key:cipher=AES-256:key=!!":   ErrCorrupt,
		"type=foo:cipher=AES-256:key=AAAA": ErrCorrupt,
		"type=key:key=AAAA":                ErrCorrupt,
	}
	for in, want := range cases {
		if _, err := ParseKeyDict(in); !errors.Is(err, want) {
			t.Errorf("ParseKeyDict(%s) = %v, want %v", in, err, want)
		}
	}
}

func TestUnlockWorkstation(t *testing.T) {
	l := vmxKeySafe(t, "workstation-encrypted.vmx")
	ps := l.Pairs()
	if len(ps) != 1 {
		t.Fatalf("%d pairs", len(ps))
	}
	k, err := UnlockPhrase(ps[0], []byte("password"))
	if err != nil {
		t.Fatal(err)
	}
	if k.Cipher != CipherAES256 || hex.EncodeToString(k.Bytes) != "8bb044f7c0f4b4159614af6129f8bf1d17d19b02ae005e3f509b41e99ddc1cce" {
		t.Fatalf("config key %s %x", k.Cipher, k.Bytes)
	}
	if _, err := UnlockPhrase(ps[0], []byte("Password")); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v, want ErrWrongKey", err)
	}
}

func TestUnlockXTSSelfgen(t *testing.T) {
	p := vmxKeySafe(t, "xts-selfgen.vmx").Pairs()[0]
	if len(p.Locked) != 164 {
		t.Fatalf("XTS blob is %d bytes, want 164", len(p.Locked))
	}
	k, err := UnlockPhrase(p, []byte("password"))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 64)
	for i := range want {
		want[i] = byte(0x40 + i)
	}
	if k.Cipher != CipherXTSAES256 || !bytes.Equal(k.Bytes, want) {
		t.Fatalf("config key %s %x", k.Cipher, k.Bytes)
	}
	if _, err := UnlockPhrase(p, []byte("wrong")); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
}

// hashVectors reads passphrase-hashes.tsv (hashcat module_27400.c, John's
// vmx_common_plug.c).
func hashVectors(t testing.TB) [][]string {
	var out [][]string
	for _, line := range strings.Split(readVector(t, "passphrase-hashes.tsv"), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		out = append(out, strings.Split(line, "\t"))
	}
	return out
}

// pairFromJohn rebuilds a phrase pair from a John "vmx" line.
func pairFromJohn(t testing.TB, line string) *Pair {
	f := strings.Split(line, "$")
	if len(f) != 8 || f[1] != "vmx" || f[2] != "1" {
		t.Fatalf("bad john line %s", line)
	}
	rounds, _ := strconv.Atoi(f[5])
	salt, _ := hex.DecodeString(f[6])
	blob, _ := hex.DecodeString(f[7])
	pp := &PhraseParams{Pass2Key: Pass2KeyPBKDF2, Cipher: CipherAES256, Rounds: rounds, Salt: salt}
	return &Pair{Locker: &Locator{Type: TypePhrase, UniqueID: "john", KeyGenData: pp.String()}, MAC: MACSHA1, Locked: blob}
}

func TestPasswordHashVectors(t *testing.T) {
	ws := vmxKeySafe(t, "workstation-encrypted.vmx").Pairs()[0]
	var n int
	for _, v := range hashVectors(t) {
		format, line, pw := v[0], v[1], v[2]
		switch {
		case format == "hashcat-27400":
			// First block only: decrypting it with the KEK gives the start of the dict.
			f := strings.Split(line, "$")
			rounds, _ := strconv.Atoi(f[3])
			salt, _ := hex.DecodeString(f[4])
			data, _ := hex.DecodeString(f[5])
			kek, err := DerivePhraseKEK(&PhraseParams{Cipher: CipherAES256, Rounds: rounds, Salt: salt}, []byte(pw))
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := aes.NewCipher(kek)
			pt := make([]byte, 16)
			cipher.NewCBCDecrypter(blk, data[:16]).CryptBlocks(pt, data[16:32])
			if string(pt) != "type=key:cipher=" {
				t.Errorf("hashcat line %s: first block %q", line, pt)
			}
			n++
		case format == "john-vmx":
			k, err := UnlockPhrase(pairFromJohn(t, line), []byte(pw))
			if err != nil {
				t.Fatalf("john line: %v", err)
			}
			if k.Dict() != v[3] {
				t.Errorf("john line unlocks to %s, want %s", k.Dict(), v[3])
			}
			if _, err := UnlockPhrase(pairFromJohn(t, line), []byte(pw+"x")); !errors.Is(err, ErrWrongKey) {
				t.Errorf("john line, wrong password: %v", err)
			}
			n++
		case strings.HasPrefix(format, "hashcat-27400 (from workstation"):
			if got, err := HashcatLine(ws); err != nil || got != line {
				t.Errorf("HashcatLine = %s, %v\nwant %s", got, err, line)
			}
			n++
		case strings.HasPrefix(format, "john-vmx (from workstation"):
			if got, err := JohnLine(ws); err != nil || got != line {
				t.Errorf("JohnLine = %s, %v\nwant %s", got, err, line)
			}
			k, err := UnlockPhrase(pairFromJohn(t, line), []byte(pw))
			if err != nil || hex.EncodeToString(k.Bytes) != "8bb044f7c0f4b4159614af6129f8bf1d17d19b02ae005e3f509b41e99ddc1cce" {
				t.Errorf("workstation john line: %v", err)
			}
			n++
		default:
			t.Fatalf("unknown format %q", format)
		}
	}
	if n != 4 {
		t.Fatalf("%d hash vectors checked, want 4", n)
	}
	xts := vmxKeySafe(t, "xts-selfgen.vmx").Pairs()[0]
	if _, err := JohnLine(xts); !errors.Is(err, ErrUnsupported) {
		t.Errorf("JohnLine(XTS) = %v, want ErrUnsupported", err)
	}
	if _, err := HashcatLine(xts); err != nil {
		t.Errorf("HashcatLine(XTS): %v", err)
	}
}

// mutate returns a copy of the workstation pair with f applied.
func mutate(t *testing.T, f func(p *Pair, pp *PhraseParams)) *Pair {
	p := vmxKeySafe(t, "workstation-encrypted.vmx").Pairs()[0]
	pp, err := ParsePhraseParams(p.Locker.KeyGenData)
	if err != nil {
		t.Fatal(err)
	}
	f(p, pp)
	p.Locker.KeyGenData = pp.String()
	return p
}

func TestUnlockNegatives(t *testing.T) {
	cases := []struct {
		name string
		f    func(p *Pair, pp *PhraseParams)
		want error
	}{
		{"flipped MAC byte", func(p *Pair, _ *PhraseParams) { p.Locked[len(p.Locked)-1] ^= 1 }, ErrWrongKey},
		{"flipped ciphertext byte", func(p *Pair, _ *PhraseParams) { p.Locked[40] ^= 1 }, ErrWrongKey},
		{"flipped IV byte", func(p *Pair, _ *PhraseParams) { p.Locked[0] ^= 1 }, ErrWrongKey},
		{"truncated blob", func(p *Pair, _ *PhraseParams) { p.Locked = p.Locked[:100] }, ErrCorrupt},
		{"blob of 84 bytes (base64 cut at 112 chars)", func(p *Pair, _ *PhraseParams) { p.Locked = p.Locked[:84] }, ErrCorrupt},
		{"blob of 115 bytes", func(p *Pair, _ *PhraseParams) { p.Locked = p.Locked[:115] }, ErrCorrupt},
		{"empty blob", func(p *Pair, _ *PhraseParams) { p.Locked = nil }, ErrCorrupt},
		{"unknown cipher", func(_ *Pair, pp *PhraseParams) { pp.Cipher = "AES-128" }, ErrUnsupported},
		{"unknown pass2key", func(_ *Pair, pp *PhraseParams) { pp.Pass2Key = "scrypt" }, ErrUnsupported},
		{"unknown MAC", func(p *Pair, _ *PhraseParams) { p.MAC = "HMAC-MD5" }, ErrUnsupported},
		{"rounds above cap", func(_ *Pair, pp *PhraseParams) { pp.Rounds = 2_000_000_000 }, ErrUnsupported},
		{"SHA-256 MAC name, blob too short", func(p *Pair, _ *PhraseParams) { p.MAC = MACSHA256 }, ErrCorrupt},
	}
	for _, c := range cases {
		p := mutate(t, c.f)
		start := time.Now()
		_, err := UnlockPhrase(p, []byte("password"))
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if c.want != ErrWrongKey && time.Since(start) > 50*time.Millisecond {
			t.Errorf("%s: refused after %v, want at once (no PBKDF2)", c.name, time.Since(start))
		}
	}
	// rounds text that is not a number, and zero rounds.
	for _, kg := range []string{
		"pass2key=PBKDF2-HMAC-SHA-1:cipher=AES-256:rounds=x:salt=AAAAAAAAAAAAAAAAAAAAAA%3d%3d",
		"pass2key=PBKDF2-HMAC-SHA-1:cipher=AES-256:rounds=0:salt=AAAAAAAAAAAAAAAAAAAAAA%3d%3d",
		"pass2key=PBKDF2-HMAC-SHA-1:cipher=AES-256:rounds=10:salt=!!",
		"pass2key=PBKDF2-HMAC-SHA-1:cipher=AES-256:salt=AAAAAAAAAAAAAAAAAAAAAA%3d%3d",
	} {
		if _, err := ParsePhraseParams(kg); !errors.Is(err, ErrCorrupt) {
			t.Errorf("ParsePhraseParams(%s) = %v, want ErrCorrupt", kg, err)
		}
	}
	if _, err := ParsePhraseParams("pass2key=PBKDF2-HMAC-SHA-1:cipher=AES-256:rounds=99999999999:salt=AAAAAAAAAAAAAAAAAAAAAA%3d%3d"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("huge rounds: %v", err)
	}
}

func TestUTF8Passphrase(t *testing.T) {
	k := &Key{Cipher: CipherAES256, Bytes: bytes.Repeat([]byte{7}, 32)}
	nfc := []byte("caf\u00e9 \u65e5\u672c") // as typed, NFC
	nfd := []byte("cafe\u0301 \u65e5\u672c")
	p, err := LockPhrase(k, nfc, CipherAES256, 1000, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := UnlockPhrase(p, nfc); err != nil || !bytes.Equal(got.Bytes, k.Bytes) {
		t.Fatalf("NFC: %v", err)
	}
	// The bytes are used as given: another normalisation is another passphrase.
	if _, err := UnlockPhrase(p, nfd); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("NFD: %v", err)
	}
}

func TestLockRoundTrip(t *testing.T) {
	for _, c := range []struct{ keyCipher, lockCipher string }{
		{CipherAES256, CipherAES256}, {CipherXTSAES256, CipherXTSAES256}, {CipherXTSAES256, CipherAES256},
	} {
		kb := make([]byte, KeyLen(c.keyCipher))
		rand.Read(kb)
		k := &Key{Cipher: c.keyCipher, Bytes: kb}
		p, err := LockPhrase(k, []byte("pw"), c.lockCipher, 1000, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int{CipherAES256: 116, CipherXTSAES256: 164}[c.keyCipher]
		if len(p.Locked) != want {
			t.Errorf("%s locked blob is %d bytes, want %d", c.keyCipher, len(p.Locked), want)
		}
		l := NewList(p)
		l2, err := Parse(l.String())
		if err != nil || l2.String() != l.String() {
			t.Fatalf("locked key safe does not round-trip: %v", err)
		}
		got, err := UnlockPhrase(l2.Pairs()[0], []byte("pw"))
		if err != nil || got.Cipher != k.Cipher || !bytes.Equal(got.Bytes, kb) {
			t.Fatalf("%+v: %v", c, err)
		}
	}
}

func TestFQID(t *testing.T) {
	kek := make([]byte, 32)
	rand.Read(kek)
	kb := make([]byte, 64)
	rand.Read(kb)
	k := &Key{Cipher: CipherXTSAES256, Bytes: kb}
	p, err := LockFQID(k, "KMS", "a4e7494f-da55-4917-9d90-560c5078866b", kek, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := NewList(p).String()
	if !strings.HasPrefix(s, "vmware:key/list/(pair/(fqid/<VMWARE-NULL>/KMS/a4e7494f%2dda55%2d4917%2d9d90%2d560c5078866b,HMAC%2dSHA%2d256,") {
		t.Fatalf("fqid key safe %s", s)
	}
	l, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	p2 := l.Pairs()[0]
	if len(p2.Locked) != 16+128+32 {
		t.Errorf("fqid blob %d bytes", len(p2.Locked))
	}
	got, err := UnlockFQID(p2, kek)
	if err != nil || !bytes.Equal(got.Bytes, kb) {
		t.Fatalf("UnlockFQID: %v", err)
	}
	bad := append([]byte(nil), kek...)
	bad[0] ^= 1
	if _, err := UnlockFQID(p2, bad); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong KEK: %v", err)
	}
	p2.Locked[len(p2.Locked)-1] ^= 1
	if _, err := UnlockFQID(p2, kek); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("flipped MAC: %v", err)
	}
	if _, err := UnlockFQID(vmxKeySafe(t, "workstation-encrypted.vmx").Pairs()[0], kek); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("fqid unlock of a phrase pair: %v", err)
	}
}

// A pair whose MAC verifies but whose dict is not a key dict is corrupt
// (or unsupported), never a wrong key.
func TestAuthenticatedBadDict(t *testing.T) {
	kek := bytes.Repeat([]byte{1}, 32)
	for dict, want := range map[string]error{
		"type=key:cipher=AES-256:key=AAAA" + strings.Repeat(":x=y", 20):                               ErrCorrupt,
		"type=key:cipher=ChaCha:key=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA": ErrUnsupported,
		"garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage garbage":     ErrCorrupt,
	} {
		iv := make([]byte, 16)
		ct, _ := CBCSeal(kek, iv, []byte(dict))
		m := hmacSum(MACSHA256, kek, []byte(dict))
		p := &Pair{Locker: &Locator{Type: TypeFQID, UniqueID: NullField, KeyServerID: "k", KeyID: "i"}, MAC: MACSHA256,
			Locked: append(append(iv, ct...), m...)}
		if _, err := UnlockFQID(p, kek); !errors.Is(err, want) || errors.Is(err, ErrWrongKey) {
			t.Errorf("dict %q: %v, want %v", dict, err, want)
		}
	}
}

// HMAC-SHA-1-128 (SHA-1 truncated to 16 bytes) is accepted on read.
func TestMACSHA1128(t *testing.T) {
	k := &Key{Cipher: CipherAES256, Bytes: bytes.Repeat([]byte{9}, 32)}
	pp := &PhraseParams{Pass2Key: Pass2KeyPBKDF2, Cipher: CipherAES256, Rounds: 100, Salt: bytes.Repeat([]byte{1}, 16)}
	kek, err := DerivePhraseKEK(pp, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	locked, err := seal(k, MACSHA1128, kek, kek, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if len(locked) != 16+80+16 {
		t.Fatalf("blob %d bytes", len(locked))
	}
	p := &Pair{Locker: &Locator{Type: TypePhrase, UniqueID: "u", KeyGenData: pp.String()}, MAC: MACSHA1128, Locked: locked}
	l, err := Parse(NewList(p).String())
	if err != nil || !strings.Contains(l.String(), "HMAC%2dSHA%2d1%2d128") {
		t.Fatalf("%v %s", err, l)
	}
	got, err := UnlockPhrase(l.Pairs()[0], []byte("pw"))
	if err != nil || !bytes.Equal(got.Bytes, k.Bytes) {
		t.Fatalf("unlock: %v", err)
	}
	if _, err := UnlockPhrase(l.Pairs()[0], []byte("pW")); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong: %v", err)
	}
}

// Every grammar type round-trips through the canonical form.
func TestAllTypesRoundTrip(t *testing.T) {
	for _, s := range []string{
		"vmware:key/ldap/<VMWARE-NULL>/<VMWARE-NULL>/d/636/FALSE/p",
		"vmware:key/role/<VMWARE-NULL>/adminRecovery",
		"vmware:key/script/id/rel%2fp/<VMWARE-EMPTYSTRING>",
		"vmware:key/list/(list/(pair/(rawkey/k,HMAC%2dSHA%2d1,<VMWARE-EMPTYSTRING>)),null/%3cVMWARE%2dEMPTYSTRING%3e)",
		"vmware:key/pair/(fqid/<VMWARE-NULL>/<VMWARE-NULL>/k,HMAC%2dSHA%2d256,AAAA)",
	} {
		l, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%s): %v", s, err)
			continue
		}
		if l.String() != s {
			t.Errorf("round trip\n got %s\nwant %s", l.String(), s)
		}
	}
	l, _ := Parse("vmware:key/role/x/ADMINIDENT")
	if l.Role != "adminIdent" {
		t.Errorf("role %q", l.Role)
	}
}

// Real key-provider bundles are 272 (NKP) and 288 (KMS) bytes: the model
// reads any 16+16n+32 whose plaintext holds one type=key entry among
// others, and names the others by type only.
func TestFQIDBundleLengths(t *testing.T) {
	kek := make([]byte, 32)
	rand.Read(kek)
	k := &Key{Cipher: CipherXTSAES256, Bytes: make([]byte, 64)}
	rand.Read(k.Bytes)
	for _, n := range []int{176, 272, 288, 1024} {
		p, err := LockFQIDBundle(k, "KMS", "44", kek, n, rand.Reader)
		if err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		if len(p.Locked) != n {
			t.Fatalf("%d: locked %d bytes", n, len(p.Locked))
		}
		// Through the grammar: serialise and parse the key safe.
		l, err := Parse(NewList(p).String())
		if err != nil {
			t.Fatal(err)
		}
		got, others, err := UnlockFQIDBundle(l.Pairs()[0], kek)
		if err != nil || !bytes.Equal(got.Bytes, k.Bytes) {
			t.Fatalf("%d: %v", n, err)
		}
		if n > 176 && (len(others) != 1 || others[0] != "nonce") {
			t.Fatalf("%d: other entries %q", n, others)
		}
		other := append([]byte(nil), kek...)
		other[0] ^= 1
		if _, err := UnlockFQID(l.Pairs()[0], other); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("%d: wrong KEK: %v", n, err)
		}
	}
	if _, err := LockFQIDBundle(k, "KMS", "44", kek, 280, rand.Reader); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("280 bytes: %v", err)
	}
	// Two key entries, or none: corrupt.
	for _, plain := range []string{k.Dict() + "\n" + k.Dict(), "type=nonce:value=AAAA"} {
		if _, _, err := parseBundle(plain); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%q: %v", plain, err)
		}
	}
}
