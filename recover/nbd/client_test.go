package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A hand-written NBD client for the tests: it speaks the wire format from
// the protocol document directly, so the server is never tested against
// itself.

type tclient struct {
	t          testing.TB
	nc         net.Conn
	br         *bufio.Reader
	structured bool
	hsFlags    uint16
}

// dialRaw connects and reads the greeting, without sending client flags.
func dialRaw(t testing.TB, path string) *tclient {
	t.Helper()
	nc, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &tclient{t: t, nc: nc, br: bufio.NewReader(nc)}
	var b [18]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if binary.BigEndian.Uint64(b[:]) != magicNBD || binary.BigEndian.Uint64(b[8:]) != magicOpt {
		t.Fatalf("greeting magic %x", b)
	}
	c.hsFlags = binary.BigEndian.Uint16(b[16:])
	return c
}

// dial connects and sends the client flags.
func dial(t testing.TB, path string, cflags uint32) *tclient {
	c := dialRaw(t, path)
	c.write(binary.BigEndian.AppendUint32(nil, cflags))
	return c
}

func (c *tclient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *tclient) readN(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.br, b); err != nil {
		c.t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

// expectClosed asserts that the server closed the connection.
func (c *tclient) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 1<<16)
	for {
		_, err := c.br.Read(b)
		if err == nil {
			continue // drain what the server sent before closing
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatal("connection still open")
		}
		return
	}
}

func optBytes(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func (c *tclient) sendOpt(opt uint32, data []byte) { c.write(optBytes(opt, data)) }

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *tclient) optReply() optReply {
	c.t.Helper()
	h := c.readN(20)
	if m := binary.BigEndian.Uint64(h); m != magicOptReply {
		c.t.Fatalf("option reply magic %#x", m)
	}
	n := binary.BigEndian.Uint32(h[16:])
	if n > 1<<20 {
		c.t.Fatalf("option reply of %d bytes", n)
	}
	return optReply{binary.BigEndian.Uint32(h[8:]), binary.BigEndian.Uint32(h[12:]), c.readN(int(n))}
}

// optReplies reads replies until a final one (ACK or error).
func (c *tclient) optReplies(opt uint32) []optReply {
	c.t.Helper()
	var rs []optReply
	for {
		r := c.optReply()
		if r.opt != opt {
			c.t.Fatalf("reply for option %d, want %d", r.opt, opt)
		}
		rs = append(rs, r)
		if r.typ == repAck || r.typ&(1<<31) != 0 {
			return rs
		}
	}
}

func infoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

