package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Wire constants, from the NBD protocol document (NetworkBlockDevice/nbd
// doc/proto.md). Every number on the wire is big-endian.
const (
	magicNBD       = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt       = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply  = 0x0003e889045565a9
	magicRequest   = 0x25609513
	magicSimple    = 0x67446698
	magicStructure = 0x668e33ef

	// Handshake flags (server) and client flags.
	flagFixedNewstyle  = 1 << 0
	flagNoZeroes       = 1 << 1
	flagCFixedNewstyle = 1 << 0
	flagCNoZeroes      = 1 << 1

	// Transmission flags.
	tflagHasFlags     = 1 << 0
	tflagReadOnly     = 1 << 1
	tflagSendFlush    = 1 << 2
	tflagSendDF       = 1 << 7
	tflagCanMultiConn = 1 << 8

	// Options.
	optExportName     = 1
	optAbort          = 2
	optList           = 3
	optStartTLS       = 5
	optInfo           = 6
	optGo             = 7
	optStructured     = 8
	optListMetaCtx    = 9
	optSetMetaCtx     = 10
	optExtendedHeader = 11

	// Option replies.
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4
	repErrUnsup    = 1<<31 + 1
	repErrPolicy   = 1<<31 + 2
	repErrInvalid  = 1<<31 + 3
	repErrUnknown  = 1<<31 + 6
	repErrShutdown = 1<<31 + 7
	repErrTooBig   = 1<<31 + 9

	// Information types (NBD_OPT_INFO / NBD_OPT_GO).
	infoExport      = 0
	infoName        = 1
	infoDescription = 2
	infoBlockSize   = 3

	// Commands.
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdCache       = 5
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	// Command flags.
	cmdFlagFUA    = 1 << 0
	cmdFlagNoHole = 1 << 1
	cmdFlagDF     = 1 << 2
	cmdFlagReqOne = 1 << 3
	cmdFlagFast   = 1 << 4

	// Structured reply flags and types.
	replyFlagDone         = 1 << 0
	replyTypeNone         = 0
	replyTypeOffsetData   = 1
	replyTypeOffsetHole   = 2
	replyTypeBlockStatus  = 5
	replyTypeError        = 1<<15 + 1
	replyTypeErrorOffset  = 1<<15 + 2
	stateHole             = 1 << 0
	stateZero             = 1 << 1
	metaContextAllocation = "base:allocation"
	metaContextID         = 1

	// Error values.
	errnoPerm     = 1
	errnoIO       = 5
	errnoInval    = 22
	errnoOverflow = 75
	errnoShutdown = 108
)

// Sizes and limits.
const (
	// MaxStringLen is the protocol's cap on a string (export names,
	// descriptions, queries): 4096 bytes.
	MaxStringLen = 4096
	// MaxOptionLen caps the data of one option the server parses. An
	// option the server understands with more data is answered
	// NBD_REP_ERR_TOO_BIG after its data is skipped.
	MaxOptionLen = 64 << 10
	// MaxOptionSkip caps the data of one option the server will read
	// past; a longer option ends the connection (a client this hostile
	// gets a hard disconnect, as the protocol allows).
	MaxOptionSkip = 1 << 20
	// MaxOptions caps the options one connection may send before it
	// chooses an export.
	MaxOptions = 4096
	// DefaultMaxRequest is the default longest READ or BLOCK_STATUS
	// payload a client may ask for (2^25, the protocol's interoperable
	// maximum block size), and the longest WRITE payload the server
	// skips before answering EPERM.
	DefaultMaxRequest = 32 << 20
	// MaxBlockStatusExtents caps the descriptors in one BLOCK_STATUS
	// reply; the protocol lets a server describe less than asked.
	MaxBlockStatusExtents = 16384

	optHeaderLen     = 16 // IHAVEOPT, option, length
	requestLen       = 28
	simpleReplyLen   = 16
	structReplyLen   = 20
	exportNameTail   = 10 + 124
	minBlockSize     = 1
	preferredBlock   = 4096
	blockStatusEntry = 8
)

// Parse errors of client messages; they never leave the package, and the
// server answers each with the protocol's error for it.
var (
	errShort     = errors.New("nbd: message too short")
	errTrailing  = errors.New("nbd: trailing bytes in message")
	errBadString = errors.New("nbd: invalid string")
	errBadMagic  = errors.New("nbd: bad magic")
)

// optHeader is a client option header.
type optHeader struct {
	opt uint32
	len uint32
}

// parseOptHeader parses the 16-byte option header.
func parseOptHeader(b []byte) (optHeader, error) {
	if len(b) < optHeaderLen {
		return optHeader{}, errShort
	}
	if binary.BigEndian.Uint64(b) != magicOpt {
		return optHeader{}, fmt.Errorf("%w: option magic %#x", errBadMagic, binary.BigEndian.Uint64(b))
	}
	return optHeader{opt: binary.BigEndian.Uint32(b[8:]), len: binary.BigEndian.Uint32(b[12:])}, nil
}

// checkString validates a protocol string: at most MaxStringLen bytes of
// UTF-8 with no NUL.
func checkString(s []byte) error {
	if len(s) > MaxStringLen {
		return fmt.Errorf("%w: %d bytes (max %d)", errBadString, len(s), MaxStringLen)
	}
	if !utf8.Valid(s) {
		return fmt.Errorf("%w: not UTF-8", errBadString)
	}
	for _, c := range s {
		if c == 0 {
			return fmt.Errorf("%w: contains NUL", errBadString)
		}
	}
	return nil
}

// infoRequest is the data of NBD_OPT_INFO and NBD_OPT_GO.
type infoRequest struct {
	name  string
	infos []uint16 // information types asked for (at most (MaxOptionLen-6)/2)
}

// parseInfoRequest parses the data of NBD_OPT_INFO / NBD_OPT_GO:
// name length (32), name, count (16), count x type (16).
func parseInfoRequest(b []byte) (infoRequest, error) {
	if len(b) < 6 {
		return infoRequest{}, errShort
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-6) {
		return infoRequest{}, fmt.Errorf("%w: name length %d in %d bytes", errShort, n, len(b))
	}
	name := b[4 : 4+n]
	if err := checkString(name); err != nil {
		return infoRequest{}, err
	}
	rest := b[4+n:]
	cnt := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < 2*cnt {
		return infoRequest{}, fmt.Errorf("%w: %d information requests in %d bytes", errShort, cnt, len(rest))
	}
	if len(rest) > 2*cnt {
		return infoRequest{}, errTrailing
	}
	r := infoRequest{name: string(name), infos: make([]uint16, cnt)}
	for i := range cnt {
		r.infos[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return r, nil
}

// metaRequest is the data of NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT.
type metaRequest struct {
	name    string
	queries []string
}

// parseMetaRequest parses: name length (32), name, query count (32), then
// per query a length (32) and the query.
func parseMetaRequest(b []byte) (metaRequest, error) {
	if len(b) < 8 {
		return metaRequest{}, errShort
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-8) {
		return metaRequest{}, fmt.Errorf("%w: name length %d in %d bytes", errShort, n, len(b))
	}
	name := b[4 : 4+n]
	if err := checkString(name); err != nil {
		return metaRequest{}, err
	}
	rest := b[4+n:]
	cnt := binary.BigEndian.Uint32(rest)
	rest = rest[4:]
	// Each query takes at least 4 bytes: the count is bounded by the data.
	if uint64(cnt)*4 > uint64(len(rest)) {
		return metaRequest{}, fmt.Errorf("%w: %d queries in %d bytes", errShort, cnt, len(rest))
	}
	r := metaRequest{name: string(name), queries: make([]string, 0, cnt)}
	for range cnt {
		if len(rest) < 4 {
			return metaRequest{}, errShort
		}
		ql := binary.BigEndian.Uint32(rest)
		rest = rest[4:]
		if uint64(ql) > uint64(len(rest)) {
			return metaRequest{}, fmt.Errorf("%w: query length %d in %d bytes", errShort, ql, len(rest))
		}
		q := rest[:ql]
		if err := checkString(q); err != nil {
			return metaRequest{}, err
		}
		r.queries = append(r.queries, string(q))
		rest = rest[ql:]
	}
	if len(rest) != 0 {
		return metaRequest{}, errTrailing
	}
	return r, nil
}

// request is a transmission-phase request header.
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	off    uint64
	len    uint32
}

// parseRequest parses the 28-byte request header.
func parseRequest(b []byte) (request, error) {
	if len(b) < requestLen {
		return request{}, errShort
	}
	if m := binary.BigEndian.Uint32(b); m != magicRequest {
		return request{}, fmt.Errorf("%w: request magic %#x", errBadMagic, m)
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:]),
		typ:    binary.BigEndian.Uint16(b[6:]),
		handle: binary.BigEndian.Uint64(b[8:]),
		off:    binary.BigEndian.Uint64(b[16:]),
		len:    binary.BigEndian.Uint32(b[24:]),
	}, nil
}

// appendOptReply appends an option reply header.
func appendOptReply(b []byte, opt, typ uint32, n int) []byte {
	b = binary.BigEndian.AppendUint64(b, magicOptReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}

// putSimpleReply writes a simple reply header into b[:16].
func putSimpleReply(b []byte, errno uint32, handle uint64) {
	binary.BigEndian.PutUint32(b, magicSimple)
	binary.BigEndian.PutUint32(b[4:], errno)
	binary.BigEndian.PutUint64(b[8:], handle)
}

// appendChunk appends a structured reply chunk header.
func appendChunk(b []byte, flags, typ uint16, handle uint64, n int) []byte {
	b = binary.BigEndian.AppendUint32(b, magicStructure)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	return binary.BigEndian.AppendUint32(b, uint32(n))
}
