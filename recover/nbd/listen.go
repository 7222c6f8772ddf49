package nbd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// ErrNotLoopback reports a TCP listen address that is not loopback-only.
// NBD has no authentication here: anyone who can connect reads the
// exports.
var ErrNotLoopback = errors.New("nbd: listen address is not loopback")

// maxSocketPath is the longest Unix socket path every supported system
// accepts (sun_path is 104 bytes on macOS and the BSDs, 108 on Linux).
const maxSocketPath = 103

// UnixListener is a Unix-socket listener in a private folder of its own;
// Close removes the socket and the folder.
type UnixListener struct {
	*net.UnixListener
	// Path is the socket (for nbd+unix:///EXPORT?socket=PATH).
	Path string
	// Dir is the private folder holding it.
	Dir string

	once     sync.Once
	closeErr error
}

// ListenUnix creates a new folder (mode 0700) inside parent (the
// system's temporary folder when empty) and listens on a socket named
// name (mode 0600) inside it. Only the owner (and root) can reach the
// socket. On Windows the modes are not enforced; the folder's inherited
// ACL applies.
func ListenUnix(parent, name string) (*UnixListener, error) {
	if name == "" || name != filepath.Base(name) || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("nbd: socket name %q: must be a plain file name", name)
	}
	if parent == "" {
		parent = os.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "vmcrypt-nbd-")
	if err != nil {
		return nil, fmt.Errorf("nbd: socket folder: %w", err)
	}
	fail := func(err error) (*UnixListener, error) {
		os.RemoveAll(dir)
		return nil, err
	}
	// MkdirTemp creates 0700 already; say so explicitly, whatever the umask.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fail(fmt.Errorf("nbd: socket folder %s: %w", dir, err))
	}
	path := filepath.Join(dir, name)
	if len(path) > maxSocketPath {
		return fail(fmt.Errorf("nbd: socket path %s is %d bytes (max %d): choose a shorter folder", path, len(path), maxSocketPath))
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fail(fmt.Errorf("nbd: listen on %s: %w", path, err))
	}
	ln.SetUnlinkOnClose(true)
	// The folder already keeps others out; the socket mode is a second lock.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fail(fmt.Errorf("nbd: socket %s: %w", path, err))
	}
	return &UnixListener{UnixListener: ln, Path: path, Dir: dir}, nil
}

// Close stops listening and removes the socket and its folder. It is safe
// to call more than once (Serve closes its listener too).
func (l *UnixListener) Close() error {
	l.once.Do(func() {
		err := l.UnixListener.Close()
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
		os.Remove(l.Path)
		if rerr := os.Remove(l.Dir); rerr != nil && !os.IsNotExist(rerr) && err == nil {
			err = fmt.Errorf("nbd: remove socket folder: %w", rerr)
		}
		l.closeErr = err
	})
	return l.closeErr
}

// CheckLoopback returns nil when the TCP listen address addr ("host:port")
// can only be reached from this machine: an IP in 127.0.0.0/8 or ::1, or
// the name "localhost". An empty host (all interfaces), any other name or
// address gives ErrNotLoopback.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("nbd: listen address %q: %w", addr, err)
	}
	if strings.EqualFold(host, "localhost") {
		return nil
	}
	// Strip an IPv6 zone ("::1%lo").
	if i := strings.IndexByte(host, '%'); i >= 0 {
		host = host[:i]
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w: %q", ErrNotLoopback, addr)
	}
	return nil
}
