package kmip

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net"
	"strconv"
	"testing"

	"github.com/vmcrypt/vmcrypt/recover/keys/kmip/kmiptest"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Tests against a real KMIP server: Debian's PyKMIP (python3-pykmip), one
// per test binary, seeded through PyKMIP's own client.

func TestMain(m *testing.M) { kmiptest.Main(m) }

func pyClient(t *testing.T, s *kmiptest.Server, as *kmiptest.Cert, servers ...string) *Client {
	t.Helper()
	if as == nil {
		as = s.PKI.Client
	}
	if len(servers) == 0 {
		servers = []string{s.Addr}
	}
	c, err := NewClient(Config{Servers: servers, Certificate: as.TLS(), RootCAs: s.PKI.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestPyKMIPGet: the keys vmcrypt's client gets are the bytes PyKMIP
// created, as PyKMIP's own client gets them, over one connection and one
// round trip per key, in every KMIP 1.x version.
func TestPyKMIPGet(t *testing.T) {
	s := kmiptest.Shared(t)
	uids := s.CreateKeys(t, 3, kmiptest.CreateOptions{})
	want := s.Keys(t, nil, uids...)
	c := pyClient(t, s, nil)
	for i, uid := range uids {
		k, err := c.Get(context.Background(), uid)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(k.Material, want[i]) {
			t.Fatalf("key %s differs from PyKMIP's", uid)
		}
		if k.Attrs != (Attributes{UniqueID: uid, State: StateActive, Algorithm: AlgAES, Length: 256, ObjectType: ObjectSymmetricKey}) {
			t.Fatalf("attributes %+v", k.Attrs)
		}
	}
	if st := c.Stats(); st.RoundTrips != 3 || st.Dials != 1 {
		t.Fatalf("3 Gets: %+v, want 3 round trips on 1 connection", st)
	}
	a, err := c.GetAttributes(context.Background(), uids[0])
	if err != nil || a.State != StateActive || a.Length != 256 {
		t.Fatalf("GetAttributes: %+v, %v", a, err)
	}
	for minor := int32(0); minor <= 4; minor++ {
		c, err := NewClient(Config{Servers: []string{s.Addr}, Certificate: s.PKI.Client.TLS(), RootCAs: s.PKI.Pool(),
			Version: ProtocolVersion{1, minor}})
		if err != nil {
			t.Fatal(err)
		}
		k, err := c.Get(context.Background(), uids[0])
		c.Close()
		if err != nil || !bytes.Equal(k.Material, want[0]) {
			t.Fatalf("KMIP 1.%d: %v", minor, err)
		}
	}
}

func TestPyKMIPDiscoverVersions(t *testing.T) {
	s := kmiptest.Shared(t)
	vs, err := pyClient(t, s, nil).DiscoverVersions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range vs {
		found = found || v == DefaultVersion
	}
	if !found {
		t.Fatalf("PyKMIP speaks %v, not %v", vs, DefaultVersion)
	}
}

// TestPyKMIPKeyStates: a missing id is Item Not Found; a revoked key
// (Deactivated, Compromised) and a key never activated (Pre-Active) are
// ErrKeyNotActive with their state, though PyKMIP's Get still returns
// their bytes; a destroyed key is Item Not Found, because PyKMIP's Destroy
// deletes the object (servers that keep destroyed objects answer State
// Destroyed, tested on the fake server).
func TestPyKMIPKeyStates(t *testing.T) {
	s := kmiptest.Shared(t)
	deact := s.CreateKeys(t, 1, kmiptest.CreateOptions{Revoke: "cessation"})[0]
	comp := s.CreateKeys(t, 1, kmiptest.CreateOptions{Revoke: "compromise"})[0]
	pre := s.CreateKeys(t, 1, kmiptest.CreateOptions{NoActive: true})[0]
	gone := s.CreateKeys(t, 1, kmiptest.CreateOptions{})[0]
	s.RevokeDestroy(t, gone)
	if r := s.Py(t, nil, kmiptest.Op{Op: "get", UID: deact}); r[0].Error != "" {
		t.Fatalf("PyKMIP no longer returns deactivated keys: %s", r[0].Error)
	}
	c := pyClient(t, s, nil)
	for uid, state := range map[string]State{deact: StateDeactivated, comp: StateCompromised, pre: StatePreActive} {
		_, err := c.Get(context.Background(), uid)
		var ke *KeyError
		if !errors.Is(err, ErrKeyNotActive) || !errors.Is(err, keysafe.ErrKeyNotFound) || !errors.As(err, &ke) || ke.State != state {
			t.Errorf("key %s (%v): %v", uid, state, err)
		}
	}
	for _, uid := range []string{gone, "999999", "no-such-key"} {
		_, err := c.Get(context.Background(), uid)
		var ke *KeyError
		var kn *keysafe.KeyNotFoundError
		if !errors.As(err, &ke) || ke.Reason != ReasonItemNotFound || ke.Server != s.Addr ||
			!errors.As(err, &kn) || kn.KeyID != uid || errors.Is(err, ErrKeyNotActive) {
			t.Errorf("key %s: %v, want Item Not Found", uid, err)
		}
	}
}

// TestPyKMIPPermission: under PyKMIP's default policy only the creating
// certificate may Get a key: a second certificate gets Permission Denied
// (naming its CN); under the shared policy it gets the same bytes.
func TestPyKMIPPermission(t *testing.T) {
	s := kmiptest.Shared(t)
	owned := s.CreateKeys(t, 1, kmiptest.CreateOptions{})[0]
	shared := s.CreateKeys(t, 1, kmiptest.CreateOptions{Policy: kmiptest.SharedPolicy})[0]
	c := pyClient(t, s, s.PKI.Other)
	_, err := c.Get(context.Background(), owned)
	var ke *KeyError
	if !errors.Is(err, ErrPermissionDenied) || !errors.Is(err, keysafe.ErrKeyNotFound) || !errors.As(err, &ke) ||
		ke.Client != kmiptest.OtherCN || ke.Server != s.Addr {
		t.Fatalf("a key of another owner: %v", err)
	}
	k, err := c.Get(context.Background(), shared)
	if err != nil {
		t.Fatalf("a shared-policy key: %v", err)
	}
	if want := s.Keys(t, nil, shared)[0]; !bytes.Equal(k.Material, want) {
		t.Fatal("the shared key differs from PyKMIP's")
	}
}

// TestPyKMIPFailover: the first member down, the second answers.
func TestPyKMIPFailover(t *testing.T) {
	s := kmiptest.Shared(t)
	uid := s.CreateKeys(t, 1, kmiptest.CreateOptions{})[0]
	down := closedPort(t)
	c := pyClient(t, s, nil, down, s.Addr)
	k, err := c.Get(context.Background(), uid)
	if err != nil || k.Server != s.Addr {
		t.Fatalf("failover: %v", err)
	}
	if want := s.Keys(t, nil, uid)[0]; !bytes.Equal(k.Material, want) {
		t.Fatal("the key differs from PyKMIP's")
	}
}

// TestPyKMIPRefusals: a server certificate of another CA, a host name the
// server's certificate does not hold, a client certificate of another CA,
// and client certificates without clientAuth are all refused: connection
// or answered errors (exit 1 class), never a missing key.
func TestPyKMIPRefusals(t *testing.T) {
	s := kmiptest.Shared(t)
	uid := s.CreateKeys(t, 1, kmiptest.CreateOptions{Policy: kmiptest.SharedPolicy})[0]
	_, port, _ := net.SplitHostPort(s.Addr)
	get := func(addr string, as *kmiptest.Cert, roots *x509.CertPool) error {
		c, err := NewClient(Config{Servers: []string{addr}, Certificate: as.TLS(), RootCAs: roots})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Get(context.Background(), uid)
		if err == nil || errors.Is(err, keysafe.ErrKeyNotFound) {
			t.Fatalf("%s as %s: %v, want a refusal that is not a missing key", addr, as.Name, err)
		}
		return err
	}
	var ua x509.UnknownAuthorityError
	if err := get(s.Addr, s.PKI.Client, s.PKI.WrongPool()); !errors.As(err, &ua) {
		t.Errorf("server certificate of another CA: %v", err)
	}
	var he x509.HostnameError
	if err := get("localhost:"+port, s.PKI.Client, s.PKI.Pool()); !errors.As(err, &he) {
		t.Errorf("host name not in the server certificate: %v", err)
	}
	var oe *net.OpError
	if err := get(s.Addr, s.PKI.WrongClient, s.PKI.Pool()); !errors.As(err, &oe) || oe.Op != "remote error" {
		t.Errorf("client certificate of another CA: %v", err)
	}
	// Extended key usage serverAuth only: OpenSSL refuses it for a client
	// in the handshake.
	if err := get(s.Addr, s.PKI.ServerEKU, s.PKI.Pool()); !errors.As(err, &oe) || oe.Op != "remote error" {
		t.Errorf("client certificate for serverAuth only: %v", err)
	}
	// No extended key usage at all: the handshake passes, PyKMIP answers
	// Authentication Not Successful.
	var re *ResultError
	if err := get(s.Addr, s.PKI.NoEKU, s.PKI.Pool()); !errors.As(err, &re) || re.Reason != ReasonAuthenticationNotSuccessful || re.Client != "no-eku" {
		t.Errorf("client certificate without extended key usage: %v", err)
	}
}

// TestPyKMIPStopped: a stopped server is a connection error.
func TestPyKMIPStopped(t *testing.T) {
	s := kmiptest.Start(t)
	uid := s.CreateKeys(t, 1, kmiptest.CreateOptions{})[0]
	c := pyClient(t, s, nil)
	if _, err := c.Get(context.Background(), uid); err != nil {
		t.Fatal(err)
	}
	c.Close() // PyKMIP waits up to 10 s for open sessions when stopping
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	c = pyClient(t, s, nil)
	_, err := c.Get(context.Background(), uid)
	var ce *ConnError
	if !errors.As(err, &ce) || errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("stopped server: %v", err)
	}
	if ce.Server != "127.0.0.1:"+strconv.Itoa(s.Port) {
		t.Fatalf("error names %s", ce.Server)
	}
}
