package nkp

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// FuzzParse: the PKCS#12 walker never panics on any input, fails only with
// the package's sentinels, and Open (low iteration counts only, to keep the
// fuzzer fast) never panics and never returns a partial result.
func FuzzParse(f *testing.F) {
	for _, fx := range fixtures {
		f.Add(readFixture(f, fx.file))
	}
	k, _ := NewKDK("fuzz")
	raw, _ := Marshal(k, []byte("pw"), &WriteOptions{Iterations: 1})
	f.Add(raw)
	f.Add(buildBackup(1, 1))
	for _, kind := range layoutKinds {
		f.Add(layout(f, kind, k, []byte("pw")))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBytes(data)
		if err != nil {
			if b != nil {
				t.Fatal("partial value with an error")
			}
			if !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		if b.mac != nil && b.mac.iterations > 64 {
			return
		}
		for _, c := range b.Containers {
			if c.pbe != nil && c.pbe.info.Iterations > 64 {
				return
			}
			for _, bag := range c.Bags {
				if bag.pbe != nil && bag.pbe.info.Iterations > 64 {
					return
				}
			}
		}
		kdks, err := b.Open([]byte("pw"))
		if err != nil {
			if kdks != nil {
				t.Fatal("partial value with an error")
			}
			if !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) && !errors.Is(err, keysafe.ErrWrongKey) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		for _, k := range kdks {
			if len(k.Key) != KDKSize {
				t.Fatalf("KDK of %d bytes", len(k.Key))
			}
		}
	})
}

// FuzzKeyID: ParseKeyID never panics and re-serialises byte for byte.
func FuzzKeyID(f *testing.F) {
	if k, err := ParseKeyIDString(realKeyID(f)); err == nil {
		f.Add(k.Bytes())
	}
	f.Add(make([]byte, KeyIDSize))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParseKeyID(data)
		if err != nil {
			if k != nil || !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatalf("%v / %v", k, err)
			}
			return
		}
		if !bytes.Equal(k.Bytes(), data) {
			t.Fatalf("round trip:\n%x\n%x", data, k.Bytes())
		}
		back, err := ParseKeyIDString(k.String())
		if err != nil || *back != *k {
			t.Fatalf("string round trip: %v", err)
		}
	})
}

// FuzzKeyIDString: ParseKeyIDString (the key id of an fqid locator) and
// ParseUUID (a KDK alias) never panic, fail only as corrupt, and what they
// accept re-serialises to text that parses to the same value.
func FuzzKeyIDString(f *testing.F) {
	f.Add(realKeyID(f))
	f.Add(strings.TrimRight(realKeyID(f), "="))
	f.Add("ec41612e-cc4c-5386-a3a5-f24b43d97d01")
	f.Add("EC41612E-CC4C-5386-A3A5-F24B43D97D01")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKeyIDString(s)
		if err != nil {
			if k != nil || !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatalf("%v / %v", k, err)
			}
		} else if back, err := ParseKeyIDString(k.String()); err != nil || *back != *k {
			t.Fatalf("string round trip of %q: %v", s, err)
		}
		u, err := ParseUUID(s)
		if err != nil {
			if !errors.Is(err, keysafe.ErrCorrupt) {
				t.Fatal(err)
			}
			return
		}
		if !strings.EqualFold(u.String(), s) {
			t.Fatalf("UUID %q formats as %q", s, u.String())
		}
	})
}
