package kmip

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/keys/kmip/kmiptest"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// A fake KMIP server in Go, to play a hostile or odd server. It uses the
// kmiptest PKI (no PyKMIP needed).

var (
	fakePKIOnce sync.Once
	fakePKI     *kmiptest.PKI
)

func testPKI(t testing.TB) *kmiptest.PKI {
	fakePKIOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kmip-fake-pki-")
		if err != nil {
			t.Fatal(err)
		}
		fakePKI = kmiptest.NewPKI(t, dir)
	})
	return fakePKI
}

type fakeServer struct {
	addr     string
	conns    atomic.Int32 // TLS connections accepted
	requests atomic.Int32 // requests read
}

// startFake serves handler on each accepted connection (after the TLS
// handshake, which requires a client certificate of the test CA).
func startFake(t *testing.T, handler func(f *fakeServer, c net.Conn)) *fakeServer {
	t.Helper()
	pki := testPKI(t)
	srv := pki.Server.TLS()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srv},
		ClientCAs:    pki.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if err := c.(*tls.Conn).Handshake(); err != nil {
				c.Close()
				continue
			}
			f.conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handler(f, c)
			}()
		}
	}()
	return f
}

// readReq reads one request message.
func (f *fakeServer) readReq(c net.Conn) (Item, error) {
	var h [8]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return Item{}, err
	}
	n := binary.BigEndian.Uint32(h[4:])
	if n > MaxMessageSize {
		return Item{}, errors.New("request too long")
	}
	b := make([]byte, 8+n)
	copy(b, h[:])
	if _, err := io.ReadFull(c, b[8:]); err != nil {
		return Item{}, err
	}
	f.requests.Add(1)
	return Decode(b)
}

// reqItems returns (operation, batch id, uid) of each request batch item.
type reqItem struct {
	op  Operation
	id  []byte
	uid string
}

func reqItems(m Item) []reqItem {
	var out []reqItem
	for _, bi := range m.Items[1:] {
		r := reqItem{op: Operation(bi.Child(TagOperation).Int)}
		if id := bi.Child(TagUniqueBatchItemID); id != nil {
			r.id = id.Bytes
		}
		if p := bi.Child(TagRequestPayload); p != nil {
			if u := p.Child(TagUniqueIdentifier); u != nil {
				r.uid = string(u.Bytes)
			}
		}
		out = append(out, r)
	}
	return out
}

// fakeKey is what the fake KMS holds under a uid.
type fakeKey struct {
	spec  keySpec
	state State
}

// kms answers GetAttributes and Get from keys, like a KMIP 1.x server
// (batch error option Stop). Unknown ids are Item Not Found.
func kms(keys map[string]fakeKey) func(f *fakeServer, c net.Conn) {
	return func(f *fakeServer, c net.Conn) {
		for {
			m, err := f.readReq(c)
			if err != nil {
				return
			}
			if _, err := c.Write(answer(m, keys)); err != nil {
				return
			}
		}
	}
}

func answer(m Item, keys map[string]fakeKey) []byte {
	var out []Item
	for _, r := range reqItems(m) {
		k, ok := keys[r.uid]
		if !ok {
			out = append(out, failItem(r.op, r.id, ReasonItemNotFound, "Could not locate object: "+r.uid))
			break
		}
		switch r.op {
		case OpGetAttributes:
			out = append(out, okItem(r.op, r.id, attrsPayloadItem(r.uid, k.state, k.spec.alg, k.spec.length)))
		case OpGet:
			out = append(out, okItem(r.op, r.id, getPayloadItem(k.spec)))
		default:
			out = append(out, failItem(r.op, r.id, ReasonOperationNotSupported, ""))
		}
	}
	b, err := Encode(respMessage(out...))
	if err != nil {
		panic(err)
	}
	return b
}

