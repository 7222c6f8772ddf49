package kmip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// DefaultTimeout bounds one request to one server (connect, TLS handshake,
// request and answer) when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// DefaultPort is the KMIP port (IANA), used when an address has none.
const DefaultPort = 5696

// Config says which servers to ask and how to prove who we are.
type Config struct {
	// Servers are the members of one KMS cluster as "host:port", tried in
	// order; the client fails over to the next on a connection failure
	// (*ConnError), never on an answer.
	Servers []string
	// Certificate is the client certificate (with its private key) the
	// servers know this client by.
	Certificate tls.Certificate
	// RootCAs verify the servers' certificates (the system roots are not
	// used). Required: there is no way to skip verification.
	RootCAs *x509.CertPool
	// Timeout bounds one request to one server; 0 means DefaultTimeout.
	// The context passed to each call bounds the whole call.
	Timeout time.Duration
	// Version is the protocol version requests carry; zero means
	// DefaultVersion. Only KMIP 1.x is spoken.
	Version ProtocolVersion
}

// Client is a KMIP client over mutual TLS (1.2 or later, the server's
// certificate and host name verified against Config.RootCAs). It keeps one
// connection open and sends one request at a time on it; it is safe for
// concurrent use (requests are serialised). Close it when done.
type Client struct {
	servers  []string
	tls      *tls.Config
	timeout  time.Duration
	version  ProtocolVersion
	clientCN string

	mu      sync.Mutex
	conn    net.Conn
	connIdx int // member conn goes to
	cur     int // member to try first (the last that answered)
	seq     uint64
	noBatch bool // the server refused a two-item batch: send items one by one
	closed  bool

	roundTrips atomic.Int64
	dials      atomic.Int64
}

// Stats counts a client's work.
type Stats struct {
	RoundTrips int64 // requests answered (one per Get when batching works)
	Dials      int64 // connections opened (TLS handshakes attempted)
}

// NewClient checks the configuration and returns a client. It does not
// connect: the first request does.
func NewClient(cfg Config) (*Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("kmip: no server given")
	}
	servers := make([]string, len(cfg.Servers))
	for i, s := range cfg.Servers {
		a, err := NormalizeAddr(s)
		if err != nil {
			return nil, err
		}
		servers[i] = a
	}
	if cfg.RootCAs == nil {
		return nil, errors.New("kmip: no CA certificate to verify the server with")
	}
	if len(cfg.Certificate.Certificate) == 0 || cfg.Certificate.PrivateKey == nil {
		return nil, errors.New("kmip: no client certificate and key")
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("kmip: negative timeout %v", cfg.Timeout)
	}
	leaf := cfg.Certificate.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cfg.Certificate.Certificate[0]); err != nil {
			return nil, fmt.Errorf("kmip: client certificate: %w", err)
		}
	}
	c := &Client{
		servers: servers,
		tls: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			RootCAs:      cfg.RootCAs,
			Certificates: []tls.Certificate{cfg.Certificate},
		},
		timeout:  cfg.Timeout,
		version:  cfg.Version,
		clientCN: leaf.Subject.CommonName,
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	}
	if c.version == (ProtocolVersion{}) {
		c.version = DefaultVersion
	}
	if c.version.Major != 1 {
		return nil, fmt.Errorf("kmip: protocol version %v is not spoken (KMIP 1.x only)", c.version)
	}
	return c, nil
}

// NormalizeAddr checks a server address "host:port" (or "host", which gets
// DefaultPort; an IPv6 host goes in brackets) and returns it as
// "host:port".
func NormalizeAddr(s string) (string, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "[") {
			return "", fmt.Errorf("kmip: server address %q: an IPv6 address goes in brackets ([addr]:port)", s)
		}
		switch {
		case strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]"):
			host, port = s[1:len(s)-1], strconv.Itoa(DefaultPort)
		case strings.Contains(s, ":"):
			return "", fmt.Errorf("kmip: server address %q is not host:port", s)
		default:
			host, port = s, strconv.Itoa(DefaultPort)
		}
	}
	if host == "" || strings.ContainsFunc(host, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == '/' }) {
		return "", fmt.Errorf("kmip: server address %q has no valid host", s)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return "", fmt.Errorf("kmip: server address %q: port must be 1 to 65535", s)
	}
	return net.JoinHostPort(host, strconv.Itoa(p)), nil
}

// Servers returns the servers, normalised, in the order tried.
func (c *Client) Servers() []string { return append([]string(nil), c.servers...) }

