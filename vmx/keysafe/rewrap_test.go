package keysafe

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
)

// testdataKeySafe reads encryption.keySafe of a VMX copied into testdata/
// (see testdata/SOURCES.md).
func testdataKeySafe(t testing.TB, name string) *Locator {
	t.Helper()
	b, err := os.ReadFile("../testdata/vectors/" + name)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^encryption\.keySafe = "([^"]*)"`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no key safe", name)
	}
	l, err := Parse(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func phraseParams(t *testing.T, p *Pair) *PhraseParams {
	t.Helper()
	pp, err := ParsePhraseParams(p.Locker.KeyGenData)
	if err != nil {
		t.Fatal(err)
	}
	return pp
}

// The real Workstation key safe and the XTS one take a new passphrase: the
// same key comes out under the new one only, with the same KEK cipher and
// rounds and a fresh salt and id; the hashcat line changes; the input
// locator is not touched.
func TestRelockVectors(t *testing.T) {
	for _, c := range []struct {
		file, cipher, key string
	}{
		{"workstation-encrypted.vmx", CipherAES256, "8bb044f7c0f4b4159614af6129f8bf1d17d19b02ae005e3f509b41e99ddc1cce"},
		{"xts-selfgen.vmx", CipherXTSAES256, "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"},
	} {
		l := testdataKeySafe(t, c.file)
		before := l.String()
		r, err := RelockPhrases(l, []byte("password"), []byte("n\u00e9w pass"), RelockOptions{}, rand.Reader)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if l.String() != before {
			t.Fatalf("%s: the input locator changed", c.file)
		}
		if r.Relocked != 1 || r.Kept != 0 || hex.EncodeToString(r.Key.Bytes) != c.key {
			t.Fatalf("%s: relocked %d kept %d key %x", c.file, r.Relocked, r.Kept, r.Key.Bytes)
		}
		back, err := Parse(r.Locator.String())
		if err != nil || back.String() != r.Locator.String() {
			t.Fatalf("%s: new key safe does not round-trip: %v", c.file, err)
		}
		np, op := back.Pairs()[0], l.Pairs()[0]
		k, err := UnlockPhrase(np, []byte("n\u00e9w pass"))
		if err != nil || hex.EncodeToString(k.Bytes) != c.key {
			t.Fatalf("%s: new passphrase: %v", c.file, err)
		}
		if _, err := UnlockPhrase(np, []byte("password")); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("%s: old passphrase on the new pair: %v", c.file, err)
		}
		npp, opp := phraseParams(t, np), phraseParams(t, op)
		if npp.Cipher != c.cipher || npp.Cipher != opp.Cipher || npp.Rounds != opp.Rounds || npp.Pass2Key != opp.Pass2Key {
			t.Fatalf("%s: parameters changed: %+v -> %+v", c.file, opp, npp)
		}
		if bytes.Equal(npp.Salt, opp.Salt) || len(npp.Salt) != 16 || np.Locker.UniqueID == op.Locker.UniqueID || np.MAC != MACSHA1 {
			t.Fatalf("%s: salt or id not fresh", c.file)
		}
		if len(np.Locked) != len(op.Locked) {
			t.Fatalf("%s: locked data %d bytes, was %d", c.file, len(np.Locked), len(op.Locked))
		}
		h1, _ := HashcatLine(op)
		h2, _ := HashcatLine(np)
		if h1 == h2 || !strings.HasPrefix(h2, "$vmx$0$10000$") {
			t.Fatalf("%s: hashcat line %q -> %q", c.file, h1, h2)
		}
	}
}

