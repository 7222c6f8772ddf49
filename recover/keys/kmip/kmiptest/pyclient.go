package kmiptest

import (
	"bufio"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

//go:embed pyclient.py
var pyClient string

// Op is one operation for PyKMIP's client (see pyclient.py).
type Op struct {
	Op       string   `json:"op"`
	UID      string   `json:"uid,omitempty"`
	Policy   string   `json:"policy,omitempty"`
	Activate bool     `json:"activate,omitempty"`
	Reason   string   `json:"reason,omitempty"`
	UIDs     []string `json:"uids,omitempty"`
	Rounds   int      `json:"rounds,omitempty"`
}

// Result is what one Op returned; Error is set when it failed.
type Result struct {
	UID     string  `json:"uid"`
	Key     string  `json:"key"` // hex
	State   string  `json:"state"`
	Seconds float64 `json:"seconds"`
	Error   string  `json:"error"`
}

// Py runs the operations with PyKMIP's own client, over one connection,
// as the certificate as (nil: PKI.Client). A failed operation gives a
// Result with Error set; a failure to run the client fails the test.
func (s *Server) Py(t testing.TB, as *Cert, ops ...Op) []Result {
	t.Helper()
	res, err := s.py(as, ops)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (s *Server) py(as *Cert, ops []Op) ([]Result, error) {
	if as == nil {
		as = s.PKI.Client
	}
	job, err := json.Marshal(map[string]any{"cert": as.CertFile, "key": as.KeyFile, "ops": ops})
	if err != nil {
		return nil, err
	}
	s.pyMu.Lock()
	defer s.pyMu.Unlock()
	if s.pyCmd == nil {
		if err := s.startPy(); err != nil {
			return nil, err
		}
	}
	type answer struct {
		line []byte
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		if _, err := s.pyIn.Write(append(job, '\n')); err != nil {
			got <- answer{err: err}
			return
		}
		line, err := s.pyOut.ReadBytes('\n')
		got <- answer{line, err}
	}()
	var a answer
	select {
	case a = <-got:
	case <-time.After(2 * time.Minute):
		s.stopPy()
		return nil, fmt.Errorf("kmiptest: PyKMIP client hung for 2 minutes: %s", s.pyErr.String())
	}
	if a.err != nil {
		s.stopPy()
		return nil, fmt.Errorf("kmiptest: PyKMIP client failed (%v): %s", a.err, strings.TrimSpace(s.pyErr.String()))
	}
	var res []Result
	if err := json.Unmarshal(a.line, &res); err != nil || len(res) != len(ops) {
		return nil, fmt.Errorf("kmiptest: PyKMIP client printed %q (%v)", a.line, err)
	}
	return res, nil
}

// startPy starts the PyKMIP client driver (one interpreter for all jobs:
// importing PyKMIP costs about a second).
func (s *Server) startPy() error {
	cmd := exec.Command(Python, "-c", pyClient, "127.0.0.1", strconv.Itoa(s.Port), s.PKI.CA.CertFile)
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	s.pyErr.Reset()
	cmd.Stderr = &s.pyErr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("kmiptest: PyKMIP client: %w", err)
	}
	s.pyCmd, s.pyIn, s.pyOut = cmd, in, bufio.NewReader(out)
	return nil
}

// stopPy ends the driver (closing its input ends its loop).
func (s *Server) stopPy() {
	if s.pyCmd == nil {
		return
	}
	s.pyIn.Close()
	done := make(chan struct{})
	go func() { s.pyCmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.pyCmd.Process.Kill()
		<-done
	}
	s.pyCmd = nil
}

// CreateOptions say how to create keys.
type CreateOptions struct {
	Policy    string // operation policy name; "" for PyKMIP's default (owner only)
	NoActive  bool   // leave the keys Pre-Active (vCenter activates them)
	As        *Cert  // owner; nil: PKI.Client
	Revoke    string // after activation: "compromise" or "cessation"
	AndDelete bool   // then Destroy (PyKMIP deletes the object)
}

// CreateKeys creates n AES-256 keys the way vCenter does (Create, then
// Activate) and returns their Unique Identifiers.
func (s *Server) CreateKeys(t testing.TB, n int, o CreateOptions) []string {
	t.Helper()
	ops := make([]Op, n)
	for i := range ops {
		ops[i] = Op{Op: "create", Policy: o.Policy, Activate: !o.NoActive}
	}
	res := s.Py(t, o.As, ops...)
	uids := make([]string, n)
	for i, r := range res {
		if r.Error != "" || r.UID == "" {
			t.Fatalf("kmiptest: PyKMIP Create: %q", r.Error)
		}
		uids[i] = r.UID
	}
	if o.Revoke != "" || o.AndDelete {
		var more []Op
		for _, uid := range uids {
			if o.Revoke != "" {
				more = append(more, Op{Op: "revoke", UID: uid, Reason: o.Revoke})
			}
			if o.AndDelete {
				more = append(more, Op{Op: "destroy", UID: uid})
			}
		}
		for _, r := range s.Py(t, o.As, more...) {
			if r.Error != "" {
				t.Fatalf("kmiptest: PyKMIP Revoke/Destroy: %q", r.Error)
			}
		}
	}
	return uids
}

// Keys returns the key bytes of the uids as PyKMIP's client Gets them (as
// the certificate as; nil: PKI.Client).
func (s *Server) Keys(t testing.TB, as *Cert, uids ...string) [][]byte {
	t.Helper()
	ops := make([]Op, len(uids))
	for i, u := range uids {
		ops[i] = Op{Op: "get", UID: u}
	}
	keys := make([][]byte, len(uids))
	for i, r := range s.Py(t, as, ops...) {
		if r.Error != "" {
			t.Fatalf("kmiptest: PyKMIP Get %s: %q", uids[i], r.Error)
		}
		k, err := hex.DecodeString(r.Key)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	return keys
}

// RevokeDestroy revokes (as compromised, which Destroy needs of an active
// key) and destroys the key. PyKMIP then deletes the object: later Gets
// answer Item Not Found.
func (s *Server) RevokeDestroy(t testing.TB, uid string) {
	t.Helper()
	for _, r := range s.Py(t, nil, Op{Op: "revoke", UID: uid, Reason: "compromise"}, Op{Op: "destroy", UID: uid}) {
		if r.Error != "" {
			t.Fatalf("kmiptest: PyKMIP Revoke/Destroy %s: %q", uid, r.Error)
		}
	}
}

// Revoke revokes the key: reason "compromise" (state Compromised) or
// "cessation" (state Deactivated).
func (s *Server) Revoke(t testing.TB, uid, reason string) {
	t.Helper()
	if r := s.Py(t, nil, Op{Op: "revoke", UID: uid, Reason: reason}); r[0].Error != "" {
		t.Fatalf("kmiptest: PyKMIP Revoke %s: %q", uid, r[0].Error)
	}
}

// PyGetTime returns the time PyKMIP's own client takes per Get, measured
// inside Python over one connection (rounds passes over uids; the
// interpreter's start is not counted).
func (s *Server) PyGetTime(t testing.TB, uids []string, rounds int) time.Duration {
	t.Helper()
	r := s.Py(t, nil, Op{Op: "time_gets", UIDs: uids, Rounds: rounds})
	if r[0].Error != "" {
		t.Fatalf("kmiptest: PyKMIP timed Gets: %q", r[0].Error)
	}
	return time.Duration(r[0].Seconds * float64(time.Second) / float64(rounds*len(uids)))
}