// ClientCN returns the subject CN of the client certificate.
func (c *Client) ClientCN() string { return c.clientCN }

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{RoundTrips: c.roundTrips.Load(), Dials: c.dials.Load()}
}

// Close closes the connection. Later calls fail.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	return c.dropConn()
}

func (c *Client) dropConn() error {
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn = nil
	return err
}

// ErrClosed is returned by calls on a closed client.
var ErrClosed = errors.New("kmip: client closed")

// Key is a key a server returned. Material is the caller's to zero.
type Key struct {
	ID       string
	Material []byte     // 32 bytes of AES-256 key
	Server   string     // member that answered
	Attrs    Attributes // as GetAttributes said; State 0 when it could not say
}

// Zero overwrites the key material.
func (k *Key) Zero() { clear(k.Material) }

// validID refuses a Unique Identifier that cannot be on a server.
func validID(uid string) error {
	switch {
	case uid == "":
		return errors.New("is empty")
	case len(uid) > MaxKeyIDLen:
		return fmt.Errorf("is %d bytes long (the limit is %d)", len(uid), MaxKeyIDLen)
	case !utf8.ValidString(uid):
		return errors.New("is not UTF-8")
	case strings.ContainsFunc(uid, unicode.IsControl):
		return errors.New("holds control characters")
	}
	return nil
}

// badID is the error for a key id no server can hold: key not supplied,
// without asking.
func badID(uid string, why error) error {
	return &keysafe.KeyNotFoundError{KeyID: uid, Hint: "the key id " + why.Error() + ": not a KMIP Unique Identifier"}
}

// Get fetches the AES-256 key with the Unique Identifier uid (format Raw).
// It asks GetAttributes (State, algorithm, length, object type) and Get in
// one batch: one round trip. Errors:
//   - *KeyError (errors.Is keysafe.ErrKeyNotFound): no such key (Item Not
//     Found), Permission Denied (ErrPermissionDenied), a key whose State is
//     not Active (ErrKeyNotActive), an object that is not a plain AES-256
//     key (ErrKeyNotAES256);
//   - *keysafe.KeyNotFoundError, without asking, for an id that cannot be a
//     Unique Identifier (empty, not UTF-8, control characters, too long);
//   - *ResultError: another failure the server answered (authentication
//     not successful, invalid message...);
//   - *ConnError or *ClusterError: no server could be reached or answered
//     properly; a ConnError wrapping ctx.Err() when ctx ended.
func (c *Client) Get(ctx context.Context, uid string) (*Key, error) {
	if err := validID(uid); err != nil {
		return nil, badID(uid, err)
	}
	c.mu.Lock()
	batch := !c.noBatch
	c.mu.Unlock()
	if batch {
		k, err, next := c.getBatched(ctx, uid)
		switch next {
		case nextDone:
			return k, err
		case nextGetAlone:
			return c.getAlone(ctx, uid, Attributes{})
		}
	}
	// One by one: GetAttributes (to explain), then Get.
	attrs, server, aerr := c.getAttributes(ctx, uid)
	if aerr != nil {
		var ke *KeyError
		if errors.As(aerr, &ke) && ke.Reason == ReasonItemNotFound {
			return nil, aerr
		}
		if !isAnswer(aerr) {
			return nil, aerr
		}
		attrs = Attributes{} // refused or unsupported: Get alone decides
	} else if attrs.State != 0 && attrs.State != StateActive {
		return nil, &KeyError{Server: server, KeyID: uid, State: attrs.State}
	}
	return c.getAlone(ctx, uid, attrs)
}

// getAlone sends Get by itself; attrs are what GetAttributes said.
func (c *Client) getAlone(ctx context.Context, uid string, attrs Attributes) (*Key, error) {
	r, server, raw, err := c.do(ctx, []requestItem{{op: OpGet, payload: getPayload(uid)}})
	defer clear(raw)
	if err != nil {
		return nil, err
	}
	return c.keyFrom(server, uid, &r.items[0], attrs)
}

// isAnswer says whether err is the server's answer (as opposed to a
// connection failure).
func isAnswer(err error) bool {
	var ke *KeyError
	var re *ResultError
	return errors.As(err, &ke) || errors.As(err, &re)
}

// What Get does after a batched attempt.
const (
	nextDone       = iota // the answer is final
	nextGetAlone          // GetAttributes was refused: ask Get alone
	nextSequential        // the server refused the batch: ask one by one
)

