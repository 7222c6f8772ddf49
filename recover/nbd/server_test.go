package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func testServer(m *memData) *Server {
	return &Server{Exports: []Export{
		memExport("disk", m, true),
		memExport("nomap", m, false),
		{Name: "", Description: "", Size: 4096, Data: bytes.NewReader(make([]byte, 4096))},
	}}
}

func TestGreetingAndClientFlags(t *testing.T) {
	h := start(t, testServer(newMem(1, testLayout)))
	c := dialRaw(t, h.path)
	if c.hsFlags != flagFixedNewstyle|flagNoZeroes {
		t.Fatalf("handshake flags %#x", c.hsFlags)
	}
	// An unknown client flag: the server must drop the connection.
	c.write(binary.BigEndian.AppendUint32(nil, 1<<5))
	c.expectClosed()
	if _, ok := h.log.find("handshake failed"); !ok {
		t.Fatal("unknown client flags not logged")
	}
}

func TestOptList(t *testing.T) {
	h := start(t, testServer(newMem(1, testLayout)))
	c := dial(t, h.path, flagCFixedNewstyle)
	c.sendOpt(optList, nil)
	rs := c.optReplies(optList)
	var names []string
	for _, r := range rs[:len(rs)-1] {
		if r.typ != repServer {
			t.Fatalf("reply type %#x", r.typ)
		}
		n := binary.BigEndian.Uint32(r.data)
		names = append(names, string(r.data[4:4+n])+"|"+string(r.data[4+n:]))
	}
	want := []string{"disk|test export disk", "nomap|test export nomap", "|"}
	if rs[len(rs)-1].typ != repAck || len(names) != 3 || names[0] != want[0] || names[1] != want[1] || names[2] != want[2] {
		t.Fatalf("list: %q (final %#x)", names, rs[len(rs)-1].typ)
	}
	// NBD_OPT_LIST with data is invalid, and negotiation goes on.
	c.sendOpt(optList, []byte("x"))
	if r := c.optReplies(optList); r[0].typ != repErrInvalid {
		t.Fatalf("list with data: %#x", r[0].typ)
	}
	c.sendOpt(optAbort, nil)
	if r := c.optReplies(optAbort); r[0].typ != repAck {
		t.Fatalf("abort: %#x", r[0].typ)
	}
	c.expectClosed()
}

func TestOptInfoAndGo(t *testing.T) {
	m := newMem(1, testLayout)
	s := testServer(m)
	s.DefaultExport = "disk"
	s.Exports = s.Exports[:2] // no export named "": the default answers ""
	h := start(t, s)
	c := dial(t, h.path, flagCFixedNewstyle)

	// INFO with name and description asked for.
	c.sendOpt(optInfo, infoData("disk", infoName, infoDescription, infoBlockSize, 999))
	rs := c.optReplies(optInfo)
	if rs[len(rs)-1].typ != repAck {
		t.Fatalf("info: %#x", rs[len(rs)-1].typ)
	}
	ei := parseInfos(t, rs)
	wantFlags := uint16(tflagHasFlags | tflagReadOnly | tflagSendFlush | tflagCanMultiConn)
	if ei.size != uint64(len(m.b)) || ei.flags != wantFlags {
		t.Fatalf("info export: size %d flags %#x", ei.size, ei.flags)
	}
	if !ei.bsz || ei.min != 1 || ei.pref != 4096 || ei.max != DefaultMaxRequest {
		t.Fatalf("block size %v %d/%d/%d", ei.bsz, ei.min, ei.pref, ei.max)
	}
	if !ei.hasName || ei.name != "disk" || !ei.hasDesc || ei.desc != "test export disk" {
		t.Fatalf("name %q desc %q", ei.name, ei.desc)
	}

	// Unknown export: NBD_REP_ERR_UNKNOWN, and negotiation goes on.
	c.sendOpt(optInfo, infoData("nope"))
	if rs := c.optReplies(optInfo); len(rs) != 1 || rs[0].typ != repErrUnknown {
		t.Fatalf("unknown export: %+v", rs)
	}
	c.sendOpt(optGo, infoData("nope"))
	if rs := c.optReplies(optGo); len(rs) != 1 || rs[0].typ != repErrUnknown {
		t.Fatalf("go unknown export: %+v", rs)
	}
	// Malformed: a name length past the data, trailing bytes.
	for _, bad := range [][]byte{
		{0, 0, 0, 9, 'd', 0, 0},
		append(infoData("disk", 1), 0),
		{0, 0, 0},
		append(binary.BigEndian.AppendUint32(nil, 3), 'a', 0, 'b', 0, 0), // NUL in name
	} {
		c.sendOpt(optInfo, bad)
		if rs := c.optReplies(optInfo); rs[0].typ != repErrInvalid {
			t.Fatalf("malformed %x: %#x", bad, rs[0].typ)
		}
	}

	// Structured replies add SEND_DF; the empty name is the default.
	c.sendOpt(optStructured, nil)
	if r := c.optReplies(optStructured); r[0].typ != repAck {
		t.Fatalf("structured: %#x", r[0].typ)
	}
	c.structured = true
	c.sendOpt(optGo, infoData("", infoName))
	rs = c.optReplies(optGo)
	ei = parseInfos(t, rs)
	if rs[len(rs)-1].typ != repAck || ei.flags != wantFlags|tflagSendDF || ei.name != "disk" {
		t.Fatalf("go default: %#x flags %#x name %q", rs[len(rs)-1].typ, ei.flags, ei.name)
	}
	r := c.readAt(0, 4096, 0)
	if r.errno != 0 || !bytes.Equal(r.data, m.b[:4096]) {
		t.Fatalf("read after GO: errno %d", r.errno)
	}
	c.disconnect()
}

