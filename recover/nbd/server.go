package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// Extent describes a run of an export for the base:allocation metadata
// context and for hole-aware reads.
type Extent struct {
	// Length is the number of bytes of the run (> 0).
	Length int64
	// Hole: the run is not allocated in the backing store
	// (NBD_STATE_HOLE).
	Hole bool
	// Zero: the run reads as zeros (NBD_STATE_ZERO). A structured read
	// sends such a run as a hole chunk without calling Data.ReadAt. An
	// unallocated range of a VMDK is Hole and Zero; a zeroed grain is
	// Zero only.
	Zero bool
}

// Export is one named, read-only block device.
type Export struct {
	// Name is what clients ask for (NBD_OPT_GO, NBD_OPT_EXPORT_NAME) and
	// what NBD_OPT_LIST returns: valid UTF-8, no NUL, at most
	// MaxStringLen bytes, unique within a Server.
	Name string
	// Description is an optional human-readable text (NBD_INFO_DESCRIPTION
	// and the NBD_OPT_LIST entry), with the same rules as Name.
	Description string
	// Size is the export size in bytes. Any size >= 0 is served exactly:
	// the server advertises a minimum block size of 1, so a size that is
	// not a multiple of 512 is read to its last byte by libnbd clients
	// (nbdcopy, nbdinfo); qemu 7.2 shows it rounded up to a multiple of
	// 512, the tail reading as zeros. Disk exports are multiples of 512.
	Size int64
	// Data holds the bytes; it must be safe for concurrent use. A ReadAt
	// that fills p counts as a success whatever error it returns with
	// it (io.EOF at the end); a short read is answered NBD_EIO.
	Data io.ReaderAt
	// Extents, when non-nil, describes the allocation of [off, off+length)
	// (0 <= off < off+length <= Size) as consecutive runs starting at off.
	// It may describe less than asked (a prefix); the server asks again
	// for the rest when it needs it. It must be safe for concurrent use.
	// When nil, every byte is reported as allocated data.
	Extents func(off, length int64) ([]Extent, error)
}

// Defaults for the zero values of Server's limits.
const (
	DefaultMaxConns         = 64
	DefaultMaxInFlight      = 32
	DefaultMaxBufferBytes   = 256 << 20
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultWriteTimeout     = 30 * time.Second
	// shutdownGrace bounds how long in-flight replies may take to leave
	// once Serve's context is done.
	shutdownGrace = 2 * time.Second
	// maxHoleChunks caps the hole chunks of one structured read: further
	// zero runs are read as data, so a fragmented map cannot blow up the
	// reply's bookkeeping.
	maxHoleChunks = 256
)

// ErrBadExport reports an invalid Export or Server configuration.
var ErrBadExport = errors.New("nbd: invalid export")

// Server serves Exports over the NBD protocol, read-only: fixed newstyle
// handshake, NBD_OPT_GO / INFO / LIST / EXPORT_NAME / ABORT /
// STRUCTURED_REPLY / SET_META_CONTEXT / LIST_META_CONTEXT (base:allocation),
// and the commands READ, BLOCK_STATUS, FLUSH (a no-op) and DISC. Writes,
// trims and write-zeroes are answered NBD_EPERM and never acted on; other
// commands NBD_EINVAL.
//
// The zero value of every limit selects its default. A Server must not be
// modified while Serve runs.
type Server struct {
	Exports []Export
	// DefaultExport names the export a client gets when it asks for the
	// empty name (qemu's nbd+unix:///?socket=...). Empty: only an export
	// actually named "" answers the empty name.
	DefaultExport string
	// Log, when non-nil, receives events as a message and key/value pairs
	// (the shape of slog.Logger.Info). The library never prints.
	// Events: "accept error", "connection refused" (too many),
	// "handshake failed", "client connected", "client disconnected",
	// "read failed" / "write failed" (the connection broke or timed out),
	// "protocol error" (the client was dropped), "read error" (Data
	// failed: export, offset, err), "extents error", "panic" (with the
	// stack). Events of a connection carry "conn", its number.
	Log func(event string, args ...any)

	// MaxConns caps concurrent connections; more are closed at once.
	MaxConns int
	// MaxInFlight caps the requests one connection has in progress; the
	// server stops reading that connection until one completes.
	MaxInFlight int
	// MaxRequest caps the length of a READ (NBD_INFO_BLOCK_SIZE maximum)
	// and of the WRITE payload the server skips before answering EPERM;
	// a longer WRITE ends the connection. Default DefaultMaxRequest; at
	// most 1 GiB.
	MaxRequest int
	// MaxBufferBytes caps the read buffers of all connections together;
	// requests wait for room.
	MaxBufferBytes int64
	// HandshakeTimeout bounds the whole option haggling of a connection.
	// Negative: no limit.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds each reply: a client that stops reading is
	// disconnected after it, releasing its buffers. Negative: no limit.
	WriteTimeout time.Duration
	// IdleTimeout, when > 0, ends a connection that sends no request for
	// this long while none is in progress.
	IdleTimeout time.Duration
}

