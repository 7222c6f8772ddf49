package keysafe

import (
	"bytes"
	"regexp"
	"testing"
)

func seedLocators(f *testing.F) {
	for _, v := range locatorVectors(f) {
		f.Add(v.in)
	}
	for _, name := range []string{"workstation-encrypted.vmx", "xts-selfgen.vmx"} {
		f.Add(vmxKeySafe(f, name).String())
	}
}

// FuzzLocator: Parse never panics; what it accepts serialises to a
// canonical form that parses to the same canonical form.
func FuzzLocator(f *testing.F) {
	seedLocators(f)
	f.Fuzz(func(t *testing.T, s string) {
		l, err := Parse(s)
		if err != nil {
			if l != nil {
				t.Fatal("partial value on error")
			}
			return
		}
		c := l.String()
		l2, err := Parse(c)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", c, s, err)
		}
		if l2.String() != c {
			t.Fatalf("canonical form not stable: %q -> %q", c, l2.String())
		}
		for _, p := range l.Pairs() {
			if p.Validate() == nil {
				_, _ = HashcatLine(p)
				_, _ = JohnLine(p)
			}
		}
	})
}

// FuzzDict: ParseDict never panics and round-trips what it accepts.
func FuzzDict(f *testing.F) {
	f.Add("pass2key=PBKDF2-HMAC-SHA-1:cipher=AES-256:rounds=10000:salt=LKX/ScQY5xvee11wl/CJ6g%3d%3d")
	f.Add("type=key:cipher=AES-256:key=FIa+w+1qTXd4IsklJySWh1vh8POSEH1h00Vq2JbeLyw%3d")
	f.Add("type=key:cipher=XTS-AES-256:key=QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl9gYWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1%2bfw%3d%3d")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDict(s)
		if err != nil {
			return
		}
		d2, err := ParseDict(d.String())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", d.String(), err)
		}
		if d2.String() != d.String() || len(d2) != len(d) {
			t.Fatalf("dict round trip %q -> %q", d.String(), d2.String())
		}
		for i := range d {
			if d[i] != d2[i] {
				t.Fatalf("entry %d: %q vs %q", i, d[i], d2[i])
			}
		}
		if k, err := ParseKeyDict(s); err == nil {
			k2, err := ParseKeyDict(k.Dict())
			if err != nil || !bytes.Equal(k.Bytes, k2.Bytes) || k.Cipher != k2.Cipher {
				t.Fatalf("key dict round trip: %v", err)
			}
		}
		if pp, err := ParsePhraseParams(s); err == nil {
			pp2, err := ParsePhraseParams(pp.String())
			if err != nil || pp2.String() != pp.String() {
				t.Fatalf("phrase params round trip: %v", err)
			}
		}
	})
}

// FuzzUnlockBlob: unlocking arbitrary locked data with the right
// passphrase's KEK never panics and fails only with the sentinels; the
// fqid path likewise.
func FuzzUnlockBlob(f *testing.F) {
	ws := vmxKeySafe(f, "workstation-encrypted.vmx").Pairs()[0]
	xts := vmxKeySafe(f, "xts-selfgen.vmx").Pairs()[0]
	f.Add(ws.Locked, ws.MAC)
	f.Add(xts.Locked, xts.MAC)
	f.Add(ws.Locked[:100], "HMAC-SHA-256")
	pp, _ := ParsePhraseParams(ws.Locker.KeyGenData)
	kek, err := DerivePhraseKEK(pp, []byte("password"))
	if err != nil {
		f.Fatal(err)
	}
	re := regexp.MustCompile("^type=key")
	f.Fuzz(func(t *testing.T, blob []byte, mac string) {
		p := &Pair{Locker: ws.Locker, MAC: mac, Locked: blob}
		k, err := UnlockPhraseKEK(p, kek)
		if err == nil {
			if !re.MatchString(k.Dict()) || len(k.Bytes) != KeyLen(k.Cipher) {
				t.Fatalf("bad key %+v", k)
			}
		} else if k != nil {
			t.Fatal("partial key on error")
		}
		q := &Pair{Locker: &Locator{Type: TypeFQID, UniqueID: NullField, KeyServerID: "p", KeyID: "k"}, MAC: mac, Locked: blob}
		if k, err := UnlockFQID(q, kek[:32]); err != nil && k != nil {
			t.Fatal("partial key on error")
		}
	})
}