// getBatched sends GetAttributes and Get in one message.
func (c *Client) getBatched(ctx context.Context, uid string) (k *Key, err error, next int) {
	r, server, raw, err := c.do(ctx, []requestItem{
		{op: OpGetAttributes, payload: getAttributesPayload(uid)},
		{op: OpGet, payload: getPayload(uid)},
	})
	defer clear(raw)
	if err != nil {
		return nil, err, nextDone
	}
	ga := &r.items[0]
	if ga.status != StatusSuccess {
		switch {
		case ga.reason == ReasonItemNotFound:
			return nil, c.failure(server, OpGetAttributes, uid, ga), nextDone
		case ga.id == nil && (ga.reason == ReasonInvalidMessage || ga.reason == ReasonFeatureNotSupported ||
			ga.reason == ReasonOperationNotSupported):
			// A message-level refusal: perhaps of batches.
			c.mu.Lock()
			c.noBatch = true
			c.mu.Unlock()
			return nil, nil, nextSequential
		case ga.id == nil:
			return nil, c.failure(server, OpGet, uid, ga), nextDone
		}
		return nil, nil, nextGetAlone // GetAttributes refused: Get alone may work
	}
	if ga.payload == nil {
		return nil, c.connErr(server, malformed(TagResponsePayload, "missing from a successful GetAttributes"), true), nextDone
	}
	attrs, err := parseAttributesPayload(ga.payload)
	if err != nil {
		return nil, c.connErr(server, err, true), nextDone
	}
	if attrs.UniqueID != uid {
		return nil, c.connErr(server, malformed(TagUniqueIdentifier, "GetAttributes answered about %q, not the key asked for", attrs.UniqueID), true), nextDone
	}
	if attrs.State != 0 && attrs.State != StateActive {
		return nil, &KeyError{Server: server, KeyID: uid, State: attrs.State}, nextDone
	}
	if len(r.items) < 2 {
		return nil, c.connErr(server, malformed(TagBatchItem, "the Get answer is missing after a successful GetAttributes"), true), nextDone
	}
	k, err = c.keyFrom(server, uid, &r.items[1], attrs)
	return k, err, nextDone
}

// keyFrom checks a Get answer and copies the key out of it.
func (c *Client) keyFrom(server, uid string, it *responseItem, attrs Attributes) (*Key, error) {
	if it.status != StatusSuccess {
		return nil, c.failure(server, OpGet, uid, it)
	}
	if it.payload == nil {
		return nil, c.connErr(server, malformed(TagResponsePayload, "missing from a successful Get"), true)
	}
	ko, err := parseGetPayload(it.payload)
	if err != nil {
		return nil, c.connErr(server, err, true)
	}
	if ko.uid != uid {
		return nil, c.connErr(server, malformed(TagUniqueIdentifier, "Get returned object %q, not the key asked for", ko.uid), true)
	}
	bad := &KeyError{Server: server, KeyID: uid, State: attrs.State, ObjectType: ko.objectType,
		Algorithm: ko.algorithm, Length: ko.length, Format: ko.format}
	alg, length := ko.algorithm, ko.length
	if alg == 0 {
		alg = attrs.Algorithm
	}
	if length == 0 {
		length = attrs.Length
	}
	switch {
	case ko.objectType != ObjectSymmetricKey:
		bad.Detail = fmt.Sprintf("it is a %v, not a symmetric key", ko.objectType)
	case ko.wrapped:
		bad.Detail = "it came back wrapped (Key Wrapping Data), which is not asked for nor supported"
	case ko.compressed:
		bad.Detail = "it came back compressed, which is not supported"
	case ko.format != FormatRaw && ko.format != FormatTransparentSymmetricKey && ko.format != FormatOpaque:
		bad.Detail = fmt.Sprintf("its key format is %v, not Raw", ko.format)
	case alg != 0 && alg != AlgAES:
		bad.Detail = fmt.Sprintf("it is a %v key, not AES", alg)
	case length != 0 && length != 256:
		bad.Detail = fmt.Sprintf("it is %d bits long, not 256", length)
	case len(ko.material) != 32:
		bad.Detail = fmt.Sprintf("its key material is %d bytes, not 32", len(ko.material))
	}
	if bad.Detail != "" {
		return nil, bad
	}
	attrs.UniqueID = uid
	if attrs.Algorithm == 0 {
		attrs.Algorithm = alg
	}
	if attrs.Length == 0 {
		attrs.Length = length
	}
	if attrs.ObjectType == 0 {
		attrs.ObjectType = ko.objectType
	}
	key := make([]byte, 32)
	copy(key, ko.material)
	return &Key{ID: uid, Material: key, Server: server, Attrs: attrs}, nil
}