func metaData(name string, queries ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = binary.BigEndian.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

type exportInfo struct {
	size                  uint64
	flags                 uint16
	min, pref, max        uint32
	name, desc            string
	hasName, hasDesc, bsz bool
}

func parseInfos(t testing.TB, rs []optReply) exportInfo {
	t.Helper()
	var ei exportInfo
	seenExport := false
	for _, r := range rs {
		if r.typ != repInfo {
			continue
		}
		switch typ := binary.BigEndian.Uint16(r.data); typ {
		case infoExport:
			if len(r.data) != 12 {
				t.Fatalf("NBD_INFO_EXPORT of %d bytes", len(r.data))
			}
			ei.size, ei.flags, seenExport = binary.BigEndian.Uint64(r.data[2:]), binary.BigEndian.Uint16(r.data[10:]), true
		case infoBlockSize:
			if len(r.data) != 14 {
				t.Fatalf("NBD_INFO_BLOCK_SIZE of %d bytes", len(r.data))
			}
			ei.min, ei.pref, ei.max, ei.bsz = binary.BigEndian.Uint32(r.data[2:]), binary.BigEndian.Uint32(r.data[6:]), binary.BigEndian.Uint32(r.data[10:]), true
		case infoName:
			ei.name, ei.hasName = string(r.data[2:]), true
		case infoDescription:
			ei.desc, ei.hasDesc = string(r.data[2:]), true
		default:
			t.Fatalf("unexpected info type %d", typ)
		}
	}
	if rs[len(rs)-1].typ == repAck && !seenExport {
		t.Fatal("successful NBD_OPT_INFO/GO without NBD_INFO_EXPORT")
	}
	return ei
}

// negotiate: optional structured replies, optional base:allocation, then
// NBD_OPT_GO. It fails the test on any error.
func (c *tclient) negotiate(name string, structured, meta bool) exportInfo {
	c.t.Helper()
	if structured {
		c.sendOpt(optStructured, nil)
		if r := c.optReplies(optStructured); r[0].typ != repAck {
			c.t.Fatalf("structured reply: %#x", r[0].typ)
		}
		c.structured = true
	}
	if meta {
		c.sendOpt(optSetMetaCtx, metaData(name, metaContextAllocation))
		rs := c.optReplies(optSetMetaCtx)
		if len(rs) != 2 || rs[0].typ != repMetaContext || rs[1].typ != repAck {
			c.t.Fatalf("set meta context: %+v", rs)
		}
	}
	c.sendOpt(optGo, infoData(name, infoBlockSize))
	rs := c.optReplies(optGo)
	if last := rs[len(rs)-1]; last.typ != repAck {
		c.t.Fatalf("NBD_OPT_GO %q: reply %#x %q", name, last.typ, last.data)
	}
	return parseInfos(c.t, rs)
}

func (c *tclient) request(flags, typ uint16, handle, off uint64, n uint32, payload []byte) {
	b := binary.BigEndian.AppendUint32(nil, magicRequest)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, n)
	c.write(append(b, payload...))
}

// reply is one whole reply as the client assembles it.
type reply struct {
	handle    uint64
	errno     uint32
	errOffset int64 // -1 unless NBD_REPLY_TYPE_ERROR_OFFSET
	data      []byte
	holes     int // OFFSET_HOLE chunks
	dataChunk int // OFFSET_DATA chunks
	status    [][2]uint32
	ctxID     uint32
	chunks    int
}