func testClient(t *testing.T, timeout time.Duration, servers ...string) *Client {
	t.Helper()
	pki := testPKI(t)
	c, err := NewClient(Config{Servers: servers, Certificate: pki.Client.TLS(), RootCAs: pki.Pool(), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func keyN(i byte) []byte { return bytes.Repeat([]byte{i}, 32) }

// TestFakeGet: keys come back, one round trip and one connection for
// several Gets, the attributes as the server said.
func TestFakeGet(t *testing.T) {
	keys := map[string]fakeKey{}
	for i := byte(1); i <= 5; i++ {
		keys[strconv.Itoa(int(i))] = fakeKey{aes256(strconv.Itoa(int(i)), keyN(i)), StateActive}
	}
	tk := aes256("t", keyN(9))
	tk.transparent, tk.format = true, FormatTransparentSymmetricKey
	keys["t"] = fakeKey{tk, StateActive}
	f := startFake(t, kms(keys))
	c := testClient(t, 0, f.addr)
	for i := byte(1); i <= 5; i++ {
		k, err := c.Get(context.Background(), strconv.Itoa(int(i)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(k.Material, keyN(i)) || k.Server != f.addr || k.Attrs.State != StateActive ||
			k.Attrs.Algorithm != AlgAES || k.Attrs.Length != 256 {
			t.Fatalf("key %d: %+v", i, k)
		}
	}
	if k, err := c.Get(context.Background(), "t"); err != nil || !bytes.Equal(k.Material, keyN(9)) {
		t.Fatalf("transparent key: %v", err)
	}
	if s := c.Stats(); s.RoundTrips != 6 || s.Dials != 1 || f.conns.Load() != 1 {
		t.Fatalf("6 Gets took %+v and %d connections, want 6 round trips on 1 connection", s, f.conns.Load())
	}
}

// TestFakeKeyErrors: missing, not active and not-AES-256 answers are
// *KeyError matching keysafe.ErrKeyNotFound and their own sentinel.
func TestFakeKeyErrors(t *testing.T) {
	wrapped := aes256("wrapped", keyN(1))
	wrapped.wrapped = true
	keys := map[string]fakeKey{
		"deactivated": {aes256("deactivated", keyN(1)), StateDeactivated},
		"compromised": {aes256("compromised", keyN(1)), StateCompromised},
		"preactive":   {aes256("preactive", keyN(1)), StatePreActive},
		"destroyed":   {aes256("destroyed", keyN(1)), StateDestroyed},
		"aes128":      {keySpec{uid: "aes128", objectType: ObjectSymmetricKey, format: FormatRaw, alg: AlgAES, length: 128, material: keyN(1)[:16]}, StateActive},
		"3des":        {keySpec{uid: "3des", objectType: ObjectSymmetricKey, format: FormatRaw, alg: AlgTripleDES, length: 256, material: keyN(1)}, StateActive},
		"short":       {keySpec{uid: "short", objectType: ObjectSymmetricKey, format: FormatRaw, alg: AlgAES, length: 256, material: keyN(1)[:31]}, StateActive},
		"secret":      {keySpec{uid: "secret", objectType: ObjectSecretData}, StateActive},
		"wrapped":     {wrapped, StateActive},
		"opaque":      {keySpec{uid: "opaque", objectType: ObjectSymmetricKey, format: KeyFormatType(0x15), alg: AlgAES, length: 256, material: keyN(1)}, StateActive},
	}
	f := startFake(t, kms(keys))
	c := testClient(t, 0, f.addr)
	cases := []struct {
		uid   string
		is    error
		state State
	}{
		{"missing", nil, 0},
		{"deactivated", ErrKeyNotActive, StateDeactivated},
		{"compromised", ErrKeyNotActive, StateCompromised},
		{"preactive", ErrKeyNotActive, StatePreActive},
		{"destroyed", ErrKeyNotActive, StateDestroyed},
		{"aes128", ErrKeyNotAES256, 0},
		{"3des", ErrKeyNotAES256, 0},
		{"short", ErrKeyNotAES256, 0},
		{"secret", ErrKeyNotAES256, 0},
		{"wrapped", ErrKeyNotAES256, 0},
		{"opaque", ErrKeyNotAES256, 0},
	}
	for _, cs := range cases {
		k, err := c.Get(context.Background(), cs.uid)
		if k != nil || !errors.Is(err, keysafe.ErrKeyNotFound) {
			t.Errorf("%q: key %v, err %v, want ErrKeyNotFound", cs.uid, k, err)
			continue
		}
		var ke *KeyError
		var kn *keysafe.KeyNotFoundError
		if !errors.As(err, &ke) || !errors.As(err, &kn) || kn.KeyID != cs.uid || kn.Hint == "" {
			t.Errorf("%q: %v is not a KeyError with a KeyNotFoundError hint", cs.uid, err)
			continue
		}
		for _, s := range []error{ErrKeyNotActive, ErrKeyNotAES256, ErrPermissionDenied} {
			if errors.Is(err, s) != (s == cs.is) {
				t.Errorf("%q: errors.Is(%v) = %v", cs.uid, s, !(s == cs.is))
			}
		}
		if ke.State != cs.state && cs.is == ErrKeyNotActive {
			t.Errorf("%q: state %v, want %v", cs.uid, ke.State, cs.state)
		}
		if cs.uid == "missing" && (ke.Reason != ReasonItemNotFound || ke.Server != f.addr) {
			t.Errorf("missing: %+v", ke)
		}
	}
	if n := f.requests.Load(); n != int32(len(cases)) {
		t.Errorf("%d requests for %d cases", n, len(cases))
	}
	// Ids no server can hold are key-not-supplied without asking.
	for _, uid := range []string{"", "bad\x00id", "\xff", string(make([]byte, MaxKeyIDLen+1))} {
		_, err := c.Get(context.Background(), uid)
		var kn *keysafe.KeyNotFoundError
		var ke *KeyError
		if !errors.As(err, &kn) || kn.KeyID != uid || errors.As(err, &ke) {
			t.Errorf("id %q: %v", uid, err)
		}
	}
	if n := f.requests.Load(); n != int32(len(cases)) {
		t.Errorf("invalid ids reached the server")
	}
}

// TestFakePermissionDenied: Permission Denied names the client
// certificate; a GetAttributes refusal alone is retried as a Get alone.
func TestFakePermissionDenied(t *testing.T) {
	f := startFake(t, func(f *fakeServer, c net.Conn) {
		for {
			m, err := f.readReq(c)
			if err != nil {
				return
			}
			var out []Item
			for _, r := range reqItems(m) {
				switch {
				case r.uid == "denied":
					out = append(out, failItem(r.op, r.id, ReasonPermissionDenied, "Could not locate object: denied"))
				case r.op == OpGetAttributes: // allowed to Get, not to GetAttributes
					out = append(out, failItem(r.op, r.id, ReasonPermissionDenied, ""))
				default:
					out = append(out, okItem(r.op, r.id, getPayloadItem(aes256(r.uid, keyN(7)))))
				}
				if out[len(out)-1].Child(TagResultStatus).Int != 0 {
					break
				}
			}
			c.Write(encodeT(t, respMessage(out...)))
		}
	})
	c := testClient(t, 0, f.addr)
	_, err := c.Get(context.Background(), "denied")
	var ke *KeyError
	if !errors.Is(err, ErrPermissionDenied) || !errors.Is(err, keysafe.ErrKeyNotFound) || !errors.As(err, &ke) ||
		ke.Client != kmiptest.ClientCN {
		t.Fatalf("denied: %v", err)
	}
	k, err := c.Get(context.Background(), "get-only")
	if err != nil || !bytes.Equal(k.Material, keyN(7)) || k.Attrs.State != 0 {
		t.Fatalf("a key readable by Get alone: %v", err)
	}
	// denied: 1 batch + 1 Get alone; get-only: 1 batch + 1 Get alone.
	if n := c.Stats().RoundTrips; n != 4 {
		t.Fatalf("%d round trips, want 4", n)
	}
}

// TestFakeBatchRefused: a server that refuses two-item batches with a
// message-level Invalid Message gets the items one by one, from then on.
func TestFakeBatchRefused(t *testing.T) {
	keys := map[string]fakeKey{"1": {aes256("1", keyN(1)), StateActive}, "2": {aes256("2", keyN(2)), StateDeactivated}}
	f := startFake(t, func(f *fakeServer, c net.Conn) {
		for {
			m, err := f.readReq(c)
			if err != nil {
				return
			}
			if len(m.Items) > 2 {
				c.Write(encodeT(t, respMessage(failItem(0, nil, ReasonInvalidMessage, "batches are not supported"))))
				continue
			}
			c.Write(answer(m, keys))
		}
	})
	c := testClient(t, 0, f.addr)
	k, err := c.Get(context.Background(), "1")
	if err != nil || !bytes.Equal(k.Material, keyN(1)) || k.Attrs.State != StateActive {
		t.Fatalf("Get: %v", err)
	}
	if _, err := c.Get(context.Background(), "2"); !errors.Is(err, ErrKeyNotActive) {
		t.Fatalf("a deactivated key one by one: %v", err)
	}
	if _, err := c.Get(context.Background(), "3"); !errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("a missing key one by one: %v", err)
	}
	// 1: refused batch + GetAttributes + Get; 2: GetAttributes; 3: GetAttributes.
	if n := c.Stats().RoundTrips; n != 5 {
		t.Fatalf("%d round trips, want 5", n)
	}
}

// TestFakeResultError: a message-level refusal (Authentication Not
// Successful) is a *ResultError, not a missing key.
func TestFakeResultError(t *testing.T) {
	f := startFake(t, func(f *fakeServer, c net.Conn) {
		for {
			if _, err := f.readReq(c); err != nil {
				return
			}
			c.Write(encodeT(t, respMessage(failItem(0, nil, ReasonAuthenticationNotSuccessful, "Error verifying the client certificate.\x1b[2J"))))
		}
	})
	c := testClient(t, 0, f.addr)
	_, err := c.Get(context.Background(), "1")
	var re *ResultError
	if !errors.As(err, &re) || re.Reason != ReasonAuthenticationNotSuccessful || errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("err = %v, want a ResultError (Authentication Not Successful)", err)
	}
	if bytes.ContainsRune([]byte(err.Error()), 0x1b) {
		t.Fatal("the server's control characters reach the error message")
	}
}

// TestFakeFailover: a member that is down is skipped (network errors
// only); a member that answers "not found" is not failed over.
func TestFakeFailover(t *testing.T) {
	down := closedPort(t)
	good := startFake(t, kms(map[string]fakeKey{"1": {aes256("1", keyN(1)), StateActive}}))
	c := testClient(t, 0, down, good.addr)
	k, err := c.Get(context.Background(), "1")
	if err != nil || k.Server != good.addr {
		t.Fatalf("failover: %v", err)
	}
	if _, err := c.Get(context.Background(), "1"); err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Dials != 2 {
		t.Fatalf("%d dials, want 2 (the down member once, then the connection kept)", s.Dials)
	}

	empty := startFake(t, kms(map[string]fakeKey{}))
	other := startFake(t, kms(map[string]fakeKey{"1": {aes256("1", keyN(1)), StateActive}}))
	c2 := testClient(t, 0, empty.addr, other.addr)
	if _, err := c2.Get(context.Background(), "1"); !errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("an answer was failed over: %v", err)
	}
	if other.conns.Load() != 0 {
		t.Fatal("the second member was asked after the first answered")
	}

	c3 := testClient(t, 0, down, closedPort(t))
	_, err = c3.Get(context.Background(), "1")
	var ce *ClusterError
	if !errors.As(err, &ce) || len(ce.Errs) != 2 || errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("two members down: %v", err)
	}
}

func closedPort(t *testing.T) string {
	p, err := kmiptest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// TestFakeReconnect: a server that closes the connection after each answer
// costs a new connection per request, not an error.
func TestFakeReconnect(t *testing.T) {
	keys := map[string]fakeKey{"1": {aes256("1", keyN(1)), StateActive}}
	f := startFake(t, func(f *fakeServer, c net.Conn) {
		m, err := f.readReq(c)
		if err != nil {
			return
		}
		c.Write(answer(m, keys))
	})
	c := testClient(t, 0, f.addr)
	for i := 0; i < 3; i++ {
		if _, err := c.Get(context.Background(), "1"); err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
	}
	if n := f.conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

// TestFakeHostile: a hostile server's answers are malformed connection
// errors, bounded in time (the timeout) whatever it sends.
func TestFakeHostile(t *testing.T) {
	const timeout = 400 * time.Millisecond
	hdrOnly := func(n uint32) []byte { return hdr(TagResponseMessage, TypeStructure, n) }
	respond := func(send func(c net.Conn, m Item)) func(f *fakeServer, c net.Conn) {
		return func(f *fakeServer, c net.Conn) {
			for {
				m, err := f.readReq(c)
				if err != nil {
					return
				}
				send(c, m)
			}
		}
	}
	deep := nested(40)
	deepMsg := cat(hdrOnly(uint32(len(deep))), deep)
	wrongType := func(c net.Conn, m Item) {
		r := reqItems(m)
		bi := okItem(r[0].op, r[0].id, attrsPayloadItem(r[0].uid, StateActive, 0, 0))
		bi.Items[2] = Text(TagResultStatus, "Success")
		c.Write(encodeT(t, respMessage(bi)))
	}
	otherKey := func(c net.Conn, m Item) {
		r := reqItems(m)
		c.Write(encodeT(t, respMessage(okItem(r[0].op, r[0].id, attrsPayloadItem(r[0].uid, StateActive, 0, 0)),
			okItem(r[1].op, r[1].id, getPayloadItem(aes256("somebody-else", keyN(3)))))))
	}
	staleID := func(c net.Conn, m Item) {
		r := reqItems(m)
		c.Write(encodeT(t, respMessage(failItem(r[0].op, []byte("old"), ReasonItemNotFound, ""))))
	}
	cases := []struct {
		name    string
		send    func(c net.Conn, m Item)
		timeout bool // a deadline error, else ErrMalformed
	}{
		{"huge length", func(c net.Conn, m Item) { c.Write(hdrOnly(0xFFFFFFF8)) }, false},
		{"length above the limit", func(c net.Conn, m Item) { c.Write(hdrOnly(MaxMessageSize)) }, false},
		{"deep nesting", func(c net.Conn, m Item) { c.Write(deepMsg) }, false},
		{"not a response", func(c net.Conn, m Item) { c.Write(encodeT(t, Integer(TagResponseMessage, 1))) }, false},
		{"wrong types", wrongType, false},
		{"another object", otherKey, false},
		{"an answer to another request", staleID, false},
		{"claims much, sends little", func(c net.Conn, m Item) { c.Write(hdrOnly(MaxMessageSize - 8)) }, true},
		{"slow drip", func(c net.Conn, m Item) {
			c.Write(hdrOnly(64))
			for i := 0; i < 64; i++ {
				time.Sleep(50 * time.Millisecond)
				if _, err := c.Write([]byte{0}); err != nil {
					return
				}
			}
		}, true},
		{"silence", func(c net.Conn, m Item) { io.Copy(io.Discard, c) }, true},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			f := startFake(t, respond(cs.send))
			c := testClient(t, timeout, f.addr)
			start := time.Now()
			_, err := c.Get(context.Background(), "1")
			el := time.Since(start)
			var ce *ConnError
			if !errors.As(err, &ce) || errors.Is(err, keysafe.ErrKeyNotFound) {
				t.Fatalf("err = %v, want a ConnError", err)
			}
			if cs.timeout != errors.Is(err, os.ErrDeadlineExceeded) || cs.timeout == errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v (timeout expected: %v)", err, cs.timeout)
			}
			if el > timeout+time.Second {
				t.Fatalf("took %v with a timeout of %v", el, timeout)
			}
		})
	}
}

