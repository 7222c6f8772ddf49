package kmiptest

import (
	"testing"
)

func TestMain(m *testing.M) { Main(m) }

// TestSeedAndRead: keys created and activated through PyKMIP are read back
// by PyKMIP as 32 bytes, revocation changes their state, and the shared
// policy lets the second certificate read them while the default policy
// does not.
func TestSeedAndRead(t *testing.T) {
	s := Shared(t)
	uids := s.CreateKeys(t, 2, CreateOptions{})
	shared := s.CreateKeys(t, 1, CreateOptions{Policy: SharedPolicy})
	keys := s.Keys(t, nil, append(uids, shared...)...)
	for i, k := range keys {
		if len(k) != 32 {
			t.Fatalf("key %d: %d bytes", i, len(k))
		}
	}
	if string(keys[0]) == string(keys[1]) {
		t.Fatal("two created keys are equal")
	}
	r := s.Py(t, s.PKI.Other, Op{Op: "get", UID: uids[0]}, Op{Op: "get", UID: shared[0]})
	if r[0].Error == "" {
		t.Fatal("the second certificate read a key under the default (owner-only) policy")
	}
	if r[1].Error != "" {
		t.Fatalf("the second certificate could not read a shared-policy key: %s", r[1].Error)
	}
	s.Revoke(t, uids[1], "cessation")
	if st := s.Py(t, nil, Op{Op: "state", UID: uids[1]}, Op{Op: "state", UID: uids[0]}); st[0].State != "DEACTIVATED" || st[1].State != "ACTIVE" {
		t.Fatalf("states after revoking the second key: %+v", st)
	}
	s.RevokeDestroy(t, uids[0])
	if r := s.Py(t, nil, Op{Op: "get", UID: uids[0]}); r[0].Error == "" {
		t.Fatal("a destroyed key is still returned")
	}
	t.Logf("server %s, log %s", s.Addr, s.LogFile)
}