// failure maps a failed batch item to an error.
func (c *Client) failure(server string, op Operation, uid string, it *responseItem) error {
	switch it.reason {
	case ReasonItemNotFound, ReasonPermissionDenied, ReasonObjectArchived, ReasonKeyValueNotPresent,
		ReasonSensitive, ReasonNotExtractable:
		return &KeyError{Server: server, KeyID: uid, Reason: it.reason, Message: it.message, Client: c.clientCN}
	}
	return &ResultError{Server: server, Operation: op, Status: it.status, Reason: it.reason,
		Message: it.message, Client: c.clientCN}
}

// GetAttributes asks for the State, Cryptographic Algorithm, Cryptographic
// Length and Object Type of the object uid. Errors as for Get (a
// *KeyError for Item Not Found or Permission Denied).
func (c *Client) GetAttributes(ctx context.Context, uid string) (Attributes, error) {
	if err := validID(uid); err != nil {
		return Attributes{}, badID(uid, err)
	}
	a, _, err := c.getAttributes(ctx, uid)
	return a, err
}

func (c *Client) getAttributes(ctx context.Context, uid string) (Attributes, string, error) {
	r, server, raw, err := c.do(ctx, []requestItem{{op: OpGetAttributes, payload: getAttributesPayload(uid)}})
	defer clear(raw)
	if err != nil {
		return Attributes{}, "", err
	}
	it := &r.items[0]
	if it.status != StatusSuccess {
		return Attributes{}, server, c.failure(server, OpGetAttributes, uid, it)
	}
	if it.payload == nil {
		return Attributes{}, server, c.connErr(server, malformed(TagResponsePayload, "missing from a successful GetAttributes"), true)
	}
	a, err := parseAttributesPayload(it.payload)
	if err != nil {
		return Attributes{}, server, c.connErr(server, err, true)
	}
	if a.UniqueID != uid {
		return Attributes{}, server, c.connErr(server, malformed(TagUniqueIdentifier, "GetAttributes answered about %q, not the object asked for", a.UniqueID), true)
	}
	return a, server, nil
}

// DiscoverVersions asks which protocol versions the server speaks (most
// preferred first).
func (c *Client) DiscoverVersions(ctx context.Context) ([]ProtocolVersion, error) {
	r, server, raw, err := c.do(ctx, []requestItem{{op: OpDiscoverVersions, payload: discoverVersionsPayload(nil)}})
	defer clear(raw)
	if err != nil {
		return nil, err
	}
	it := &r.items[0]
	if it.status != StatusSuccess {
		return nil, c.failure(server, OpDiscoverVersions, "", it)
	}
	if it.payload == nil {
		return nil, nil
	}
	vs, err := parseVersionsPayload(it.payload)
	if err != nil {
		return nil, c.connErr(server, err, true)
	}
	return vs, nil
}

// do sends one request (its items numbered) and returns the checked
// response, the member that answered and the raw response bytes (the
// caller zeroes them: they may hold key material). It tries the members in
// turn, starting with the last that answered, and fails over on a
// *ConnError; a connection reused from an earlier request that fails
// before any answer byte is replaced once (servers close idle
// connections).
func (c *Client) do(ctx context.Context, items []requestItem) (*response, string, []byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, "", nil, ErrClosed
	}
	for i := range items {
		c.seq++
		items[i].id = binary.BigEndian.AppendUint64(nil, c.seq)
	}
	req, err := encodeRequest(c.version, MaxMessageSize, items)
	if err != nil {
		return nil, "", nil, err
	}
	var errs []*ConnError
	n := len(c.servers)
	for i := 0; i < n; i++ {
		idx := (c.cur + i) % n
		r, raw, err := c.tryServer(ctx, idx, req, items)
		if err == nil {
			c.cur = idx
			return r, c.servers[idx], raw, nil
		}
		clear(raw)
		if cerr := ctxDone(ctx); cerr != nil {
			return nil, "", nil, &ConnError{Server: c.servers[idx], Err: cerr,
				msg: fmt.Sprintf("request to KMS server %s stopped: %v", c.servers[idx], cerr)}
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return nil, "", nil, errs[0]
	}
	return nil, "", nil, &ClusterError{Errs: errs}
}

