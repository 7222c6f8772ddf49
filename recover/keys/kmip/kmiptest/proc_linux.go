//go:build linux

package kmiptest

import (
	"os/exec"
	"syscall"
)

// setProcAttrs puts the server in a process group of its own and has the
// kernel send it SIGINT if the test binary dies first, so no server
// outlives a crashed test run.
func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
}
