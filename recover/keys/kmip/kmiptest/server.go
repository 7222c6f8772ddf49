package kmiptest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Peer programs: Debian's own python3 (a pyenv python on PATH lacks the
// Debian package) and the server's entry script.
const (
	Python       = "/usr/bin/python3"
	ServerScript = "/usr/bin/pykmip-server"
)

// SharedPolicy is the operation policy under which a key may be read (Get,
// GetAttributes) by any certificate the server trusts; keys created
// without it follow PyKMIP's default policy (owner only).
const SharedPolicy = "vmcrypt-shared"

// StartTimeout bounds a server's start (port open and policy loaded).
const StartTimeout = 60 * time.Second

// Server is a running pykmip-server.
type Server struct {
	Addr    string // "127.0.0.1:port"
	Port    int
	PKI     *PKI
	Dir     string // configuration, database, logs
	LogFile string

	cmd     *exec.Cmd
	waited  chan struct{}
	waitErr error
	stop    sync.Once

	pyMu  sync.Mutex // the PyKMIP client driver
	pyCmd *exec.Cmd
	pyIn  io.WriteCloser
	pyOut *bufio.Reader
	pyErr lockedBuffer
}

// lockedBuffer is a buffer a process writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *lockedBuffer) Reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}

// Check fails the test when the peer is not installed.
func Check(t testing.TB) {
	t.Helper()
	if err := checkPeer(); err != nil {
		t.Fatal(err)
	}
}

func checkPeer() error {
	for _, p := range []string{Python, ServerScript} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("kmiptest: %s is missing: install the Debian package python3-pykmip (apt-get install python3-pykmip)", p)
		}
	}
	out, err := exec.Command(Python, "-c", "import kmip.pie.client, kmip.services.server").CombinedOutput()
	if err != nil {
		return fmt.Errorf("kmiptest: %s cannot import PyKMIP (install python3-pykmip): %v: %s", Python, err, bytes.TrimSpace(out))
	}
	return nil
}

// Start starts a server of its own for the test, with a fresh PKI, and
// stops it (SIGINT) when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	Check(t)
	s, err := start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("kmiptest: stopping the server: %v", err)
		}
	})
	return s
}

var shared struct {
	once sync.Once
	s    *Server
	dir  string
	err  error
}

// Shared returns the server shared by every test of the binary (started on
// first use). Tests must not destroy its keys' neighbours: create the keys
// you change. Stop it with Main (from TestMain) or StopShared.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() {
		if shared.err = checkPeer(); shared.err != nil {
			return
		}
		shared.dir, shared.err = os.MkdirTemp("", "kmiptest-")
		if shared.err != nil {
			return
		}
		shared.s, shared.err = start(shared.dir)
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.s
}