// readReply reads one reply. For a simple reply, readLen says how much
// data a successful READ carries. For structured replies, reqOff and
// reqLen bound the content chunks.
func (c *tclient) readReply(readLen int, reqOff uint64, reqLen uint32) reply {
	c.t.Helper()
	if !c.structured {
		h := c.readN(16)
		if m := binary.BigEndian.Uint32(h); m != magicSimple {
			c.t.Fatalf("simple reply magic %#x", m)
		}
		r := reply{handle: binary.BigEndian.Uint64(h[8:]), errno: binary.BigEndian.Uint32(h[4:]), errOffset: -1}
		if r.errno == 0 && readLen > 0 {
			r.data = c.readN(readLen)
		}
		return r
	}
	r := reply{errOffset: -1}
	var covered []bool
	if reqLen > 0 {
		r.data = make([]byte, reqLen)
		covered = make([]bool, reqLen)
	}
	for {
		h := c.readN(20)
		if m := binary.BigEndian.Uint32(h); m != magicStructure {
			c.t.Fatalf("structured reply magic %#x", m)
		}
		flags, typ := binary.BigEndian.Uint16(h[4:]), binary.BigEndian.Uint16(h[6:])
		handle := binary.BigEndian.Uint64(h[8:])
		n := binary.BigEndian.Uint32(h[16:])
		if r.chunks > 0 && handle != r.handle {
			c.t.Fatalf("chunks of two replies interleaved (%d, %d)", r.handle, handle)
		}
		r.handle = handle
		r.chunks++
		p := c.readN(int(n))
		cover := func(off uint64, l uint64) {
			if off < reqOff || off+l > reqOff+uint64(reqLen) || l == 0 {
				c.t.Fatalf("chunk %d+%d outside request %d+%d", off, l, reqOff, reqLen)
			}
			for i := off - reqOff; i < off-reqOff+l; i++ {
				if covered[i] {
					c.t.Fatalf("chunks overlap at %d", reqOff+i)
				}
				covered[i] = true
			}
		}
		switch typ {
		case replyTypeNone:
			if n != 0 || flags&replyFlagDone == 0 {
				c.t.Fatalf("bad NONE chunk")
			}
		case replyTypeOffsetData:
			off := binary.BigEndian.Uint64(p)
			cover(off, uint64(n-8))
			copy(r.data[off-reqOff:], p[8:])
			r.dataChunk++
		case replyTypeOffsetHole:
			if n != 12 {
				c.t.Fatalf("hole chunk of %d bytes", n)
			}
			off, l := binary.BigEndian.Uint64(p), binary.BigEndian.Uint32(p[8:])
			cover(off, uint64(l))
			r.holes++
		case replyTypeBlockStatus:
			if n < 12 || (n-4)%8 != 0 {
				c.t.Fatalf("block status chunk of %d bytes", n)
			}
			r.ctxID = binary.BigEndian.Uint32(p)
			for i := 4; i < int(n); i += 8 {
				r.status = append(r.status, [2]uint32{binary.BigEndian.Uint32(p[i:]), binary.BigEndian.Uint32(p[i+4:])})
			}
		case replyTypeError, replyTypeErrorOffset:
			r.errno = binary.BigEndian.Uint32(p)
			ml := int(binary.BigEndian.Uint16(p[4:]))
			if typ == replyTypeErrorOffset {
				if int(n) != 6+ml+8 {
					c.t.Fatalf("error offset chunk: %d bytes, message %d", n, ml)
				}
				r.errOffset = int64(binary.BigEndian.Uint64(p[6+ml:]))
			} else if int(n) != 6+ml {
				c.t.Fatalf("error chunk: %d bytes, message %d", n, ml)
			}
		default:
			c.t.Fatalf("unknown chunk type %d", typ)
		}
		if flags&replyFlagDone != 0 {
			break
		}
	}
	if r.errno == 0 && readLen > 0 {
		for i, ok := range covered {
			if !ok {
				c.t.Fatalf("successful read left byte %d uncovered", int(reqOff)+i)
			}
		}
	}
	return r
}

// readAt does one synchronous READ.
func (c *tclient) readAt(off uint64, n uint32, flags uint16) reply {
	c.t.Helper()
	h := rand.Uint64()
	c.request(flags, cmdRead, h, off, n, nil)
	r := c.readReply(int(n), off, n)
	if r.handle != h {
		c.t.Fatalf("reply handle %d, want %d", r.handle, h)
	}
	return r
}

func (c *tclient) blockStatus(off uint64, n uint32, flags uint16) reply {
	c.t.Helper()
	h := rand.Uint64()
	c.request(flags, cmdBlockStatus, h, off, n, nil)
	r := c.readReply(0, off, 0)
	if r.handle != h {
		c.t.Fatalf("reply handle %d, want %d", r.handle, h)
	}
	return r
}

func (c *tclient) disconnect() {
	c.request(0, cmdDisc, 0, 0, 0, nil)
	c.expectClosed()
}

// ---- test exports ----

// memData is an in-memory export with an allocation layout; it counts the
// bytes it was asked to read.
type memData struct {
	b      []byte
	layout []Extent
	read   atomic.Int64
}

