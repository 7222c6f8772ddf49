//go:build unix

package kmiptest

import (
	"os/exec"
	"syscall"
)

// interrupt sends SIGINT to the server.
func interrupt(cmd *exec.Cmd) { cmd.Process.Signal(syscall.SIGINT) }

// killGroup kills the server's process group (PyKMIP forks a policy
// monitor and a multiprocessing manager).
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
