package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sync"
)

// transmit serves requests until the client disconnects, breaks the
// protocol, or the connection or server ends. It returns once every
// request it started has finished.
func (c *conn) transmit(exp *export) {
	st := c.st
	// Entering transmission: the handshake deadline no longer applies.
	c.dl.read(0)
	c.dl.write(0)
	slots := make(chan struct{}, st.maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		if st.s.IdleTimeout > 0 {
			c.dl.read(st.s.IdleTimeout)
		}
		// Peek keeps a partly received header across an idle-deadline
		// wake-up, which only ends the connection when nothing is in
		// progress.
		hb, err := c.br.Peek(requestLen)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && len(slots) > 0 && c.ctx.Err() == nil {
				continue
			}
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && c.ctx.Err() == nil {
				st.s.log("read failed", "conn", c.id, "export", exp.Name, "err", err)
			}
			return
		}
		req, err := parseRequest(hb)
		c.br.Discard(requestLen)
		if err != nil {
			st.s.log("protocol error", "conn", c.id, "export", exp.Name, "err", err)
			return
		}
		switch req.typ {
		case cmdDisc:
			return
		case cmdRead, cmdBlockStatus:
			if errno, msg := c.check(exp, req); errno != 0 {
				if !c.replyError(req, errno, msg, -1) {
					return
				}
				continue
			}
			// A client waiting for this one reply (nothing else buffered,
			// nothing in progress) is answered here: no hand-off to another
			// goroutine on the latency path. Pipelined requests run
			// concurrently.
			if len(slots) == 0 && c.br.Buffered() < requestLen {
				c.serveRequest(exp, req)
				if c.broken.Load() {
					return
				}
				continue
			}
			slots <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-slots }()
				c.serveRequest(exp, req)
			}()
		case cmdWrite:
			// Never written: the payload is skipped, up to MaxRequest.
			if int64(req.len) > int64(st.maxRequest) {
				st.s.log("protocol error", "conn", c.id, "export", exp.Name,
					"err", fmt.Sprintf("write of %d bytes (max %d)", req.len, st.maxRequest))
				return
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(req.len)); err != nil {
				return
			}
			if !c.replyError(req, errnoPerm, "read-only export", -1) {
				return
			}
		case cmdTrim, cmdWriteZeroes:
			if !c.replyError(req, errnoPerm, "read-only export", -1) {
				return
			}
		case cmdFlush:
			// Nothing is ever written, so nothing is left to persist.
			if !c.replyOK(req) {
				return
			}
		default:
			if !c.replyError(req, errnoInval, fmt.Sprintf("unsupported command %d", req.typ), -1) {
				return
			}
		}
	}
}

// check validates a READ or BLOCK_STATUS request; a nonzero errno refuses
// it.
func (c *conn) check(exp *export, req request) (uint32, string) {
	allowed := uint16(cmdFlagFUA)
	switch req.typ {
	case cmdRead:
		if c.structured {
			allowed |= cmdFlagDF
		}
		if int64(req.len) > int64(c.st.maxRequest) {
			return errnoInval, fmt.Sprintf("read of %d bytes (max %d)", req.len, c.st.maxRequest)
		}
	case cmdBlockStatus:
		if c.metaExport == nil {
			return errnoInval, "no metadata context selected"
		}
		allowed |= cmdFlagReqOne
		if req.len == 0 {
			return errnoInval, "block status of 0 bytes"
		}
	}
	if req.flags&^allowed != 0 {
		return errnoInval, fmt.Sprintf("command flags %#x", req.flags)
	}
	if req.off > uint64(exp.Size) || uint64(req.len) > uint64(exp.Size)-req.off {
		return errnoInval, fmt.Sprintf("range %d+%d past the end (%d)", req.off, req.len, exp.Size)
	}
	return 0, ""
}

// serveRequest runs a checked READ or BLOCK_STATUS in its own goroutine.
// A panic while answering becomes an EIO reply for that request.
func (c *conn) serveRequest(exp *export, req request) {
	var buf *buffer
	var reply net.Buffers
	func() {
		defer func() {
			if r := recover(); r != nil {
				c.st.s.log("panic", "conn", c.id, "export", exp.Name, "offset", req.off,
					"length", req.len, "panic", r, "stack", string(debug.Stack()))
				reply = c.errorReply(req, errnoIO, "internal server error", -1)
			}
		}()
		if req.typ == cmdRead {
			reply = c.read(exp, req, &buf)
		} else {
			reply = c.blockStatus(exp, req)
		}
	}()
	c.send(reply)
	c.st.putBuf(buf)
}

