package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/mount"
)

// The mount command: an encrypted VM shown read-only, decrypted on read,
// in a FUSE folder (recover/view over recover/mount), until unmounted or
// interrupted. No plaintext is written anywhere.

func init() {
	register(&cli.Command{
		Name:      "mount",
		Usage:     "show an encrypted VM read-only in a folder (FUSE), decrypted on read: DISK.raw per disk and snapshot state, NAME.vmx, data files, report.json",
		ArgsUsage: "VMPATH MOUNTPOINT",
		Description: "VMPATH is the .vmx file or its folder; MOUNTPOINT an existing empty folder. Every key is opened\n" +
			"before anything is mounted. vmcrypt runs in the foreground until the folder is unmounted\n" +
			"(fusermount3 -u MOUNTPOINT) or it is interrupted (Ctrl-C, SIGTERM), which unmounts cleanly.\n" +
			"Nothing is written: no plaintext reaches the disk. Read errors (a damaged range) are logged\n" +
			"on stderr with the file and offset and fail that read only (EIO). Needs Linux with FUSE\n" +
			"(fuse3; as root it mounts directly).",
		Flags: append(append([]cli.Flag{
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users read the mount (root, or user_allow_other in /etc/fuse.conf)"},
		}, viewFlags()...), keyFlags()...),
		Action: mountAction,
	})
}

func mountAction(c *cli.Context) error {
	pos := c.Args().Slice()
	if len(pos) != 2 {
		return usagef("mount takes VMPATH MOUNTPOINT (got %d arguments)", len(pos))
	}
	dir := pos[1]
	// A missing folder or a file is a usage mistake: say so before asking
	// for a passphrase. Mount checks the folder fully (empty, not stale).
	if st, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) || (err == nil && !st.IsDir()) {
		return fmt.Errorf("%w: %s (create an empty folder to mount on)", mount.ErrNotDir, dir)
	}
	v, w, err := openView(c, pos[0], "vmcrypt mount")
	if err != nil {
		return err
	}
	defer v.Close()
	defer w.Close()
	stderr := c.App.ErrWriter
	log := newEventLog(stderr, c.Bool("verbose"), "read error", "panic", "unmount forced")
	m, err := mount.Mount(dir, w.MountFiles(), mount.Options{
		AllowOther: c.Bool("allow-other"),
		FsName:     "vmcrypt:" + v.VMXPath,
		Log:        log.log,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "mounted %s read-only on %s (%d files); Ctrl-C or `fusermount3 -u %s` unmounts\n", v.VMXPath, m.Dir(), len(w.Files), m.Dir())
	for i := range w.Files {
		fmt.Fprintf(stderr, "  %s\n", fileLine(&w.Files[i]))
	}
	printWarnings(stderr, w.Report)

	gone := make(chan struct{})
	go func() {
		m.Wait()
		close(gone)
	}()
	select {
	case <-gone:
		fmt.Fprintf(stderr, "%s was unmounted\n", m.Dir())
		return nil
	case <-c.Context.Done():
	}
	if err := m.Unmount(); err != nil {
		return err
	}
	<-gone
	fmt.Fprintf(stderr, "unmounted %s\n", m.Dir())
	return fmt.Errorf("unmounted %s: %w", m.Dir(), c.Context.Err())
}
