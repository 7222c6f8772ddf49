// Package nbd is a small read-only Network Block Device server, written
// from the protocol document (NetworkBlockDevice/nbd doc/proto.md;
// docs/formats.md §15). It serves Exports (a size, a concurrent io.ReaderAt and
// an optional allocation map) to qemu-img, libnbd's nbdcopy / nbdinfo /
// nbdfuse and other clients.
//
// # Protocol
//
// Fixed newstyle handshake only (no oldstyle, no TLS: NBD_OPT_STARTTLS is
// answered NBD_REP_ERR_UNSUP). Options: NBD_OPT_GO, NBD_OPT_INFO,
// NBD_OPT_LIST, NBD_OPT_EXPORT_NAME, NBD_OPT_ABORT,
// NBD_OPT_STRUCTURED_REPLY, NBD_OPT_LIST_META_CONTEXT and
// NBD_OPT_SET_META_CONTEXT for the one context base:allocation; others get
// NBD_REP_ERR_UNSUP. NBD_OPT_INFO and NBD_OPT_GO answer NBD_INFO_EXPORT and
// NBD_INFO_BLOCK_SIZE (minimum 1, preferred 4096, maximum MaxRequest), and
// NBD_INFO_NAME and NBD_INFO_DESCRIPTION when asked.
//
// Transmission flags: HAS_FLAGS, READ_ONLY, SEND_FLUSH, CAN_MULTI_CONN, and
// SEND_DF with structured replies. Commands: READ (simple or structured
// replies; with structured replies the zero runs of the allocation map go
// out as NBD_REPLY_TYPE_OFFSET_HOLE chunks without being read), BLOCK_STATUS
// (base:allocation: NBD_STATE_HOLE, NBD_STATE_ZERO), FLUSH (nothing to
// flush), DISC. WRITE, TRIM and WRITE_ZEROES get NBD_EPERM and are never
// acted on (a WRITE's payload is skipped, up to MaxRequest bytes; a longer
// one ends the connection); CACHE and unknown commands NBD_EINVAL; a range
// past the end of the export NBD_EINVAL.
//
// # Robustness
//
// Every connection is bounded: a handshake deadline, at most MaxOptions
// options of at most MaxOptionLen bytes parsed (MaxOptionSkip skipped), at
// most MaxInFlight requests in progress (the server stops reading until one
// ends), read buffers drawn from one budget shared by all connections
// (MaxBufferBytes), and each reply must leave within WriteTimeout or the
// connection is closed, so a client that never reads cannot pin memory.
// Requests run concurrently; replies may come out of order. A read error
// answers NBD_EIO for that request alone (structured replies name the
// offset) and is logged with the export and offset; a panic in a request
// answers NBD_EIO and is logged; the server goes on. When Serve's context
// ends, the listener and every connection close and Serve returns after
// all its goroutines have ended.
//
// # Listening
//
// ListenUnix makes a private folder (0700) with a socket (0600) and removes
// both on Close. CheckLoopback tells whether a TCP address is loopback-only:
// NBD has no authentication, so anything else should be an explicit choice.
//
// The package never prints; events go to Server.Log.
package nbd