// TestReadResponseMemory: a header claiming the largest allowed message
// followed by nothing costs a small buffer, not the claimed size.
func TestReadResponseMemory(t *testing.T) {
	msg := hdr(TagResponseMessage, TypeStructure, MaxMessageSize-8)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 100
	for i := 0; i < n; i++ {
		if _, _, err := readResponse(bytes.NewReader(msg)); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / n; per > 16<<10 {
		t.Fatalf("%d bytes allocated per truncated answer claiming %d", per, MaxMessageSize)
	}
}

// TestFakeContext: ctx cancellation and a ctx deadline shorter than the
// timeout end a request at once.
func TestFakeContext(t *testing.T) {
	f := startFake(t, func(f *fakeServer, c net.Conn) {
		f.readReq(c)
		io.Copy(io.Discard, c) // never answers; returns when the connection closes
	})
	c := testClient(t, time.Minute, f.addr, closedPort(t))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := c.Get(ctx, "1")
	if !errors.Is(err, context.Canceled) || time.Since(start) > 2*time.Second {
		t.Fatalf("cancelled after 200ms: %v after %v", err, time.Since(start))
	}
	ctx, cancel = context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.Get(ctx, "1")
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Fatalf("ctx deadline 200ms: %v after %v", err, time.Since(start))
	}
	var ce *ClusterError
	if errors.As(err, &ce) {
		t.Fatal("the context's end was failed over to the next member")
	}
}