// export is a validated Export.
type export struct {
	Export
}

// state is what one Serve call shares between its connections.
type state struct {
	s           *Server
	exports     []*export
	byName      map[string]*export
	maxInFlight int
	maxRequest  int
	hsTimeout   time.Duration
	wTimeout    time.Duration
	budget      *semaphore.Weighted
	pools       []sync.Pool // by size class: 4 KiB << i
	nextID      atomic.Uint64
}

func (s *Server) log(event string, args ...any) {
	if s.Log != nil {
		s.Log(event, args...)
	}
}

// newState validates the configuration.
func (s *Server) newState() (*state, error) {
	st := &state{s: s, byName: make(map[string]*export, len(s.Exports))}
	for i := range s.Exports {
		e := &export{s.Exports[i]}
		switch {
		case e.Data == nil:
			return nil, fmt.Errorf("%w: export %q has no Data", ErrBadExport, e.Name)
		case e.Size < 0:
			return nil, fmt.Errorf("%w: export %q size %d", ErrBadExport, e.Name, e.Size)
		case checkString([]byte(e.Name)) != nil:
			return nil, fmt.Errorf("%w: export name %q: %v", ErrBadExport, e.Name, checkString([]byte(e.Name)))
		case checkString([]byte(e.Description)) != nil:
			return nil, fmt.Errorf("%w: export %q description: %v", ErrBadExport, e.Name, checkString([]byte(e.Description)))
		}
		if _, dup := st.byName[e.Name]; dup {
			return nil, fmt.Errorf("%w: export name %q used twice", ErrBadExport, e.Name)
		}
		st.byName[e.Name] = e
		st.exports = append(st.exports, e)
	}
	if s.DefaultExport != "" {
		if _, ok := st.byName[s.DefaultExport]; !ok {
			return nil, fmt.Errorf("%w: default export %q is not an export", ErrBadExport, s.DefaultExport)
		}
	}
	st.maxInFlight = orDefault(s.MaxInFlight, DefaultMaxInFlight)
	st.maxRequest = orDefault(s.MaxRequest, DefaultMaxRequest)
	if st.maxRequest > 1<<30 {
		return nil, fmt.Errorf("%w: MaxRequest %d above 1 GiB", ErrBadExport, st.maxRequest)
	}
	st.hsTimeout = orDefault(s.HandshakeTimeout, DefaultHandshakeTimeout)
	st.wTimeout = orDefault(s.WriteTimeout, DefaultWriteTimeout)
	classes := sizeClass(st.maxRequest) + 1
	st.pools = make([]sync.Pool, classes)
	budget := orDefault(s.MaxBufferBytes, DefaultMaxBufferBytes)
	budget = max(budget, classBytes(classes-1))
	st.budget = semaphore.NewWeighted(budget)
	return st, nil
}

