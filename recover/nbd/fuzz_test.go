package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeConn is a net.Conn that reads a fixed client byte stream and
// collects what the server writes. Deadlines are ignored: the stream ends.
type fakeConn struct {
	r   *bytes.Reader
	mu  sync.Mutex
	out bytes.Buffer
	max int // cap on collected output
}

func (f *fakeConn) Read(p []byte) (int, error) { return f.r.Read(p) }
func (f *fakeConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.out.Len() < f.max {
		f.out.Write(p[:min(len(p), f.max-f.out.Len())])
	}
	return len(p), nil
}
func (f *fakeConn) Close() error                     { return nil }
func (f *fakeConn) LocalAddr() net.Addr              { return fakeAddr{} }
func (f *fakeConn) RemoteAddr() net.Addr             { return fakeAddr{} }
func (f *fakeConn) SetDeadline(time.Time) error      { return nil }
func (f *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(time.Time) error { return nil }

type fakeAddr struct{}

func (fakeAddr) Network() string { return "fake" }
func (fakeAddr) String() string  { return "fake" }

// fuzzServer is small: 1 MiB export with a map, 64 KiB maximum request.
// Built once per target; each ServeConn has its own state. A panic in a
// handler is recorded in *panicked (the server survives it by design, so
// the fuzz target checks the flag).
func fuzzServer(panicked *atomic.Bool) *Server {
	m := newMem(1, []Extent{{Length: 64 << 10}, {Length: 192 << 10, Hole: true, Zero: true}, {Length: 768 << 10}})
	return &Server{
		Exports: []Export{
			memExport("disk", m, true),
			{Name: "", Size: 1000, Data: bytes.NewReader(make([]byte, 1000))},
		},
		MaxRequest:     64 << 10,
		MaxBufferBytes: 1 << 20,
		Log: func(ev string, args ...any) {
			if ev == "panic" {
				panicked.Store(true)
			}
		},
	}
}

// runConn serves one fake connection and checks the server's output is a
// well-formed sequence of option replies (until transmission).
func runConn(t *testing.T, s *Server, panicked *atomic.Bool, in []byte) []byte {
	fc := &fakeConn{r: bytes.NewReader(in), max: 1 << 20}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(context.Background(), fc)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return at the end of the input")
	}
	if panicked.Load() {
		t.Fatal("a handler panicked")
	}
	return fc.out.Bytes()
}

// FuzzHandshake feeds arbitrary client flags and options to the option
// parser and its handlers: no panic, no hang, bounded memory, and every
// reply well-formed.
func FuzzHandshake(f *testing.F) {
	cf := binary.BigEndian.AppendUint32(nil, flagCFixedNewstyle)
	seed := func(opts ...[]byte) []byte {
		b := bytes.Clone(cf)
		for _, o := range opts {
			b = append(b, o...)
		}
		return b
	}
	var panicked atomic.Bool
	s := fuzzServer(&panicked)
	f.Add(seed(optBytes(optList, nil), optBytes(optAbort, nil)))
	f.Add(seed(optBytes(optInfo, infoData("disk", 0, 1, 2, 3)), optBytes(optGo, infoData("", 3))))
	f.Add(seed(optBytes(optStructured, nil), optBytes(optSetMetaCtx, metaData("disk", "base:allocation")), optBytes(optGo, infoData("disk"))))
	f.Add(seed(optBytes(optListMetaCtx, metaData("disk", "base:", "x:y")), optBytes(optExportName, []byte("disk"))))
	f.Add(seed(optBytes(99, []byte("junk")), optBytes(optStartTLS, nil), optBytes(optExportName, []byte("nope"))))
	f.Add(seed(optBytes(optInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})))
	f.Add(seed(optBytes(optSetMetaCtx, []byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 4096 {
			return
		}
		out := runConn(t, s, &panicked, in)
		// The greeting, then option replies: each has the reply magic and
		// a length that fits (the final export-name reply aside).
		if len(out) < 18 || binary.BigEndian.Uint64(out) != magicNBD {
			t.Fatalf("no greeting: %x", out)
		}
		rest := out[18:]
		for len(rest) >= 20 && binary.BigEndian.Uint64(rest) == magicOptReply {
			n := binary.BigEndian.Uint32(rest[16:])
			if uint64(n) > uint64(len(rest)-20) {
				t.Fatalf("reply length %d past output", n)
			}
			rest = rest[20+n:]
		}
	})
}

