package mount

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"
)

// readOnlyOptions are the FUSE mount options: read-only, no executables.
var readOnlyOptions = []string{"ro", "noexec", "nosuid", "nodev"}

// directMountFlags are the mount(2) flags when mounting as root.
const directMountFlags = syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC

// checkFUSE reports ErrNoFUSE when /dev/fuse or (for users other than root)
// fusermount3 is missing.
func checkFUSE() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("%w: /dev/fuse: %w (load the fuse module, install fuse3)", ErrNoFUSE, err)
	}
	if os.Geteuid() == 0 {
		return nil
	}
	if _, err := fusermount(); err != nil {
		return fmt.Errorf("%w: fusermount3 not found (install fuse3): %w", ErrNoFUSE, err)
	}
	return nil
}

func fusermount() (string, error) {
	if p, err := exec.LookPath("fusermount3"); err == nil {
		return p, nil
	}
	return exec.LookPath("fusermount")
}

// forceUnmount detaches a busy mount. As root it first aborts the FUSE
// connection (MNT_FORCE), so open files fail and the server stops.
func forceUnmount(dir string) error {
	if os.Geteuid() == 0 {
		_ = unix.Unmount(dir, unix.MNT_FORCE) // aborts the connection; EBUSY is expected
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			return fmt.Errorf("umount -l %s: %w", dir, err)
		}
		return nil
	}
	bin, err := fusermount()
	if err != nil {
		return err
	}
	if out, err := exec.Command(bin, "-u", "-z", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("%s -u -z %s: %w: %s", bin, dir, err, out)
	}
	return nil
}

// afterMount raises the readahead of the mount's backing device.
func afterMount(m *Mounted) {
	kb := m.opts.ReadAheadKB
	if kb == 0 {
		kb = DefaultReadAheadKB
	}
	if kb < 0 {
		return
	}
	var st unix.Stat_t
	if err := unix.Stat(m.dir, &st); err != nil {
		m.opts.log("readahead", "dir", m.dir, "err", err.Error())
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(fmt.Sprint(kb)), 0); err != nil {
		m.opts.log("readahead", "dir", m.dir, "err", err.Error())
	}
}
