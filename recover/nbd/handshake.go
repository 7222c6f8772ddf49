package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
)

// errAbort ends a connection whose client sent NBD_OPT_ABORT.
var errAbort = errors.New("nbd: client aborted the handshake")

// errProtocol marks a client that broke the protocol badly enough to be
// disconnected.
var errProtocol = errors.New("nbd: protocol violation")

// conn is one client connection.
type conn struct {
	st     *state
	nc     net.Conn
	id     uint64
	dl     deadlines
	ctx    context.Context // ends when the connection or the server ends
	cancel context.CancelFunc
	br     *bufio.Reader

	// Negotiated during the handshake.
	noZeroes   bool
	structured bool
	metaExport *export // export the base:allocation context was selected for

	wmu      sync.Mutex // serialises replies
	failOnce sync.Once
	broken   atomic.Bool // a write failed: the connection is closed
}

// handshake runs the fixed newstyle negotiation and returns the export
// the client chose.
func (c *conn) handshake() (*export, error) {
	if c.st.hsTimeout > 0 {
		c.dl.read(c.st.hsTimeout)
		c.dl.write(c.st.hsTimeout)
	}
	c.br = bufio.NewReaderSize(c.nc, 64<<10)
	var b [18]byte
	binary.BigEndian.PutUint64(b[0:], magicNBD)
	binary.BigEndian.PutUint64(b[8:], magicOpt)
	binary.BigEndian.PutUint16(b[16:], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(b[:]); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c.br, b[:4]); err != nil {
		return nil, err
	}
	cf := binary.BigEndian.Uint32(b[:4])
	if cf&^(flagCFixedNewstyle|flagCNoZeroes) != 0 {
		return nil, fmt.Errorf("%w: unknown client flags %#x", errProtocol, cf)
	}
	c.noZeroes = cf&flagCNoZeroes != 0
	h := &haggler{c: c}
	for range MaxOptions {
		exp, err := h.option()
		if err != nil || exp != nil {
			return exp, err
		}
	}
	return nil, fmt.Errorf("%w: more than %d options", errProtocol, MaxOptions)
}

// haggler holds the option loop's scratch buffers.
type haggler struct {
	c    *conn
	data []byte // option data, up to MaxOptionLen
	out  []byte // replies being built
}

// skip discards n bytes of option data.
func (h *haggler) skip(n uint32) error {
	_, err := io.CopyN(io.Discard, h.c.br, int64(n))
	return err
}

// reply appends one option reply.
func (h *haggler) reply(opt, typ uint32, payload ...[]byte) {
	n := 0
	for _, p := range payload {
		n += len(p)
	}
	h.out = appendOptReply(h.out, opt, typ, n)
	for _, p := range payload {
		h.out = append(h.out, p...)
	}
}

// replyErr appends an error reply with a message for humans.
func (h *haggler) replyErr(opt, typ uint32, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	if len(msg) > MaxStringLen {
		msg = msg[:MaxStringLen]
	}
	h.reply(opt, typ, []byte(msg))
}

func (h *haggler) flush() error {
	_, err := h.c.nc.Write(h.out)
	h.out = h.out[:0]
	return err
}

// option reads and answers one option. It returns the export when the
// client entered transmission.
func (h *haggler) option() (*export, error) {
	c := h.c
	var hb [optHeaderLen]byte
	if _, err := io.ReadFull(c.br, hb[:]); err != nil {
		return nil, err
	}
	oh, err := parseOptHeader(hb[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errProtocol, err)
	}
	if oh.len > MaxOptionSkip {
		return nil, fmt.Errorf("%w: option %d with %d bytes of data", errProtocol, oh.opt, oh.len)
	}
	switch oh.opt {
	case optExportName, optAbort, optList, optInfo, optGo, optStructured, optListMetaCtx, optSetMetaCtx:
	default:
		// NBD_OPT_STARTTLS (no TLS here), NBD_OPT_EXTENDED_HEADERS and
		// anything unknown.
		if err := h.skip(oh.len); err != nil {
			return nil, err
		}
		h.replyErr(oh.opt, repErrUnsup, "option %d is not supported", oh.opt)
		return nil, h.flush()
	}
	if oh.len > MaxOptionLen {
		if oh.opt == optExportName {
			return nil, fmt.Errorf("%w: export name of %d bytes", errProtocol, oh.len)
		}
		if err := h.skip(oh.len); err != nil {
			return nil, err
		}
		h.replyErr(oh.opt, repErrTooBig, "option data of %d bytes (max %d)", oh.len, MaxOptionLen)
		return nil, h.flush()
	}
	if cap(h.data) < int(oh.len) {
		h.data = make([]byte, oh.len, max(oh.len, 256))
	}
	data := h.data[:oh.len]
	if _, err := io.ReadFull(c.br, data); err != nil {
		return nil, err
	}
	exp, err := h.handle(oh.opt, data)
	if err != nil {
		return nil, err
	}
	if err := h.flush(); err != nil {
		return nil, err
	}
	return exp, nil
}

