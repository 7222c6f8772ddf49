//go:build unix && !linux

package kmiptest

import (
	"os/exec"
	"syscall"
)

// setProcAttrs puts the server in a process group of its own.
func setProcAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