// segment is a piece of a read: data to read, or zeros to send as a hole.
type segment struct {
	off, n int64
	hole   bool
	pos    int // offset of the data in the buffer
}

// read builds the reply to a READ; the data buffer it takes is left in
// *bufp for the caller to release once the reply is sent.
func (c *conn) read(exp *export, req request, bufp **buffer) net.Buffers {
	off, n := int64(req.off), int64(req.len)
	if n == 0 {
		return c.okReply(req)
	}
	// A structured reply may skip the zero runs: they go out as hole
	// chunks, without reading (or decrypting) them.
	var segs []segment
	if c.structured && exp.Extents != nil && req.flags&cmdFlagDF == 0 {
		var err error
		segs, err = readSegments(exp, off, n)
		if err != nil {
			c.st.s.log("extents error", "conn", c.id, "export", exp.Name, "offset", off, "length", n, "err", err)
			segs = nil // read it all as data
		}
	}
	if segs == nil {
		segs = []segment{{off: off, n: n}}
	}
	var dataLen int64
	for i := range segs {
		if !segs[i].hole {
			segs[i].pos = int(dataLen)
			dataLen += segs[i].n
		}
	}
	var data []byte
	if dataLen > 0 {
		buf, err := c.st.getBuf(c.ctx, int(dataLen))
		if err != nil {
			return c.errorReply(req, errnoShutdown, "server shutting down", -1)
		}
		*bufp = buf
		data = buf.b[:dataLen]
		for _, s := range segs {
			if s.hole {
				continue
			}
			p := data[s.pos : s.pos+int(s.n)]
			got, err := exp.Data.ReadAt(p, s.off)
			if got == len(p) {
				continue
			}
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			bad := s.off + int64(max(got, 0))
			c.st.s.log("read error", "conn", c.id, "export", exp.Name, "offset", bad,
				"request_offset", off, "length", n, "err", err)
			return c.errorReply(req, errnoIO, fmt.Sprintf("I/O error at offset %d", bad), bad)
		}
	}
	if !c.structured {
		h := make([]byte, simpleReplyLen)
		putSimpleReply(h, 0, req.handle)
		return net.Buffers{h, data}
	}
	hdrs := make([]byte, 0, len(segs)*(structReplyLen+12))
	bufs := make(net.Buffers, 0, 2*len(segs))
	for i, s := range segs {
		var flags uint16
		if i == len(segs)-1 {
			flags = replyFlagDone
		}
		start := len(hdrs)
		if s.hole {
			hdrs = appendChunk(hdrs, flags, replyTypeOffsetHole, req.handle, 12)
			hdrs = binary.BigEndian.AppendUint64(hdrs, uint64(s.off))
			hdrs = binary.BigEndian.AppendUint32(hdrs, uint32(s.n))
			bufs = append(bufs, hdrs[start:])
			continue
		}
		hdrs = appendChunk(hdrs, flags, replyTypeOffsetData, req.handle, 8+int(s.n))
		hdrs = binary.BigEndian.AppendUint64(hdrs, uint64(s.off))
		bufs = append(bufs, hdrs[start:], data[s.pos:s.pos+int(s.n)])
	}
	return bufs
}

// readSegments splits [off, off+n) into data and hole segments from the
// export's map. Unmapped bytes are data; at most maxHoleChunks holes.
func readSegments(exp *export, off, n int64) ([]segment, error) {
	exts, err := exp.Extents(off, n)
	if err != nil {
		return nil, err
	}
	var segs []segment
	add := func(at, l int64, hole bool) {
		if k := len(segs) - 1; k >= 0 && segs[k].hole == hole && segs[k].off+segs[k].n == at {
			segs[k].n += l
			return
		}
		segs = append(segs, segment{off: at, n: l, hole: hole})
	}
	at, end, holes := off, off+n, 0
	for _, e := range exts {
		if at >= end || e.Length <= 0 {
			break
		}
		l := min(e.Length, end-at)
		hole := e.Zero && holes < maxHoleChunks
		if hole && (len(segs) == 0 || !segs[len(segs)-1].hole) {
			holes++
		}
		add(at, l, hole)
		at += l
	}
	if at < end {
		add(at, end-at, false)
	}
	return segs, nil
}