func orDefault[T int | int64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// lookup resolves a client's export name.
func (st *state) lookup(name string) *export {
	if e, ok := st.byName[name]; ok {
		return e
	}
	if name == "" && st.s.DefaultExport != "" {
		return st.byName[st.s.DefaultExport]
	}
	return nil
}

// sizeClass is the index of the smallest pooled buffer of at least n bytes.
func sizeClass(n int) int {
	if n <= 4096 {
		return 0
	}
	return bits.Len(uint(n-1)) - 12
}

func classBytes(c int) int64 { return 4096 << c }

// buffer is a pooled read buffer charged to the server's budget.
type buffer struct {
	b     []byte
	class int
}

// getBuf waits for budget and returns a buffer of at least n bytes.
func (st *state) getBuf(ctx context.Context, n int) (*buffer, error) {
	c := sizeClass(n)
	if !st.budget.TryAcquire(classBytes(c)) {
		if err := st.budget.Acquire(ctx, classBytes(c)); err != nil {
			return nil, err
		}
	}
	if b, ok := st.pools[c].Get().(*buffer); ok {
		return b, nil
	}
	return &buffer{b: make([]byte, classBytes(c)), class: c}, nil
}

func (st *state) putBuf(b *buffer) {
	if b == nil {
		return
	}
	st.budget.Release(classBytes(b.class))
	st.pools[b.class].Put(b)
}

// Serve accepts connections on ln until ctx is done, then closes ln and
// every connection (in-flight replies get a short grace) and returns nil
// once all its goroutines have ended. It returns early with an error when
// the configuration is invalid (ErrBadExport) or ln fails. Serve closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	st, err := s.newState()
	if err != nil {
		ln.Close()
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	// On every return (ctx done or the listener failed): end the
	// connections, then wait for them.
	defer func() {
		cancel()
		ln.Close()
		wg.Wait()
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	maxConns := orDefault(s.MaxConns, DefaultMaxConns)
	slots := make(chan struct{}, maxConns)
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Resource exhaustion (EMFILE...): back off and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log("accept error", "err", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		select {
		case slots <- struct{}{}:
		default:
			s.log("connection refused", "remote", addrString(nc.RemoteAddr()), "max_conns", maxConns)
			nc.Close()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			st.serveConn(ctx, nc)
		}()
	}
}

// addrString names a peer address; an unnamed Unix socket may have none.
func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// ServeConn runs the protocol on one already-accepted connection until the
// client leaves, the connection fails or ctx is done; it closes nc. It is
// for callers that accept connections themselves (and for tests); the
// MaxConns limit does not apply, and each call has a buffer budget
// (MaxBufferBytes) of its own.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	st, err := s.newState()
	if err != nil {
		nc.Close()
		return err
	}
	st.serveConn(ctx, nc)
	return nil
}

// deadlines sets a connection's deadlines, except that once shutdown
// starts reads end at once and writes get at most shutdownGrace.
type deadlines struct {
	nc       net.Conn
	mu       sync.Mutex
	closing  bool
	graceEnd time.Time
	wLast    time.Time // when the write deadline was last set
	wSet     bool
}

func (d *deadlines) shutdown() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closing = true
	d.graceEnd = time.Now().Add(shutdownGrace)
	d.nc.SetReadDeadline(time.Unix(1, 0))
	d.nc.SetWriteDeadline(d.graceEnd)
}

// read sets the read deadline to now+t (t <= 0: none).
func (d *deadlines) read(t time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closing {
		return
	}
	var at time.Time
	if t > 0 {
		at = time.Now().Add(t)
	}
	d.nc.SetReadDeadline(at)
}

// write sets the write deadline to now+t (t <= 0: none). A deadline set
// less than t/4 ago is kept: the next write still gets at least 3t/4,
// and busy connections skip a timer reset per reply.
func (d *deadlines) write(t time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var at time.Time
	if t > 0 {
		now := time.Now()
		if !d.closing && d.wSet && now.Sub(d.wLast) < t/4 {
			return
		}
		d.wLast, d.wSet = now, true
		at = now.Add(t)
	} else {
		d.wSet = false
	}
	if d.closing && (at.IsZero() || at.After(d.graceEnd)) {
		at = d.graceEnd
	}
	d.nc.SetWriteDeadline(at)
}

// serveConn runs one connection: handshake, then transmission.
func (st *state) serveConn(ctx context.Context, nc net.Conn) {
	id := st.nextID.Add(1)
	c := &conn{st: st, nc: nc, id: id, dl: deadlines{nc: nc}}
	c.ctx, c.cancel = context.WithCancel(ctx)
	defer c.cancel()
	defer nc.Close()
	stop := context.AfterFunc(ctx, c.dl.shutdown)
	defer stop()
	defer func() {
		if r := recover(); r != nil {
			st.s.log("panic", "conn", id, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	exp, err := c.handshake()
	if err != nil {
		if !errors.Is(err, errAbort) && !errors.Is(err, io.EOF) && ctx.Err() == nil {
			st.s.log("handshake failed", "conn", id, "err", err)
		}
		return
	}
	st.s.log("client connected", "conn", id, "remote", addrString(nc.RemoteAddr()), "export", exp.Name, "structured", c.structured)
	c.transmit(exp)
	st.s.log("client disconnected", "conn", id, "export", exp.Name)
}