func TestRelockRounds(t *testing.T) {
	l := testdataKeySafe(t, "workstation-encrypted.vmx")
	r, err := RelockPhrases(l, []byte("password"), []byte("x"), RelockOptions{Rounds: 2000}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if pp := phraseParams(t, r.Locator.Pairs()[0]); pp.Rounds != 2000 {
		t.Fatalf("rounds %d, want 2000", pp.Rounds)
	}
	for _, n := range []int{-1, MaxRounds + 1} {
		if _, err := RelockPhrases(l, []byte("password"), []byte("x"), RelockOptions{Rounds: n}, rand.Reader); !errors.Is(err, ErrUnsupported) {
			t.Fatalf("rounds %d: %v, want ErrUnsupported", n, err)
		}
	}
}

// A list of several ways to open one key: only the phrase pairs the old
// passphrase opens change; a key-provider pair and another passphrase's
// pair are kept, text for text, and still open.
func TestRelockMixedList(t *testing.T) {
	k := &Key{Cipher: CipherXTSAES256, Bytes: bytes.Repeat([]byte{9}, 64)}
	kek := bytes.Repeat([]byte{3}, 32)
	mine, _ := LockPhrase(k, []byte("old"), CipherXTSAES256, 1000, rand.Reader)
	fq, _ := LockFQID(k, "KMS", "42", kek, rand.Reader)
	other, _ := LockPhrase(k, []byte("someone else"), CipherAES256, 1000, rand.Reader)
	l := NewList(fq, mine, other)
	r, err := RelockPhrases(l, []byte("old"), []byte("new"), RelockOptions{}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if r.Relocked != 1 || r.Kept != 2 {
		t.Fatalf("relocked %d kept %d", r.Relocked, r.Kept)
	}
	got := r.Locator.List
	if got[0].String() != l.List[0].String() || got[2].String() != l.List[2].String() || got[1].String() == l.List[1].String() {
		t.Fatal("the wrong pairs changed")
	}
	if _, err := UnlockFQID(got[0].Pair, kek); err != nil {
		t.Fatal(err)
	}
	if _, err := UnlockPhrase(got[2].Pair, []byte("someone else")); err != nil {
		t.Fatal(err)
	}
	if x, err := UnlockPhrase(got[1].Pair, []byte("new")); err != nil || !bytes.Equal(x.Bytes, k.Bytes) {
		t.Fatal(err)
	}
}

func TestRelockRefusals(t *testing.T) {
	k := &Key{Cipher: CipherAES256, Bytes: bytes.Repeat([]byte{1}, 32)}
	k2 := &Key{Cipher: CipherAES256, Bytes: bytes.Repeat([]byte{2}, 32)}
	kek := bytes.Repeat([]byte{3}, 32)
	fq, _ := LockFQID(k, "KMS", "42", kek, rand.Reader)
	p1, _ := LockPhrase(k, []byte("pw"), CipherAES256, 1000, rand.Reader)
	p2, _ := LockPhrase(k2, []byte("pw"), CipherAES256, 1000, rand.Reader)
	hostile := func() *Locator {
		var ps []*Pair
		for i := 0; i < 3; i++ {
			p := *p1
			p.Locker = &Locator{Type: TypePhrase, UniqueID: "x", KeyGenData: (&PhraseParams{Pass2Key: Pass2KeyPBKDF2, Cipher: CipherAES256, Rounds: MaxRounds, Salt: []byte{byte(i)}}).String()}
			ps = append(ps, &p)
		}
		return NewList(ps...)
	}()
	flipped := *p1
	flipped.Locked = append([]byte(nil), p1.Locked...)
	flipped.Locked[len(flipped.Locked)-1] ^= 1
	for _, c := range []struct {
		name string
		l    *Locator
		old  string
		want error
	}{
		{"key provider only", NewList(fq), "pw", ErrNotPhrase},
		{"key provider only is unsupported", NewList(fq), "pw", ErrUnsupported},
		{"empty list", NewList(), "pw", ErrNotPhrase},
		{"wrong old passphrase", NewList(p1), "PW", ErrWrongKey},
		{"flipped MAC", NewList(&flipped), "pw", ErrWrongKey},
		{"pairs wrap different keys", NewList(p1, p2), "pw", ErrCorrupt},
		{"truncated locked data", NewList(&Pair{Locker: p1.Locker, MAC: MACSHA1, Locked: p1.Locked[:40]}), "pw", ErrCorrupt},
		{"work factor above the total cap", hostile, "pw", ErrUnsupported},
		{"nil", nil, "pw", ErrCorrupt},
	} {
		r, err := RelockPhrases(c.l, []byte(c.old), []byte("new"), RelockOptions{}, rand.Reader)
		if !errors.Is(err, c.want) || r != nil {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