// handle answers one option whose data has been read (len(data) <=
// MaxOptionLen). Replies are appended to h.out; an error ends the
// connection.
func (h *haggler) handle(opt uint32, data []byte) (*export, error) {
	c, st := h.c, h.c.st
	switch opt {
	case optExportName:
		if checkString(data) != nil {
			return nil, fmt.Errorf("%w: invalid export name", errProtocol)
		}
		exp := st.lookup(string(data))
		if exp == nil {
			// The protocol leaves no way to refuse but a hard disconnect.
			return nil, fmt.Errorf("%w: NBD_OPT_EXPORT_NAME %q: no such export", errProtocol, data)
		}
		var b [exportNameTail]byte
		binary.BigEndian.PutUint64(b[0:], uint64(exp.Size))
		binary.BigEndian.PutUint16(b[8:], c.transmissionFlags())
		if c.noZeroes {
			h.out = append(h.out, b[:10]...)
		} else {
			h.out = append(h.out, b[:]...)
		}
		c.selectMeta(exp)
		return exp, nil

	case optAbort:
		h.reply(opt, repAck)
		h.flush()
		return nil, errAbort

	case optList:
		if len(data) != 0 {
			h.replyErr(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
			return nil, nil
		}
		for _, e := range st.exports {
			var n [4]byte
			binary.BigEndian.PutUint32(n[:], uint32(len(e.Name)))
			h.reply(opt, repServer, n[:], []byte(e.Name), []byte(e.Description))
			if len(h.out) > 64<<10 {
				if err := h.flush(); err != nil {
					return nil, err
				}
			}
		}
		h.reply(opt, repAck)
		return nil, nil

	case optInfo, optGo:
		req, err := parseInfoRequest(data)
		if err != nil {
			h.replyErr(opt, repErrInvalid, "malformed request: %v", err)
			return nil, nil
		}
		exp := st.lookup(req.name)
		if exp == nil {
			h.replyErr(opt, repErrUnknown, "no export named %q", req.name)
			return nil, nil
		}
		h.infoReplies(opt, exp, req)
		h.reply(opt, repAck)
		if opt == optGo {
			c.selectMeta(exp)
			return exp, nil
		}
		return nil, nil

	case optStructured:
		if len(data) != 0 {
			h.replyErr(opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
			return nil, nil
		}
		c.structured = true
		h.reply(opt, repAck)
		return nil, nil

	case optListMetaCtx, optSetMetaCtx:
		set := opt == optSetMetaCtx
		if set {
			c.metaExport = nil // replaced even when this request fails
			if !c.structured {
				h.replyErr(opt, repErrInvalid, "negotiate NBD_OPT_STRUCTURED_REPLY first")
				return nil, nil
			}
		}
		req, err := parseMetaRequest(data)
		if err != nil {
			h.replyErr(opt, repErrInvalid, "malformed request: %v", err)
			return nil, nil
		}
		exp := st.lookup(req.name)
		if exp == nil {
			h.replyErr(opt, repErrUnknown, "no export named %q", req.name)
			return nil, nil
		}
		match := false
		for _, q := range req.queries {
			ns, leaf, ok := strings.Cut(q, ":")
			if !ok || ns == "" {
				h.replyErr(opt, repErrInvalid, "query %q has no namespace", q)
				return nil, nil
			}
			if ns != "base" {
				continue // unknown namespaces are ignored
			}
			// "base:" is a wildcard when listing and selects nothing
			// when setting; unknown leaf names are ignored.
			if leaf == "allocation" || (leaf == "" && !set) {
				match = true
			}
		}
		if len(req.queries) == 0 && !set {
			match = true
		}
		if match {
			var id [4]byte
			if set {
				binary.BigEndian.PutUint32(id[:], metaContextID)
				c.metaExport = exp
			}
			h.reply(opt, repMetaContext, id[:], []byte(metaContextAllocation))
		}
		h.reply(opt, repAck)
		return nil, nil
	}
	return nil, fmt.Errorf("nbd: internal: option %d not handled", opt)
}

// infoReplies appends the NBD_REP_INFO replies for NBD_OPT_INFO/GO:
// always NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE, the name and the
// description when asked for.
func (h *haggler) infoReplies(opt uint32, exp *export, req infoRequest) {
	c := h.c
	var b [14]byte
	binary.BigEndian.PutUint16(b[0:], infoExport)
	binary.BigEndian.PutUint64(b[2:], uint64(exp.Size))
	binary.BigEndian.PutUint16(b[10:], c.transmissionFlags())
	h.reply(opt, repInfo, b[:12])

	binary.BigEndian.PutUint16(b[0:], infoBlockSize)
	binary.BigEndian.PutUint32(b[2:], minBlockSize)
	binary.BigEndian.PutUint32(b[6:], preferredBlock)
	binary.BigEndian.PutUint32(b[10:], uint32(c.st.maxRequest))
	h.reply(opt, repInfo, b[:14])

	var name, desc bool
	for _, t := range req.infos {
		switch t {
		case infoName:
			name = true
		case infoDescription:
			desc = true
		}
	}
	if name {
		binary.BigEndian.PutUint16(b[0:], infoName)
		h.reply(opt, repInfo, b[:2], []byte(exp.Name))
	}
	if desc && exp.Description != "" {
		binary.BigEndian.PutUint16(b[0:], infoDescription)
		h.reply(opt, repInfo, b[:2], []byte(exp.Description))
	}
}

// selectMeta keeps the base:allocation context only when it was selected
// for the export the client entered transmission with.
func (c *conn) selectMeta(exp *export) {
	if c.metaExport != exp {
		c.metaExport = nil
	}
}

// transmissionFlags are the flags of the chosen export as negotiated so
// far.
func (c *conn) transmissionFlags() uint16 {
	f := uint16(tflagHasFlags | tflagReadOnly | tflagSendFlush | tflagCanMultiConn)
	if c.structured {
		f |= tflagSendDF
	}
	return f
}