// TestFakeTLS: the server's certificate is verified against the CA and
// the host name; a client certificate the server does not trust is
// refused in the handshake. All are ConnErrors, never a missing key.
func TestFakeTLS(t *testing.T) {
	pki := testPKI(t)
	f := startFake(t, kms(map[string]fakeKey{"1": {aes256("1", keyN(1)), StateActive}}))
	_, port, _ := net.SplitHostPort(f.addr)
	get := func(cfg Config) error {
		c, err := NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Get(context.Background(), "1")
		var ce *ConnError
		if err != nil && (!errors.As(err, &ce) || errors.Is(err, keysafe.ErrKeyNotFound)) {
			t.Fatalf("%v is not a ConnError", err)
		}
		return err
	}
	var ua x509.UnknownAuthorityError
	if err := get(Config{Servers: []string{f.addr}, Certificate: pki.Client.TLS(), RootCAs: pki.WrongPool()}); !errors.As(err, &ua) {
		t.Errorf("wrong CA: %v", err)
	}
	var he x509.HostnameError
	if err := get(Config{Servers: []string{"localhost:" + port}, Certificate: pki.Client.TLS(), RootCAs: pki.Pool()}); !errors.As(err, &he) {
		t.Errorf("host name not in the certificate: %v", err)
	}
	var oe *net.OpError
	if err := get(Config{Servers: []string{f.addr}, Certificate: pki.WrongClient.TLS(), RootCAs: pki.Pool()}); !errors.As(err, &oe) || oe.Op != "remote error" {
		t.Errorf("client certificate of another CA: %v", err)
	}
	if err := get(Config{Servers: []string{f.addr}, Certificate: pki.Client.TLS(), RootCAs: pki.Pool()}); err != nil {
		t.Errorf("the right certificates: %v", err)
	}
}

