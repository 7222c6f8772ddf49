// Package kmip is a small KMIP 1.x client: enough to fetch the AES-256
// key-encryption keys a Standard Key Provider (a KMS cluster) holds for
// vSphere VMs, by their Unique Identifier (the key id of an fqid locator,
// docs/formats.md §14), once vCenter is gone.
//
// # Codec
//
// Decode and Encode read and write TTLV (tag, type, length, value padded
// to 8 bytes; KMIP 1.x §9.1). Decode is strict: every length is checked
// against the bytes present, padding must be zero, fixed-size types have
// their size, Booleans are 0 or 1, text is UTF-8, and a message is refused
// beyond MaxMessageSize bytes, MaxDepth nested structures or MaxItems
// items. It allocates in proportion to the bytes it is given, never to a
// length a peer claims.
//
// # Client
//
// NewClient takes the cluster's members, a client certificate and the CA
// that signs the servers' certificates (no system roots, no way to skip
// verification; TLS 1.2 or later; the host name is checked). One TLS
// connection is kept and reused; requests are serialised. Each request to
// one member is bounded by Config.Timeout and by the caller's context.
// On a connection failure (*ConnError: refused, timed out, TLS refused,
// closed, malformed answer) the next member is tried; an answer (a
// missing key, a refusal) is never failed over.
//
// Get asks GetAttributes (State, algorithm, length, object type) and Get
// (key format Raw) in one batch, one round trip per key, and returns the
// key only when it is an Active AES-256 symmetric key.
//
// CreateAES256 and Activate make a new key the way vCenter does (for
// demo VMs locked by a real KMS: `vmcrypt fixture --kmip`); recovery never
// sends them.
//
// # Errors
//
//   - *KeyError: the server will not give the key. errors.Is(err,
//     keysafe.ErrKeyNotFound) holds for every KeyError, and errors.As finds
//     a *keysafe.KeyNotFoundError whose Hint names the server. Item Not
//     Found; Permission Denied (ErrPermissionDenied, naming the client
//     certificate's CN); a key not Active (ErrKeyNotActive, naming the
//     state); an object that is not an AES-256 key (ErrKeyNotAES256).
//   - *ResultError: another failure the server answered (Authentication
//     Not Successful for a client certificate it does not accept, Invalid
//     Message...). Not a missing key.
//   - *ConnError, or *ClusterError when several members were tried: the
//     cause in one sentence (the server's certificate not signed by the
//     trusted CA, our certificate refused in the handshake, nothing
//     listening, no answer in time...). A ConnError wrapping ctx.Err()
//     when the context ended.
//
// None of them names a command-line flag; none holds key material.
//
// # Key material
//
// Keys are copied out of the response, whose buffer is then zeroed; the
// caller owns Key.Material and zeroes it (Key.Zero). Nothing is logged.
//
// # Configuration file
//
// LoadConfigFile reads a small JSON file naming a key provider, its
// servers, the client certificate, key and CA files and a timeout (see
// FileConfig).
package kmip