func (m *memData) ReadAt(p []byte, off int64) (int, error) {
	m.read.Add(int64(len(p)))
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// extents answers from the layout, cut to [off, off+n).
func (m *memData) extents(off, n int64) ([]Extent, error) {
	return cutLayout(m.layout, off, n), nil
}

func cutLayout(layout []Extent, off, n int64) []Extent {
	var out []Extent
	at := int64(0)
	for _, e := range layout {
		s, end := max(at, off), min(at+e.Length, off+n)
		if s < end {
			out = append(out, Extent{Length: end - s, Hole: e.Hole, Zero: e.Zero})
		}
		at += e.Length
	}
	return out
}

// newMem builds an export of the given layout: Hole and Zero runs are
// zeros, data runs are random bytes (never all zero).
func newMem(seed uint64, layout []Extent) *memData {
	var size int64
	for _, e := range layout {
		size += e.Length
	}
	m := &memData{b: make([]byte, size), layout: layout}
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	r := rand.NewChaCha8(key)
	at := int64(0)
	for _, e := range layout {
		if !e.Zero {
			p := m.b[at : at+e.Length]
			r.Read(p)
			for i, c := range p {
				if c == 0 {
					p[i] = 1
				}
			}
		}
		at += e.Length
	}
	return m
}

// testLayout: data, hole, zeroed (allocated zeros), data, hole, data.
var testLayout = []Extent{
	{Length: 64 << 10},
	{Length: 192 << 10, Hole: true, Zero: true},
	{Length: 32 << 10, Zero: true},
	{Length: 96 << 10},
	{Length: 640 << 10, Hole: true, Zero: true},
	{Length: 4 << 10},
}

// faultyData fails reads touching [bad, bad+badLen) and panics on reads
// touching panicAt (when >= 0).
type faultyData struct {
	io.ReaderAt
	bad, badLen int64
	panicAt     int64
}

var errInjected = errors.New("injected read error")

func (f *faultyData) ReadAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	if f.panicAt >= 0 && off <= f.panicAt && f.panicAt < end {
		panic("injected panic")
	}
	if off < f.bad+f.badLen && f.bad < end {
		n := max(0, f.bad-off)
		f.ReaderAt.ReadAt(p[:n], off)
		return int(n), errInjected
	}
	return f.ReaderAt.ReadAt(p, off)
}

// ---- server harness ----

type logRec struct {
	mu     sync.Mutex
	events []string
	args   [][]any
}

func (l *logRec) log(event string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, event)
	l.args = append(l.args, args)
}

// find returns the args of the first event named ev.
func (l *logRec) find(ev string) ([]any, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, e := range l.events {
		if e == ev {
			return l.args[i], true
		}
	}
	return nil, false
}

func (l *logRec) count(ev string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if e == ev {
			n++
		}
	}
	return n
}

func argOf(args []any, key string) any {
	for i := 0; i+1 < len(args); i += 2 {
		if args[i] == key {
			return args[i+1]
		}
	}
	return nil
}

type harness struct {
	t      testing.TB
	path   string
	log    *logRec
	cancel context.CancelFunc
	done   chan error
	before int
}

// start serves s on a private Unix socket. The test's cleanup stops the
// server, checks that Serve returned nil and that no goroutine leaked.
func start(t testing.TB, s *Server) *harness {
	t.Helper()
	before := runtime.NumGoroutine()
	h := &harness{t: t, log: &logRec{}, done: make(chan error, 1), before: before}
	if s.Log == nil {
		s.Log = h.log.log
	}
	ln, err := ListenUnix("", "nbd.sock")
	if err != nil {
		t.Fatal(err)
	}
	h.path = ln.Path
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { h.stop() })
	return h
}

// stop cancels Serve, waits for it and checks for leaked goroutines.
func (h *harness) stop() {
	h.t.Helper()
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("Serve did not return after cancel")
	}
	checkGoroutines(h.t, h.before)
}

// checkGoroutines waits briefly for the goroutine count to come back to
// before (test clients' goroutines included) and fails with a dump
// otherwise.
func checkGoroutines(t testing.TB, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d before, %d after:\n%s", before, n, buf)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func memExport(name string, m *memData, withMap bool) Export {
	e := Export{Name: name, Description: "test export " + name, Size: int64(len(m.b)), Data: m}
	if withMap {
		e.Extents = m.extents
	}
	return e
}

func hexdiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("first difference at %d: %#x != %#x", i, a[i], b[i])
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf("lengths %d != %d", len(a), len(b))
	}
	return ""
}

func bufioReader(nc net.Conn) *bufio.Reader { return bufio.NewReader(nc) }