func TestOptStructuredWithData(t *testing.T) {
	h := start(t, testServer(newMem(1, testLayout)))
	c := dial(t, h.path, flagCFixedNewstyle)
	c.sendOpt(optStructured, []byte{1})
	if r := c.optReplies(optStructured); r[0].typ != repErrInvalid {
		t.Fatalf("structured with data: %#x", r[0].typ)
	}
	// Not negotiated: reads get simple replies.
	c.negotiate("disk", false, false)
	if r := c.readAt(512, 512, 0); r.errno != 0 {
		t.Fatalf("simple read: %d", r.errno)
	}
}

func TestOptExportName(t *testing.T) {
	m := newMem(1, testLayout)
	h := start(t, testServer(m))
	for _, noZeroes := range []bool{false, true} {
		cf := uint32(flagCFixedNewstyle)
		tail := exportNameTail
		if noZeroes {
			cf |= flagCNoZeroes
			tail = 10
		}
		c := dial(t, h.path, cf)
		c.sendOpt(optExportName, []byte("nomap"))
		b := c.readN(tail)
		if binary.BigEndian.Uint64(b) != uint64(len(m.b)) || binary.BigEndian.Uint16(b[8:]) != tflagHasFlags|tflagReadOnly|tflagSendFlush|tflagCanMultiConn {
			t.Fatalf("export name reply %x", b[:10])
		}
		if !bytes.Equal(b[10:], make([]byte, tail-10)) {
			t.Fatal("reserved bytes not zero")
		}
		r := c.readAt(100, 1000, 0)
		if r.errno != 0 || !bytes.Equal(r.data, m.b[100:1100]) {
			t.Fatalf("read: errno %d %s", r.errno, hexdiff(r.data, m.b[100:1100]))
		}
		c.disconnect()
	}
	// An unknown export cannot be refused but by a hard disconnect.
	c := dial(t, h.path, flagCFixedNewstyle)
	c.sendOpt(optExportName, []byte("nope"))
	c.expectClosed()
}

func TestOptUnsupportedAndHostile(t *testing.T) {
	h := start(t, testServer(newMem(1, testLayout)))
	c := dial(t, h.path, flagCFixedNewstyle)
	for _, opt := range []uint32{optStartTLS, optExtendedHeader, 4, 99, 1 << 31} {
		c.sendOpt(opt, []byte("some data"))
		if r := c.optReplies(opt); r[0].typ != repErrUnsup {
			t.Fatalf("option %d: %#x", opt, r[0].typ)
		}
	}
	// A known option with more data than the server parses: TOO_BIG, and
	// the stream stays in step.
	c.sendOpt(optInfo, make([]byte, MaxOptionLen+1))
	if r := c.optReplies(optInfo); r[0].typ != repErrTooBig {
		t.Fatalf("big info: %#x", r[0].typ)
	}
	c.negotiate("disk", true, true)
	if r := c.blockStatus(0, 4096, 0); r.errno != 0 {
		t.Fatalf("block status after hostile options: %d", r.errno)
	}

	// More than MaxOptionSkip: hard disconnect, without reading it all.
	c = dial(t, h.path, flagCFixedNewstyle)
	hdr := optBytes(99, nil)
	binary.BigEndian.PutUint32(hdr[12:], MaxOptionSkip+1)
	c.write(hdr)
	c.expectClosed()

	// A bad option magic: hard disconnect.
	c = dial(t, h.path, flagCFixedNewstyle)
	c.write(make([]byte, 16))
	c.expectClosed()

	// A huge export name with NBD_OPT_EXPORT_NAME: hard disconnect.
	c = dial(t, h.path, flagCFixedNewstyle)
	hdr = optBytes(optExportName, nil)
	binary.BigEndian.PutUint32(hdr[12:], MaxOptionLen+1)
	c.write(hdr)
	c.expectClosed()
}