// blockStatus builds the reply to a BLOCK_STATUS for base:allocation.
func (c *conn) blockStatus(exp *export, req request) net.Buffers {
	off, n := int64(req.off), int64(req.len)
	var exts []Extent
	if exp.Extents != nil {
		var err error
		exts, err = exp.Extents(off, n)
		if err != nil {
			c.st.s.log("extents error", "conn", c.id, "export", exp.Name, "offset", off, "length", n, "err", err)
			return c.errorReply(req, errnoIO, fmt.Sprintf("allocation map error at offset %d", off), off)
		}
	}
	limit := MaxBlockStatusExtents
	if req.flags&cmdFlagReqOne != 0 {
		limit = 1
	}
	payload := make([]byte, 4, 4+blockStatusEntry*min(len(exts)+1, limit))
	binary.BigEndian.PutUint32(payload, metaContextID)
	var cnt int
	var lastLen int64 = -1
	var lastFlags uint32
	emit := func() {
		payload = binary.BigEndian.AppendUint32(payload, uint32(lastLen))
		payload = binary.BigEndian.AppendUint32(payload, lastFlags)
		cnt++
	}
	at, end := off, off+n
	for _, e := range exts {
		if at >= end || e.Length <= 0 {
			break
		}
		l := min(e.Length, end-at)
		var f uint32
		if e.Hole {
			f |= stateHole
		}
		if e.Zero {
			f |= stateZero
		}
		if lastLen >= 0 && f == lastFlags {
			lastLen += l
		} else {
			if lastLen >= 0 {
				emit()
				if cnt == limit {
					break
				}
			}
			lastLen, lastFlags = l, f
		}
		at += l
	}
	if lastLen < 0 {
		// No usable map: allocated data (status 0) is always safe.
		lastLen, lastFlags = n, 0
	}
	if cnt < limit {
		emit()
	}
	return chunk(req.handle, replyFlagDone, replyTypeBlockStatus, payload)
}

// okReply is a successful reply with no payload.
func (c *conn) okReply(req request) net.Buffers {
	if c.structured {
		return chunk(req.handle, replyFlagDone, replyTypeNone, nil)
	}
	h := make([]byte, simpleReplyLen)
	putSimpleReply(h, 0, req.handle)
	return net.Buffers{h}
}

// errorReply is an error reply: a simple reply, or an error chunk with
// msg (NBD_REPLY_TYPE_ERROR_OFFSET when at >= 0).
func (c *conn) errorReply(req request, errno uint32, msg string, at int64) net.Buffers {
	if !c.structured {
		h := make([]byte, simpleReplyLen)
		putSimpleReply(h, errno, req.handle)
		return net.Buffers{h}
	}
	if len(msg) > MaxStringLen {
		msg = msg[:MaxStringLen]
	}
	p := make([]byte, 0, 6+len(msg)+8)
	p = binary.BigEndian.AppendUint32(p, errno)
	p = binary.BigEndian.AppendUint16(p, uint16(len(msg)))
	p = append(p, msg...)
	typ := uint16(replyTypeError)
	if at >= 0 {
		typ = replyTypeErrorOffset
		p = binary.BigEndian.AppendUint64(p, uint64(at))
	}
	return chunk(req.handle, replyFlagDone, typ, p)
}

// chunk is one structured reply chunk.
func chunk(handle uint64, flags, typ uint16, payload []byte) net.Buffers {
	h := appendChunk(make([]byte, 0, structReplyLen), flags, typ, handle, len(payload))
	if len(payload) == 0 {
		return net.Buffers{h}
	}
	return net.Buffers{h, payload}
}

// replyOK and replyError send from the reader goroutine.
func (c *conn) replyOK(req request) bool { return c.send(c.okReply(req)) }

func (c *conn) replyError(req request, errno uint32, msg string, at int64) bool {
	return c.send(c.errorReply(req, errno, msg, at))
}

// send writes one whole reply under the write lock, within WriteTimeout.
// A failed write ends the connection, so a client that stopped reading
// releases its buffers. It reports whether the connection still works.
func (c *conn) send(b net.Buffers) bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.broken.Load() {
		return false
	}
	c.dl.write(c.st.wTimeout)
	if _, err := b.WriteTo(c.nc); err != nil {
		c.fail(err)
		return false
	}
	return true
}

// fail ends the connection after a write error.
func (c *conn) fail(err error) {
	c.failOnce.Do(func() {
		if c.ctx.Err() == nil {
			c.st.s.log("write failed", "conn", c.id, "err", err)
		}
		c.broken.Store(true)
		c.cancel()
		c.nc.Close()
	})
}