// FuzzRequests runs a fixed handshake (structured replies and
// base:allocation on "disk") then feeds arbitrary request bytes: huge
// lengths, offsets past the end, unknown commands and flags, writes with
// or without payload. Every reply must be well-formed and name a handle
// the client sent.
func FuzzRequests(f *testing.F) {
	req := func(flags, typ uint16, handle, off uint64, n uint32) []byte {
		b := binary.BigEndian.AppendUint32(nil, magicRequest)
		b = binary.BigEndian.AppendUint16(b, flags)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint64(b, handle)
		b = binary.BigEndian.AppendUint64(b, off)
		return binary.BigEndian.AppendUint32(b, n)
	}
	var panicked atomic.Bool
	s := fuzzServer(&panicked)
	f.Add(true, req(0, cmdRead, 1, 0, 4096))
	f.Add(false, req(0, cmdRead, 1, 60<<10, 64<<10))
	f.Add(true, append(req(0, cmdBlockStatus, 2, 0, 1<<20), req(cmdFlagReqOne, cmdBlockStatus, 3, 100, 1)...))
	f.Add(true, append(req(0, cmdWrite, 4, 0, 8), []byte("12345678")...))
	f.Add(false, req(0, cmdRead, 5, 1<<63, 0xffffffff))
	f.Add(true, append(req(cmdFlagDF, cmdRead, 6, 1<<20-1, 1), req(0, cmdDisc, 7, 0, 0)...))
	f.Add(true, req(0xffff, 0xffff, 8, 0, 0))
	f.Fuzz(func(t *testing.T, structured bool, in []byte) {
		if len(in) > 4096 {
			return
		}
		hs := binary.BigEndian.AppendUint32(nil, flagCFixedNewstyle)
		if structured {
			hs = append(hs, optBytes(optStructured, nil)...)
			hs = append(hs, optBytes(optSetMetaCtx, metaData("disk", metaContextAllocation))...)
		}
		hs = append(hs, optBytes(optGo, infoData("disk"))...)
		out := runConn(t, s, &panicked, append(hs, in...))
		// Skip the greeting and the option replies up to GO's ACK.
		out = out[18:]
		for {
			if len(out) < 20 {
				t.Fatalf("handshake replies cut: %x", out)
			}
			n := binary.BigEndian.Uint32(out[16:])
			opt, typ := binary.BigEndian.Uint32(out[8:]), binary.BigEndian.Uint32(out[12:])
			out = out[20+n:]
			if opt == optGo && typ == repAck {
				break
			}
		}
		handles := map[uint64]bool{}
		for r := in; len(r) >= requestLen; {
			q, err := parseRequest(r)
			if err != nil {
				break
			}
			handles[q.handle] = true
			r = r[requestLen:]
			if q.typ == cmdWrite {
				r = r[min(len(r), int(q.len)):]
			}
		}
		if err := checkReplies(out, structured, handles); err != nil {
			t.Fatal(err)
		}
	})
}

// checkReplies walks a transmission-phase server stream.
func checkReplies(out []byte, structured bool, handles map[uint64]bool) error {
	for len(out) > 0 {
		if structured {
			if len(out) < 20 || binary.BigEndian.Uint32(out) != magicStructure {
				return errors.New("bad structured reply header")
			}
			if !handles[binary.BigEndian.Uint64(out[8:])] {
				return errors.New("reply to a handle never sent")
			}
			n := binary.BigEndian.Uint32(out[16:])
			if uint64(n) > uint64(len(out)-20) {
				return io.ErrUnexpectedEOF
			}
			out = out[20+n:]
			continue
		}
		// Simple replies cannot be split without the requests' lengths:
		// check the first header only.
		if len(out) < 16 || binary.BigEndian.Uint32(out) != magicSimple {
			return errors.New("bad simple reply header")
		}
		return nil
	}
	return nil
}

// FuzzParsers checks the option data parsers alone: a success always
// re-serialises to the same bytes, and strings obey the protocol's rules.
func FuzzParsers(f *testing.F) {
	f.Add(infoData("disk", 0, 3))
	f.Add(metaData("disk", "base:allocation", "qemu:x"))
	f.Add([]byte{0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if ir, err := parseInfoRequest(b); err == nil {
			if got := infoData(ir.name, ir.infos...); !bytes.Equal(got, b) {
				t.Fatalf("info request %x re-serialises as %x", b, got)
			}
			if checkString([]byte(ir.name)) != nil {
				t.Fatal("invalid name accepted")
			}
		}
		if mr, err := parseMetaRequest(b); err == nil {
			if got := metaData(mr.name, mr.queries...); !bytes.Equal(got, b) {
				t.Fatalf("meta request %x re-serialises as %x", b, got)
			}
		}
		if len(b) >= requestLen {
			if q, err := parseRequest(b); err == nil {
				if q.typ != binary.BigEndian.Uint16(b[6:]) || q.len != binary.BigEndian.Uint32(b[24:]) {
					t.Fatal("request fields misparsed")
				}
			}
		}
		if len(b) >= optHeaderLen {
			if _, err := parseOptHeader(b); err == nil && binary.BigEndian.Uint64(b) != magicOpt {
				t.Fatal("option header with a bad magic accepted")
			}
		}
	})
}