func TestTooManyOptions(t *testing.T) {
	h := start(t, testServer(newMem(1, testLayout)))
	c := dial(t, h.path, flagCFixedNewstyle)
	go func() {
		// Send more options than allowed without waiting; the server
		// answers each until the cap, then hangs up.
		b := bytes.Repeat(optBytes(optStructured, nil), MaxOptions+1)
		c.nc.Write(b)
	}()
	for i := range MaxOptions {
		r := c.optReply()
		if r.typ != repAck {
			t.Fatalf("option %d: %#x", i, r.typ)
		}
	}
	c.expectClosed()
}

func TestMetaContext(t *testing.T) {
	m := newMem(1, testLayout)
	h := start(t, testServer(m))
	c := dial(t, h.path, flagCFixedNewstyle)

	// SET before structured replies: invalid.
	c.sendOpt(optSetMetaCtx, metaData("disk", metaContextAllocation))
	if r := c.optReplies(optSetMetaCtx); r[0].typ != repErrInvalid {
		t.Fatalf("set before structured: %#x", r[0].typ)
	}
	// LIST: all contexts, the base: wildcard, an exact name, unknown ones.
	for _, qs := range [][]string{nil, {"base:"}, {metaContextAllocation}, {"qemu:dirty-bitmap:x", "base:allocation"}} {
		c.sendOpt(optListMetaCtx, metaData("disk", qs...))
		rs := c.optReplies(optListMetaCtx)
		if len(rs) != 2 || rs[0].typ != repMetaContext || string(rs[0].data[4:]) != metaContextAllocation || rs[1].typ != repAck {
			t.Fatalf("list %q: %+v", qs, rs)
		}
	}
	c.sendOpt(optListMetaCtx, metaData("disk", "qemu:", "base:nothing"))
	if rs := c.optReplies(optListMetaCtx); len(rs) != 1 || rs[0].typ != repAck {
		t.Fatalf("list unknown: %+v", rs)
	}
	c.sendOpt(optListMetaCtx, metaData("disk", "nocolon"))
	if rs := c.optReplies(optListMetaCtx); rs[0].typ != repErrInvalid {
		t.Fatalf("list no colon: %+v", rs)
	}
	c.sendOpt(optListMetaCtx, metaData("nope"))
	if rs := c.optReplies(optListMetaCtx); rs[0].typ != repErrUnknown {
		t.Fatalf("list unknown export: %+v", rs)
	}
	c.sendOpt(optListMetaCtx, []byte{0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1})
	if rs := c.optReplies(optListMetaCtx); rs[0].typ != repErrInvalid {
		t.Fatalf("list truncated: %+v", rs)
	}

	c.sendOpt(optStructured, nil)
	c.optReplies(optStructured)
	c.structured = true
	// SET with "base:" or unknown names selects nothing.
	c.sendOpt(optSetMetaCtx, metaData("disk", "base:", "x-foo:bar"))
	if rs := c.optReplies(optSetMetaCtx); len(rs) != 1 || rs[0].typ != repAck {
		t.Fatalf("set nothing: %+v", rs)
	}
	// SET for "disk", then GO to "nomap": the context does not carry over.
	c.sendOpt(optSetMetaCtx, metaData("disk", metaContextAllocation))
	rs := c.optReplies(optSetMetaCtx)
	if len(rs) != 2 || binary.BigEndian.Uint32(rs[0].data) != metaContextID {
		t.Fatalf("set: %+v", rs)
	}
	c.sendOpt(optGo, infoData("nomap"))
	c.optReplies(optGo)
	if r := c.blockStatus(0, 4096, 0); r.errno != errnoInval {
		t.Fatalf("block status on another export: errno %d", r.errno)
	}
	// Without any SET: EINVAL too.
	c2 := dial(t, h.path, flagCFixedNewstyle)
	c2.negotiate("disk", true, false)
	if r := c2.blockStatus(0, 4096, 0); r.errno != errnoInval {
		t.Fatalf("block status without context: errno %d", r.errno)
	}
}

