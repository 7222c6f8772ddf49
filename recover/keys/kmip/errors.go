package kmip

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Sentinels a caller branches on, beyond keysafe.ErrKeyNotFound (which
// every *KeyError also matches).
var (
	// ErrKeyNotActive: the server holds the key but its State is not
	// Active (Pre-Active, Deactivated, Compromised, Destroyed).
	ErrKeyNotActive = errors.New("KMIP key is not active")
	// ErrKeyNotAES256: the server holds the object but it is not a plain
	// AES-256 symmetric key (another object type, algorithm or length, a
	// wrapped or compressed key, an unknown key format).
	ErrKeyNotAES256 = errors.New("KMIP object is not an AES-256 key")
	// ErrPermissionDenied: the server refused this client the key
	// (Permission Denied).
	ErrPermissionDenied = errors.New("KMIP permission denied")
)

// KeyError is the server's answer that it will not give a key: it has no
// such key (Item Not Found), it refused this client (Permission Denied),
// it will not return it (Object Archived, Key Value Not Present,
// Sensitive, Not Extractable), or it holds an object that cannot be used
// as the KEK (not Active, not AES-256). errors.Is(err, keysafe.ErrKeyNotFound) is true for all of
// them; ErrPermissionDenied, ErrKeyNotActive and ErrKeyNotAES256 tell them
// apart. errors.As finds a *keysafe.KeyNotFoundError whose Hint names the
// server (and the refused certificate, or the key's state).
type KeyError struct {
	Server   string // host:port of the member that answered
	Provider string // key provider the locator names (set by callers that know it)
	KeyID    string // the Unique Identifier asked for

	// Reason is the server's result reason (Item Not Found, Permission
	// Denied), or 0 when the server returned an unusable object.
	Reason  ResultReason
	Message string // the server's result message (untrusted text)
	Client  string // subject CN of the client certificate (Permission Denied)

	// What the server said about an unusable object (0 when not said).
	State      State
	ObjectType ObjectType
	Algorithm  Algorithm
	Length     int32         // bits
	Format     KeyFormatType // key format returned
	Detail     string        // what makes it unusable, when not the state
}

// Hint says, in one clause, what the server answered.
func (e *KeyError) Hint() string {
	switch {
	case e.Reason == ReasonItemNotFound:
		return fmt.Sprintf("KMS server %s has no key with this Unique Identifier", e.Server)
	case e.Reason == ReasonPermissionDenied:
		return fmt.Sprintf("KMS server %s refused the key to client certificate %s (Permission Denied): the KMS administrator must allow that certificate to Get it",
			e.Server, cnText(e.Client))
	case e.Reason != 0:
		return fmt.Sprintf("KMS server %s holds the key but will not return it (%v)", e.Server, e.Reason)
	case e.Detail != "":
		return fmt.Sprintf("KMS server %s holds the object but %s", e.Server, e.Detail)
	}
	return fmt.Sprintf("KMS server %s holds the key but its state is %v, not Active", e.Server, e.State)
}

func cnText(cn string) string {
	if cn == "" {
		return "(no subject CN)"
	}
	return "CN=" + strconv.Quote(cn)
}

func (e *KeyError) Error() string {
	s := "key not supplied: "
	if e.Provider != "" {
		s += fmt.Sprintf("provider %q, ", e.Provider)
	}
	s += fmt.Sprintf("key id %q (%s)", e.KeyID, e.Hint())
	if e.Message != "" && e.Reason != ReasonItemNotFound {
		s += ": server says " + quoteMessage(e.Message)
	}
	return s
}

// Unwrap returns a *keysafe.KeyNotFoundError with the provider, key id and
// Hint.
func (e *KeyError) Unwrap() error {
	return &keysafe.KeyNotFoundError{Provider: e.Provider, KeyID: e.KeyID, Hint: e.Hint()}
}

// Is matches ErrPermissionDenied, ErrKeyNotActive and ErrKeyNotAES256 as
// the answer says.
func (e *KeyError) Is(target error) bool {
	switch target {
	case ErrPermissionDenied:
		return e.Reason == ReasonPermissionDenied
	case ErrKeyNotActive:
		return e.Reason == 0 && e.Detail == "" && e.State != StateActive
	case ErrKeyNotAES256:
		return e.Reason == 0 && e.Detail != ""
	}
	return false
}

// ResultError is a failed operation the server answered with a reason
// other than those of KeyError (Authentication Not Successful, Invalid
// Message, Operation Not Supported, General Failure...). It is not a
// missing key: callers report it like an unreachable server.
type ResultError struct {
	Server    string
	Operation Operation
	Status    ResultStatus
	Reason    ResultReason
	Message   string // the server's result message (untrusted text)
	Client    string // subject CN of the client certificate
}

func (e *ResultError) Error() string {
	s := fmt.Sprintf("KMS server %s: %v failed (%v", e.Server, e.Operation, e.Status)
	if e.Reason != 0 {
		s += ": " + e.Reason.String()
	}
	s += ")"
	if e.Reason == ReasonAuthenticationNotSuccessful {
		s += fmt.Sprintf("; it did not accept client certificate %s: the certificate must be signed by a CA the server trusts and allow client authentication (extended key usage clientAuth)", cnText(e.Client))
	}
	if e.Message != "" {
		s += ": server says " + quoteMessage(e.Message)
	}
	return s
}

// maxMessageText caps how much of a server's text goes into an error.
const maxMessageText = 200

// quoteMessage quotes untrusted server text for an error message: at most
// maxMessageText bytes, control characters escaped.
func quoteMessage(m string) string {
	if len(m) > maxMessageText {
		m = strings.ToValidUTF8(m[:maxMessageText], "") + "..."
	}
	return strconv.Quote(m)
}

// ConnError is a failure to reach a server or to get a well-formed answer
// from it: DNS, connection refused, TLS (the server's certificate or ours
// refused), a timeout, a closed connection, a malformed message. The
// client fails over to the next server on a ConnError. Err is the cause;
// Error() says it in one sentence, without naming any CLI flag.
type ConnError struct {
	Server string
	Err    error
	msg    string // the one-sentence cause
}

func (e *ConnError) Error() string { return e.msg }

// Unwrap returns the cause.
func (e *ConnError) Unwrap() error { return e.Err }

// ClusterError lists why every server failed (one *ConnError each, in the
// order tried).
type ClusterError struct {
	Errs []*ConnError
}

func (e *ClusterError) Error() string {
	parts := make([]string, len(e.Errs))
	for i, c := range e.Errs {
		parts[i] = c.Error()
	}
	return fmt.Sprintf("no KMS server answered (%d tried): %s", len(e.Errs), strings.Join(parts, "; "))
}

// Unwrap returns the servers' errors.
func (e *ClusterError) Unwrap() []error {
	errs := make([]error, len(e.Errs))
	for i, c := range e.Errs {
		errs[i] = c
	}
	return errs
}