// TestFakeOldTLS: a server that speaks only TLS 1.1 is refused.
func TestFakeOldTLS(t *testing.T) {
	pki := testPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.Server.TLS()},
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	c := testClient(t, 0, ln.Addr().String())
	_, err = c.Get(context.Background(), "1")
	var ce *ConnError
	if !errors.As(err, &ce) || errors.Is(err, keysafe.ErrKeyNotFound) {
		t.Fatalf("TLS 1.1 server: %v", err)
	}
}

func TestNewClientRefuses(t *testing.T) {
	pki := testPKI(t)
	good := Config{Servers: []string{"127.0.0.1:5696"}, Certificate: pki.Client.TLS(), RootCAs: pki.Pool()}
	bad := []func(c *Config){
		func(c *Config) { c.Servers = nil },
		func(c *Config) { c.Servers = []string{"host:0"} },
		func(c *Config) { c.Servers = []string{"host:99999"} },
		func(c *Config) { c.Servers = []string{":5696"} },
		func(c *Config) { c.Servers = []string{"::1:5696"} },
		func(c *Config) { c.RootCAs = nil },
		func(c *Config) { c.Certificate = tls.Certificate{} },
		func(c *Config) { c.Timeout = -1 },
		func(c *Config) { c.Version = ProtocolVersion{2, 0} },
	}
	for i, b := range bad {
		cfg := good
		b(&cfg)
		if _, err := NewClient(cfg); err == nil {
			t.Errorf("bad config %d accepted", i)
		}
	}
	c, err := NewClient(good)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Get(context.Background(), "1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get on a closed client: %v", err)
	}
	for in, want := range map[string]string{"kms": "kms:5696", "kms:1234": "kms:1234", "[::1]": "[::1]:5696", "[::1]:7": "[::1]:7"} {
		if got, err := NormalizeAddr(in); err != nil || got != want {
			t.Errorf("NormalizeAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