func TestReadSimple(t *testing.T) {
	m := newMem(2, testLayout)
	h := start(t, testServer(m))
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", false, false)
	size := uint64(len(m.b))
	for _, rg := range [][2]uint64{{0, 4096}, {1, 1}, {65000, 300000}, {size - 4096, 4096}, {0, uint64(size)}} {
		r := c.readAt(rg[0], uint32(rg[1]), 0)
		if r.errno != 0 || !bytes.Equal(r.data, m.b[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("read %v: errno %d %s", rg, r.errno, hexdiff(r.data, m.b[rg[0]:rg[0]+rg[1]]))
		}
	}
	if r := c.readAt(0, 0, 0); r.errno != 0 {
		t.Fatalf("empty read: %d", r.errno)
	}
	// Past the end, overflowing, too long, bad flags: EINVAL, no payload,
	// and the connection goes on.
	for _, bad := range []struct {
		off   uint64
		n     uint32
		flags uint16
	}{{size - 4095, 4096, 0}, {size, 1, 0}, {1<<64 - 1, 2, 0}, {0, DefaultMaxRequest + 1, 0}, {0, 512, cmdFlagDF}, {0, 512, 1 << 9}} {
		c.request(bad.flags, cmdRead, 7, bad.off, bad.n, nil)
		if r := c.readReply(0, bad.off, 0); r.errno != errnoInval || r.handle != 7 {
			t.Fatalf("read %+v: errno %d", bad, r.errno)
		}
	}
	if r := c.readAt(0, 512, 0); r.errno != 0 || !bytes.Equal(r.data, m.b[:512]) {
		t.Fatal("read after errors failed")
	}
	c.disconnect()
}

func TestReadStructuredHoles(t *testing.T) {
	m := newMem(3, testLayout)
	h := start(t, testServer(m))
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", true, true)
	size := uint32(len(m.b))

	m.read.Store(0)
	r := c.readAt(0, size, 0)
	if r.errno != 0 || !bytes.Equal(r.data, m.b) {
		t.Fatalf("structured read: errno %d %s", r.errno, hexdiff(r.data, m.b))
	}
	// Holes and zeroed runs go out as hole chunks and are never read.
	var zeros, data int64
	for _, e := range testLayout {
		if e.Zero {
			zeros += e.Length
		} else {
			data += e.Length
		}
	}
	if r.holes != 2 || m.read.Load() != data {
		t.Fatalf("%d hole chunks, %d bytes read (data %d, zeros %d)", r.holes, m.read.Load(), data, zeros)
	}
	// Don't fragment: one data chunk, zeros included.
	r = c.readAt(0, size, cmdFlagDF)
	if r.errno != 0 || r.dataChunk != 1 || r.holes != 0 || !bytes.Equal(r.data, m.b) {
		t.Fatalf("DF read: errno %d, %d data chunks, %d holes", r.errno, r.dataChunk, r.holes)
	}
	// Unaligned reads across runs.
	for _, rg := range [][2]uint32{{63 << 10, 4 << 10}, {100, 300 << 10}, {size - 5000, 5000}} {
		r := c.readAt(uint64(rg[0]), rg[1], 0)
		if r.errno != 0 || !bytes.Equal(r.data, m.b[rg[0]:rg[0]+rg[1]]) {
			t.Fatalf("read %v: %s", rg, hexdiff(r.data, m.b[rg[0]:rg[0]+rg[1]]))
		}
	}
	// Past the end: an error chunk.
	c.request(0, cmdRead, 9, uint64(size), 512, nil)
	if r := c.readReply(0, uint64(size), 0); r.errno != errnoInval {
		t.Fatalf("structured read past end: %d", r.errno)
	}
	// Without a map, everything is data.
	c2 := dial(t, h.path, flagCFixedNewstyle)
	c2.negotiate("nomap", true, false)
	r = c2.readAt(0, size, 0)
	if r.errno != 0 || r.holes != 0 || !bytes.Equal(r.data, m.b) {
		t.Fatalf("nomap read: errno %d holes %d", r.errno, r.holes)
	}
}

func TestReadFragmentedMap(t *testing.T) {
	// 4 KiB runs alternating data and zeros over 4 MiB: more zero runs
	// than maxHoleChunks; the rest are read as data, bytes still right.
	var layout []Extent
	for range 512 {
		layout = append(layout, Extent{Length: 4096}, Extent{Length: 4096, Hole: true, Zero: true})
	}
	m := newMem(4, layout)
	h := start(t, &Server{Exports: []Export{memExport("frag", m, true)}})
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("frag", true, false)
	r := c.readAt(0, uint32(len(m.b)), 0)
	if r.errno != 0 || !bytes.Equal(r.data, m.b) || r.holes != maxHoleChunks {
		t.Fatalf("fragmented read: errno %d, %d holes, %s", r.errno, r.holes, hexdiff(r.data, m.b))
	}
}

func TestBlockStatus(t *testing.T) {
	m := newMem(5, testLayout)
	h := start(t, testServer(m))
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", true, true)
	size := uint32(len(m.b))
	flags := func(e Extent) uint32 {
		var f uint32
		if e.Hole {
			f |= stateHole
		}
		if e.Zero {
			f |= stateZero
		}
		return f
	}
	r := c.blockStatus(0, size, 0)
	if r.errno != 0 || r.ctxID != metaContextID || len(r.status) != len(testLayout) {
		t.Fatalf("block status: errno %d ctx %d, %d extents", r.errno, r.ctxID, len(r.status))
	}
	for i, e := range testLayout {
		if r.status[i] != [2]uint32{uint32(e.Length), flags(e)} {
			t.Fatalf("extent %d: %v, want %+v", i, r.status[i], e)
		}
	}
	// Part of a run, REQ_ONE.
	r = c.blockStatus(70<<10, size-(70<<10), cmdFlagReqOne)
	if len(r.status) != 1 || r.status[0] != [2]uint32{(64 + 192 - 70) << 10, stateHole | stateZero} {
		t.Fatalf("REQ_ONE: %v", r.status)
	}
	r = c.blockStatus(70<<10, 1000, 0)
	if len(r.status) != 1 || r.status[0] != [2]uint32{1000, stateHole | stateZero} {
		t.Fatalf("short: %v", r.status)
	}
	for _, bad := range []struct {
		off   uint64
		n     uint32
		flags uint16
	}{{uint64(size) - 512, 1024, 0}, {0, 0, 0}, {0, 512, cmdFlagDF}} {
		if r := c.blockStatus(bad.off, bad.n, bad.flags); r.errno != errnoInval {
			t.Fatalf("block status %+v: errno %d", bad, r.errno)
		}
	}
	// No map: one allocated extent.
	c2 := dial(t, h.path, flagCFixedNewstyle)
	c2.negotiate("nomap", true, true)
	if r := c2.blockStatus(0, size, 0); len(r.status) != 1 || r.status[0] != [2]uint32{size, 0} {
		t.Fatalf("nomap: %v", r.status)
	}
}

func TestBlockStatusMapError(t *testing.T) {
	m := newMem(5, testLayout)
	errMap := errors.New("grain table unreadable")
	exp := memExport("disk", m, true)
	exp.Extents = func(off, n int64) ([]Extent, error) {
		if off >= 256<<10 {
			return nil, errMap
		}
		return m.extents(off, n)
	}
	h := start(t, &Server{Exports: []Export{exp}})
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", true, true)
	if r := c.blockStatus(256<<10, 4096, 0); r.errno != errnoIO || r.errOffset != 256<<10 {
		t.Fatalf("map error: errno %d at %d", r.errno, r.errOffset)
	}
	// A read where the map fails still reads the data.
	if r := c.readAt(300<<10, 4096, 0); r.errno != 0 || !bytes.Equal(r.data, m.b[300<<10:304<<10]) {
		t.Fatalf("read with map error: errno %d", r.errno)
	}
	if r := c.blockStatus(0, 4096, 0); r.errno != 0 {
		t.Fatalf("block status elsewhere: errno %d", r.errno)
	}
	if args, ok := h.log.find("extents error"); !ok || !errors.Is(argOf(args, "err").(error), errMap) {
		t.Fatalf("map error not logged: %v", args)
	}
}

func TestWritesRefused(t *testing.T) {
	m := newMem(6, testLayout)
	orig := bytes.Clone(m.b)
	for _, structured := range []bool{false, true} {
		h := start(t, testServer(m))
		c := dial(t, h.path, flagCFixedNewstyle)
		c.negotiate("disk", structured, false)
		// A WRITE whose payload looks like a request: if the server did
		// not skip it, it would parse it as one.
		payload := make([]byte, 8192)
		for i := 0; i+28 <= len(payload); i += 28 {
			copy(payload[i:], binary.BigEndian.AppendUint32(nil, magicRequest))
		}
		c.request(0, cmdWrite, 1, 0, uint32(len(payload)), payload)
		if r := c.readReply(0, 0, 0); r.errno != errnoPerm || r.handle != 1 {
			t.Fatalf("write: errno %d handle %d", r.errno, r.handle)
		}
		for i, typ := range []uint16{cmdTrim, cmdWriteZeroes} {
			c.request(0, typ, uint64(2+i), 0, 4096, nil)
			if r := c.readReply(0, 0, 0); r.errno != errnoPerm {
				t.Fatalf("command %d: errno %d", typ, r.errno)
			}
		}
		c.request(0, cmdFlush, 4, 0, 0, nil)
		if r := c.readReply(0, 0, 0); r.errno != 0 || r.handle != 4 {
			t.Fatalf("flush: errno %d", r.errno)
		}
		for _, typ := range []uint16{cmdCache, 8, 42, 0xffff} {
			c.request(0, typ, 5, 0, 4096, nil)
			if r := c.readReply(0, 0, 0); r.errno != errnoInval {
				t.Fatalf("command %d: errno %d", typ, r.errno)
			}
		}
		if r := c.readAt(0, 8192, 0); r.errno != 0 || !bytes.Equal(r.data, orig[:8192]) {
			t.Fatal("data changed or stream out of step after a refused write")
		}
		// A WRITE longer than MaxRequest: the server hangs up rather than
		// read it.
		c.request(0, cmdWrite, 6, 0, DefaultMaxRequest+1, nil)
		c.expectClosed()
		h.stop()
	}
	if !bytes.Equal(m.b, orig) {
		t.Fatal("export bytes changed")
	}
}

func TestBadRequestMagic(t *testing.T) {
	h := start(t, testServer(newMem(1, testLayout)))
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", true, false)
	c.write(make([]byte, requestLen))
	c.expectClosed()
	if _, ok := h.log.find("protocol error"); !ok {
		t.Fatal("bad magic not logged")
	}
}

func TestReadErrorIsEIO(t *testing.T) {
	m := newMem(7, testLayout)
	bad := int64(64<<10 + 192<<10 + 32<<10 + 1000) // inside the second data run
	fd := &faultyData{ReaderAt: m, bad: bad, badLen: 512, panicAt: -1}
	exp := memExport("disk", m, true)
	exp.Data = fd
	for _, structured := range []bool{false, true} {
		h := start(t, &Server{Exports: []Export{exp}})
		c := dial(t, h.path, flagCFixedNewstyle)
		c.negotiate("disk", structured, false)
		r := c.readAt(uint64(bad-600), 4096, 0)
		if r.errno != errnoIO {
			t.Fatalf("structured=%v: errno %d", structured, r.errno)
		}
		if structured && r.errOffset != bad {
			t.Fatalf("error offset %d, want %d", r.errOffset, bad)
		}
		args, ok := h.log.find("read error")
		if !ok || argOf(args, "offset") != bad || argOf(args, "export") != "disk" || !errors.Is(argOf(args, "err").(error), errInjected) {
			t.Fatalf("read error log: %v", args)
		}
		// The same connection and others go on.
		if r := c.readAt(0, 4096, 0); r.errno != 0 || !bytes.Equal(r.data, m.b[:4096]) {
			t.Fatal("read after error failed")
		}
		c2 := dial(t, h.path, flagCFixedNewstyle)
		c2.negotiate("disk", structured, false)
		if r := c2.readAt(uint64(bad+512), 4096, 0); r.errno != 0 || !bytes.Equal(r.data, m.b[bad+512:bad+512+4096]) {
			t.Fatal("read past the damage failed")
		}
		h.stop()
	}
}

func TestPanicInReadIsEIO(t *testing.T) {
	m := newMem(8, testLayout)
	fd := &faultyData{ReaderAt: m, badLen: 0, panicAt: 8192}
	exp := memExport("disk", m, false)
	exp.Data = fd
	h := start(t, &Server{Exports: []Export{exp}})
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", true, false)
	if r := c.readAt(4096, 8192, 0); r.errno != errnoIO {
		t.Fatalf("panicking read: errno %d", r.errno)
	}
	if h.log.count("panic") != 1 {
		t.Fatal("panic not logged")
	}
	if r := c.readAt(16384, 4096, 0); r.errno != 0 || !bytes.Equal(r.data, m.b[16384:20480]) {
		t.Fatal("read after panic failed")
	}
	// The panic released its buffer: a full-budget read still goes through.
	c.disconnect()
}

// barrierData blocks each read until n reads are in progress at once:
// the test only completes if the server handles requests concurrently.
type barrierData struct {
	io.ReaderAt
	n       int32
	cur     atomic.Int32
	peak    atomic.Int32
	release chan struct{}
	once    sync.Once
}

func (b *barrierData) ReadAt(p []byte, off int64) (int, error) {
	c := b.cur.Add(1)
	defer b.cur.Add(-1)
	for {
		pk := b.peak.Load()
		if c <= pk || b.peak.CompareAndSwap(pk, c) {
			break
		}
	}
	if c >= b.n {
		b.once.Do(func() { close(b.release) })
	}
	select {
	case <-b.release:
	case <-time.After(10 * time.Second):
	}
	return b.ReaderAt.ReadAt(p, off)
}

func TestPipelinedConcurrent(t *testing.T) {
	m := newMem(9, testLayout)
	const inflight = 4
	bd := &barrierData{ReaderAt: m, n: inflight, release: make(chan struct{})}
	exp := memExport("disk", m, false)
	exp.Data = bd
	h := start(t, &Server{Exports: []Export{exp}, MaxInFlight: inflight})
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", true, false)
	const n = 200
	go func() {
		for i := range n {
			c.request(0, cmdRead, uint64(i), uint64(i*512), 512, nil)
		}
	}()
	seen := make(map[uint64]bool)
	for range n {
		// Replies may come in any order: find each one's request by handle.
		hd := c.readN(20)
		if binary.BigEndian.Uint32(hd) != magicStructure || binary.BigEndian.Uint16(hd[6:]) != replyTypeOffsetData {
			t.Fatalf("reply %x", hd)
		}
		handle := binary.BigEndian.Uint64(hd[8:])
		p := c.readN(int(binary.BigEndian.Uint32(hd[16:])))
		off := binary.BigEndian.Uint64(p)
		if seen[handle] || off != handle*512 || !bytes.Equal(p[8:], m.b[off:off+512]) {
			t.Fatalf("reply for handle %d at %d wrong", handle, off)
		}
		seen[handle] = true
	}
	if pk := bd.peak.Load(); pk != inflight {
		t.Fatalf("peak concurrency %d, want %d (MaxInFlight)", pk, inflight)
	}
	c.disconnect()
}

func TestClientNeverReads(t *testing.T) {
	m := newMem(10, []Extent{{Length: 2 << 20}})
	s := &Server{
		Exports:        []Export{memExport("disk", m, false)},
		WriteTimeout:   300 * time.Millisecond,
		MaxRequest:     1 << 20,
		MaxBufferBytes: 2 << 20,
	}
	h := start(t, s)
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", false, false)
	// Ask for far more than the socket buffers hold, never read.
	go func() {
		for i := range 64 {
			c.request(0, cmdRead, uint64(i), 0, 1<<20, nil)
		}
	}()
	// The server gives up on the stuck client; its buffers come back, so
	// another client can read the whole budget.
	deadline := time.Now().Add(10 * time.Second)
	for h.log.count("write failed") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("stuck client never disconnected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	c2 := dial(t, h.path, flagCFixedNewstyle)
	c2.negotiate("disk", false, false)
	for range 4 {
		if r := c2.readAt(0, 1<<20, 0); r.errno != 0 || !bytes.Equal(r.data, m.b[:1<<20]) {
			t.Fatal("read after stuck client failed")
		}
	}
	c2.disconnect()
}

func TestHandshakeTimeout(t *testing.T) {
	h := start(t, &Server{Exports: testServer(newMem(1, testLayout)).Exports, HandshakeTimeout: 200 * time.Millisecond})
	c := dialRaw(t, h.path) // sends nothing
	t0 := time.Now()
	c.expectClosed()
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("closed after %v", d)
	}
	// After GO the handshake deadline no longer applies.
	c = dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", false, false)
	time.Sleep(400 * time.Millisecond)
	if r := c.readAt(0, 512, 0); r.errno != 0 {
		t.Fatal("read after handshake deadline failed")
	}
}

func TestIdleTimeout(t *testing.T) {
	h := start(t, &Server{Exports: testServer(newMem(1, testLayout)).Exports, IdleTimeout: 200 * time.Millisecond})
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", false, false)
	if r := c.readAt(0, 512, 0); r.errno != 0 {
		t.Fatal(r.errno)
	}
	c.expectClosed()
}

func TestMaxConns(t *testing.T) {
	h := start(t, &Server{Exports: testServer(newMem(1, testLayout)).Exports, MaxConns: 2})
	a := dial(t, h.path, flagCFixedNewstyle)
	b := dial(t, h.path, flagCFixedNewstyle)
	nc, err := net.Dial("unix", h.path)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection got a greeting")
	}
	if h.log.count("connection refused") != 1 {
		t.Fatal("refusal not logged")
	}
	a.sendOpt(optAbort, nil)
	a.expectClosed()
	// A slot is free again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := dialOrClosed(h.path)
		if c {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slot not freed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.negotiate("disk", false, false)
}

// dialOrClosed reports whether a new connection gets a greeting.
func dialOrClosed(path string) bool {
	nc, err := net.Dial("unix", path)
	if err != nil {
		return false
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = io.ReadFull(nc, make([]byte, 18))
	return err == nil
}

func TestManyConnectionsDropped(t *testing.T) {
	m := newMem(11, testLayout)
	h := start(t, testServer(m))
	for i := range 100 {
		nc, err := net.Dial("unix", h.path)
		if err != nil {
			t.Fatal(err)
		}
		c := &tclient{t: t, nc: nc}
		switch i % 5 {
		case 0: // drop at once
		case 1: // mid-greeting
			nc.Read(make([]byte, 5))
		case 2: // mid-option
			io.ReadFull(nc, make([]byte, 18))
			nc.Write(binary.BigEndian.AppendUint32(nil, flagCFixedNewstyle))
			nc.Write(optBytes(optGo, infoData("disk"))[:20])
		case 3: // mid-read: a large request, a few bytes of the reply read
			c.br = bufioReader(nc)
			io.ReadFull(c.br, make([]byte, 18))
			c.write(binary.BigEndian.AppendUint32(nil, flagCFixedNewstyle))
			c.negotiate("disk", true, false)
			for j := range 8 {
				c.request(0, cmdRead, uint64(j), 0, uint32(len(m.b)), nil)
			}
			io.ReadFull(c.br, make([]byte, 100))
		case 4: // pipelined requests, then gone
			c.br = bufioReader(nc)
			io.ReadFull(c.br, make([]byte, 18))
			c.write(binary.BigEndian.AppendUint32(nil, flagCFixedNewstyle))
			c.negotiate("disk", false, false)
			for j := range 50 {
				c.request(0, cmdRead, uint64(j), 0, 65536, nil)
			}
		}
		nc.Close()
	}
	// The server still serves.
	c := dial(t, h.path, flagCFixedNewstyle)
	c.negotiate("disk", true, true)
	if r := c.readAt(0, uint32(len(m.b)), 0); r.errno != 0 || !bytes.Equal(r.data, m.b) {
		t.Fatal("read after dropped connections failed")
	}
	if h.log.count("panic") != 0 {
		t.Fatal("a panic was logged")
	}
	c.disconnect()
	h.stop() // checks for leaked goroutines
}

func TestShutdownWithOpenClients(t *testing.T) {
	m := newMem(12, testLayout)
	h := start(t, testServer(m))
	var cs []*tclient
	for i := range 6 {
		c := dial(t, h.path, flagCFixedNewstyle)
		if i%2 == 0 {
			c.negotiate("disk", true, true)
			c.request(0, cmdRead, 1, 0, uint32(len(m.b)), nil) // never read
		}
		cs = append(cs, c)
	}
	t0 := time.Now()
	h.stop()
	if d := time.Since(t0); d > shutdownGrace+3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	for _, c := range cs {
		c.expectClosed()
	}
}

func TestServeBadConfig(t *testing.T) {
	d := bytes.NewReader(nil)
	for name, s := range map[string]*Server{
		"nil data":    {Exports: []Export{{Name: "a"}}},
		"negative":    {Exports: []Export{{Name: "a", Size: -1, Data: d}}},
		"duplicate":   {Exports: []Export{{Name: "a", Data: d}, {Name: "a", Data: d}}},
		"NUL in name": {Exports: []Export{{Name: "a\x00", Data: d}}},
		"long name":   {Exports: []Export{{Name: string(make([]byte, MaxStringLen+1)), Data: d}}},
		"bad default": {Exports: []Export{{Name: "a", Data: d}}, DefaultExport: "b"},
		"max request": {Exports: []Export{{Name: "a", Data: d}}, MaxRequest: 2 << 30},
	} {
		ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Serve(context.Background(), ln); !errors.Is(err, ErrBadExport) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestListenUnix(t *testing.T) {
	parent := t.TempDir()
	ln, err := ListenUnix(parent, "x.sock")
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(ln.Path) != ln.Dir || filepath.Dir(ln.Dir) != parent {
		t.Fatalf("path %s dir %s", ln.Path, ln.Dir)
	}
	if runtime.GOOS != "windows" {
		di, err := os.Stat(ln.Dir)
		if err != nil || di.Mode().Perm() != 0o700 {
			t.Fatalf("folder mode %v %v", di.Mode(), err)
		}
		si, err := os.Stat(ln.Path)
		if err != nil || si.Mode().Perm() != 0o600 || si.Mode()&os.ModeSocket == 0 {
			t.Fatalf("socket mode %v %v", si.Mode(), err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- (&Server{Exports: []Export{{Name: "a", Size: 512, Data: bytes.NewReader(make([]byte, 512))}}}).Serve(ctx, ln)
	}()
	c := dial(t, ln.Path, flagCFixedNewstyle)
	c.negotiate("a", false, false)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ln.Dir); !os.IsNotExist(err) {
		t.Fatalf("socket folder left behind: %v", err)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Fatalf("left in parent: %v", ents)
	}
	for _, bad := range []string{"", "a/b", "..", "."} {
		if _, err := ListenUnix(parent, bad); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	long := filepath.Join(parent, string(bytes.Repeat([]byte("d"), 100)))
	if err := os.Mkdir(long, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenUnix(long, "s"); err == nil {
		t.Error("too long a socket path accepted")
	}
	if ents, _ := os.ReadDir(long); len(ents) != 0 {
		t.Fatalf("failed listen left %v", ents)
	}
}

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:10809": true, "127.1.2.3:1": true, "[::1]:10809": true, "localhost:10809": true,
		"LOCALHOST:1": true, "[::1%lo]:1": true,
		":10809": false, "0.0.0.0:10809": false, "[::]:10809": false, "192.168.1.5:10809": false,
		"example.com:10809": false, "[::ffff:10.0.0.1]:1": false,
	} {
		err := CheckLoopback(addr)
		if ok && err != nil || !ok && !errors.Is(err, ErrNotLoopback) {
			t.Errorf("%s: %v", addr, err)
		}
	}
	if err := CheckLoopback("nonsense"); err == nil || errors.Is(err, ErrNotLoopback) {
		t.Errorf("bad address: %v", err)
	}
}

// closingListener fails Accept once told to, as a listener closed by
// someone else would.
type closingListener struct {
	net.Listener
	fail chan struct{}
}

func (l *closingListener) Accept() (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := l.Listener.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-l.fail:
		l.Listener.Close()
		r := <-ch
		if r.c != nil {
			r.c.Close()
		}
		return nil, net.ErrClosed
	}
}

func TestServeListenerFailureEndsConnections(t *testing.T) {
	before := runtime.NumGoroutine()
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	cl := &closingListener{Listener: ln, fail: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- testServer(newMem(1, testLayout)).Serve(context.Background(), cl) }()
	c := dial(t, ln.Addr().String(), flagCFixedNewstyle)
	c.negotiate("disk", false, false)
	close(cl.fail)
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve kept waiting for its connections after the listener failed")
	}
	c.expectClosed()
	checkGoroutines(t, before)
}