// StopShared stops the shared server, if started, and removes its files.
func StopShared() error {
	var err error
	if shared.s != nil {
		err = shared.s.Stop()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	return err
}

// Main runs the tests and then stops the shared server:
//
//	func TestMain(m *testing.M) { kmiptest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	if err := StopShared(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on (at
// the time of the call).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func start(dir string) (*Server, error) {
	pki, err := newPKI(filepath.Join(dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("kmiptest: certificates: %w", err)
	}
	var last error
	for attempt := 0; attempt < 3; attempt++ { // a port taken between FreePort and bind: try another
		s, err := startOn(dir, pki, attempt)
		if err == nil {
			return s, nil
		}
		last = err
	}
	return nil, last
}

// policyJSON lets any certificate read keys created under SharedPolicy;
// the owner keeps the other operations.
const policyJSON = `{
  "` + SharedPolicy + `": {
    "preset": {
      "SYMMETRIC_KEY": {
        "GET": "ALLOW_ALL",
        "GET_ATTRIBUTES": "ALLOW_ALL",
        "GET_ATTRIBUTE_LIST": "ALLOW_ALL",
        "LOCATE": "ALLOW_ALL",
        "CHECK": "ALLOW_ALL",
        "ACTIVATE": "ALLOW_OWNER",
        "REVOKE": "ALLOW_OWNER",
        "DESTROY": "ALLOW_OWNER",
        "ADD_ATTRIBUTE": "ALLOW_OWNER",
        "MODIFY_ATTRIBUTE": "ALLOW_OWNER",
        "DELETE_ATTRIBUTE": "ALLOW_OWNER"
      }
    }
  }
}
`

func startOn(dir string, pki *PKI, attempt int) (*Server, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	sdir := filepath.Join(dir, "server"+strconv.Itoa(attempt))
	pdir := filepath.Join(sdir, "policies")
	if err := os.MkdirAll(pdir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(pdir, "vmcrypt.json"), []byte(policyJSON), 0o600); err != nil {
		return nil, err
	}
	conf := filepath.Join(sdir, "server.conf")
	confText := fmt.Sprintf(`[server]
hostname=127.0.0.1
port=%d
certificate_path=%s
key_path=%s
ca_path=%s
auth_suite=TLS1.2
policy_path=%s
enable_tls_client_auth=True
logging_level=INFO
database_path=%s
`, port, pki.Server.CertFile, pki.Server.KeyFile, pki.CA.CertFile, pdir, filepath.Join(sdir, "pykmip.db"))
	if err := os.WriteFile(conf, []byte(confText), 0o600); err != nil {
		return nil, err
	}
	s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, PKI: pki, Dir: sdir,
		LogFile: filepath.Join(sdir, "server.log"), waited: make(chan struct{})}
	out, err := os.Create(filepath.Join(sdir, "stdout.txt"))
	if err != nil {
		return nil, err
	}
	defer out.Close()
	s.cmd = exec.Command(Python, ServerScript, "-f", conf, "-l", s.LogFile)
	s.cmd.Dir = sdir
	s.cmd.Stdout, s.cmd.Stderr = out, out
	s.cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	setProcAttrs(s.cmd)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("kmiptest: starting %s: %w", ServerScript, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.waited)
	}()
	if err := s.waitReady(); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// waitReady waits until the port accepts connections and the log says the
// shared policy is loaded (PyKMIP's policy monitor loads it about a second
// after the port opens; before that, keys created under it are refused).
func (s *Server) waitReady() error {
	deadline := time.Now().Add(StartTimeout)
	portOpen, policy := false, false
	for time.Now().Before(deadline) {
		select {
		case <-s.waited:
			return fmt.Errorf("kmiptest: pykmip-server exited during start (%v): %s", s.waitErr, s.logTail())
		default:
		}
		if !policy {
			log, _ := os.ReadFile(s.LogFile)
			policy = bytes.Contains(log, []byte("Loading policy: "+SharedPolicy))
			if bytes.Contains(log, []byte("Server failed to bind")) {
				return fmt.Errorf("kmiptest: pykmip-server could not bind %s", s.Addr)
			}
		}
		if policy && !portOpen {
			if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
				c.Close()
				portOpen = true
			}
		}
		if portOpen && policy {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("kmiptest: pykmip-server not ready after %v (port open: %v, policy loaded: %v): %s",
		StartTimeout, portOpen, policy, s.logTail())
}

// logTail returns the end of the server's output and log, for failures.
func (s *Server) logTail() string {
	var b strings.Builder
	for _, f := range []string{filepath.Join(s.Dir, "stdout.txt"), s.LogFile} {
		data, _ := os.ReadFile(f)
		if len(data) > 2000 {
			data = data[len(data)-2000:]
		}
		b.Write(data)
	}
	return b.String()
}

// Stop stops the server with SIGINT (PyKMIP's way, which also ends its
// policy monitor and manager processes), waiting for it; after 15 seconds
// it is killed with its process group.
func (s *Server) Stop() error {
	var err error
	s.pyMu.Lock()
	s.stopPy()
	s.pyMu.Unlock()
	s.stop.Do(func() {
		select {
		case <-s.waited:
			return
		default:
		}
		interrupt(s.cmd)
		select {
		case <-s.waited:
		case <-time.After(15 * time.Second):
			killGroup(s.cmd) // the leader is alive: the group is still ours
			<-s.waited
			err = errors.New("kmiptest: pykmip-server ignored SIGINT for 15s and was killed")
		}
	})
	return err
}

// Running reports whether the server process is still up.
func (s *Server) Running() bool {
	select {
	case <-s.waited:
		return false
	default:
		return true
	}
}
