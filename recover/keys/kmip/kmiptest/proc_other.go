//go:build !unix

package kmiptest

import "os/exec"

// setProcAttrs: nothing to set where there are no process groups.
func setProcAttrs(cmd *exec.Cmd) {}

// interrupt: no SIGINT here; the process is killed.
func interrupt(cmd *exec.Cmd) { cmd.Process.Kill() }

// killGroup kills the process.
func killGroup(cmd *exec.Cmd) {
	if cmd.Process != nil {
		cmd.Process.Kill()
	}
}