// ctxDone returns ctx's error, or context.DeadlineExceeded once its
// deadline has passed (a connection deadline set from it may fire before
// the context's own timer).
func ctxDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// tryServer runs one request on member idx within one timeout.
func (c *Client) tryServer(ctx context.Context, idx int, req []byte, items []requestItem) (*response, []byte, *ConnError) {
	server := c.servers[idx]
	if c.conn != nil && c.connIdx != idx {
		c.dropConn()
	}
	deadline := time.Now().Add(c.timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	reused := c.conn != nil
	for {
		if c.conn == nil {
			conn, err := c.dial(ctx, server, deadline)
			if err != nil {
				return nil, nil, c.connErr(server, err, false)
			}
			c.conn, c.connIdx = conn, idx
		}
		raw, started, err := c.exchange(ctx, c.conn, deadline, req)
		if err != nil {
			c.dropConn()
			if reused && !started && ctxDone(ctx) == nil && time.Now().Before(deadline) {
				reused = false
				continue
			}
			return nil, raw, c.connErr(server, err, started)
		}
		c.roundTrips.Add(1)
		r, err := parseResponse(raw)
		if err == nil {
			err = checkItems(r, items)
		}
		if err != nil {
			c.dropConn() // out of step with the server
			return nil, raw, c.connErr(server, err, true)
		}
		return r, raw, nil
	}
}

// checkItems matches the response's batch items to the request's: the
// same order, the batch item ids echoed, the operations the same. A server
// may answer fewer items than asked when one failed (batch error option
// Stop), and may answer a whole-message failure as one item without id.
func checkItems(r *response, items []requestItem) error {
	if len(r.items) > len(items) {
		return malformed(TagBatchCount, "%d answers to %d requests", len(r.items), len(items))
	}
	for i := range r.items {
		it := &r.items[i]
		if it.id == nil {
			if len(items) == 1 || (len(r.items) == 1 && it.status != StatusSuccess) {
				continue
			}
			return malformed(TagUniqueBatchItemID, "missing from answer %d of a batch", i+1)
		}
		if string(it.id) != string(items[i].id) {
			return malformed(TagUniqueBatchItemID, "answer %d is for another request", i+1)
		}
		if it.op != 0 && it.op != items[i].op {
			return malformed(TagOperation, "answer %d is for %v, not %v", i+1, it.op, items[i].op)
		}
		if it.status == StatusSuccess && r.version.Major != 1 {
			return malformed(TagProtocolVersion, "answer in version %v to a KMIP 1.x request", r.version)
		}
		if it.status != StatusSuccess && i < len(r.items)-1 {
			continue // batch error option Continue; not asked but harmless
		}
	}
	if n := len(r.items); n < len(items) && r.items[n-1].status == StatusSuccess {
		return malformed(TagBatchCount, "%d answers to %d requests, the last a success", n, len(items))
	}
	return nil
}

// dial opens a TLS connection to server (handshake done) by deadline.
func (c *Client) dial(ctx context.Context, server string, deadline time.Time) (net.Conn, error) {
	c.dials.Add(1)
	dctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	host, _, _ := net.SplitHostPort(server)
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", server)
	if err != nil {
		return nil, err
	}
	conf := c.tls.Clone()
	conf.ServerName = host
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(dctx); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// aLongTimeAgo is a deadline that makes pending I/O fail at once.
var aLongTimeAgo = time.Unix(1, 0)

// exchange writes req and reads one response message by deadline (ctx
// cancels it too). started says whether any answer byte came.
func (c *Client) exchange(ctx context.Context, conn net.Conn, deadline time.Time, req []byte) (raw []byte, started bool, err error) {
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, false, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	if _, err := conn.Write(req); err != nil {
		stop()
		return nil, false, err
	}
	raw, started, err = readResponse(conn)
	if !stop() && err == nil {
		// ctx ended as the answer came: its func may still set a past
		// deadline on the connection, so do not reuse it.
		c.dropConn()
	}
	return raw, started, err
}

// readResponse reads one response message from r: the 8-byte TTLV header
// first, refusing a length above MaxMessageSize, then the body in growing
// chunks, so a server that claims much and sends little costs little.
// started says whether any byte came.
func readResponse(r io.Reader) (raw []byte, started bool, err error) {
	var hdr [8]byte
	n, err := io.ReadFull(r, hdr[:])
	if err != nil {
		return nil, n > 0, err
	}
	tag := Tag(hdr[0])<<16 | Tag(hdr[1])<<8 | Tag(hdr[2])
	if tag != TagResponseMessage || Type(hdr[3]) != TypeStructure {
		return nil, true, &DecodeError{Tag: tag, Msg: fmt.Sprintf("the answer starts with a %v %v, not a ResponseMessage structure", tag, Type(hdr[3]))}
	}
	size := binary.BigEndian.Uint32(hdr[4:])
	if size > MaxMessageSize-8 || size%8 != 0 {
		return nil, true, &DecodeError{Tag: tag, Msg: fmt.Sprintf("message length %d (the limit is %d, a multiple of 8)", size, MaxMessageSize-8)}
	}
	total := 8 + int(size)
	buf := make([]byte, 8, min(total, 4096))
	copy(buf, hdr[:])
	for len(buf) < total {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(total, 2*cap(buf)))
			copy(nb, buf)
			clear(buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && len(buf) < total {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return buf, true, err
		}
	}
	return buf, true, nil
}

// connErr wraps a failure to reach server, or to get a proper answer from
// it, with the cause in one sentence.
func (c *Client) connErr(server string, err error, started bool) *ConnError {
	return &ConnError{Server: server, Err: err, msg: describe(server, err, started, c.timeout, c.clientCN)}
}

// remoteAlert returns the TLS alert code of a "remote error" (crypto/tls
// reports an alert from the peer as a net.OpError wrapping its unexported
// alert type, a uint8), or 0.
func remoteAlert(err error) uint64 {
	if v := reflect.ValueOf(err); v.Kind() == reflect.Uint8 {
		return v.Uint()
	}
	return 0
}

// describe says in one sentence why talking to server failed.
func describe(server string, err error, started bool, timeout time.Duration, cn string) string {
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		oe  *net.OpError
		rh  tls.RecordHeaderError
		dns *net.DNSError
		de  *DecodeError
	)
	switch {
	case errors.As(err, &ua):
		return fmt.Sprintf("the certificate of KMS server %s is not signed by the trusted CA (%v)", server, err)
	case errors.As(err, &he):
		return fmt.Sprintf("the certificate of KMS server %s is not valid for that name (%v)", server, he.Error())
	case errors.As(err, &ci):
		why := "is not valid"
		switch ci.Reason {
		case x509.Expired:
			why = "has expired or is not yet valid"
		case x509.IncompatibleUsage:
			why = "is not for server authentication (extended key usage)"
		}
		return fmt.Sprintf("the certificate of KMS server %s %s (%v)", server, why, err)
	case errors.As(err, &oe) && oe.Op == "remote error":
		switch remoteAlert(oe.Err) {
		case 42, 43, 44, 45, 46, 48, 49, 116: // bad, unsupported, revoked, expired, unknown cert; unknown CA; access denied; certificate required
			return fmt.Sprintf("KMS server %s refused client certificate %s during the TLS handshake (%v): it must be signed by a CA the server trusts and allow client authentication (extended key usage clientAuth)", server, cnText(cn), err)
		case 40:
			return fmt.Sprintf("KMS server %s ended the TLS handshake (%v): no common TLS version and cipher, or it refused client certificate %s", server, err, cnText(cn))
		case 70:
			return fmt.Sprintf("KMS server %s does not speak TLS 1.2 or later (%v)", server, err)
		}
		return fmt.Sprintf("KMS server %s ended the TLS connection (%v)", server, err)
	case errors.As(err, &rh):
		return fmt.Sprintf("KMS server %s does not speak TLS (%v)", server, err)
	case errors.As(err, &de):
		return fmt.Sprintf("KMS server %s sent a malformed KMIP answer (%v)", server, err)
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		if started {
			return fmt.Sprintf("KMS server %s did not finish its answer within %v", server, timeout)
		}
		return fmt.Sprintf("KMS server %s did not answer within %v", server, timeout)
	case errors.As(err, &dns):
		return fmt.Sprintf("the name of KMS server %s does not resolve (%v)", server, err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("KMS server %s refused the connection (nothing listens on that port)", server)
	case errors.Is(err, io.ErrUnexpectedEOF) && started:
		return fmt.Sprintf("KMS server %s closed the connection in the middle of its answer", server)
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
		return fmt.Sprintf("KMS server %s closed the connection without answering", server)
	}
	return fmt.Sprintf("connection to KMS server %s failed (%v)", server, err)
}
