package mount

import (
	"fmt"
	"os/exec"
)

// readOnlyOptions are the macFUSE mount options.
var readOnlyOptions = []string{"rdonly", "noexec", "nosuid", "nodev"}

// directMountFlags are unused on Darwin (macFUSE mounts through its helper).
const directMountFlags = 0

func checkFUSE() error { return nil } // go-fuse reports a missing macFUSE

func forceUnmount(dir string) error {
	if out, err := exec.Command("umount", "-f", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("umount -f %s: %w: %s", dir, err, out)
	}
	return nil
}

func afterMount(*Mounted) {}
