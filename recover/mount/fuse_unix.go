//go:build linux || darwin

package mount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// cacheTimeout is how long the kernel may cache names and attributes: the
// files never change while mounted.
const cacheTimeout = 24 * time.Hour

// maxBackground is how many asynchronous (readahead) requests the kernel may
// have in flight at once; the FUSE default of 12 starves parallel readers.
const maxBackground = 64

// maxInflightBytes caps the request buffers (about 1 MiB each) the server
// holds at once; beyond it the kernel waits.
const maxInflightBytes = 256 << 20

// blockSize is the st_blksize shown to readers: the largest FUSE request.
const blockSize = fuse.MAX_KERNEL_WRITE

// Mounted is a live mount made by Mount.
type Mounted struct {
	dir  string
	srv  *fuse.Server
	opts Options
	done chan struct{} // closed when the server has stopped

	once sync.Once
	err  error
}

// Mount serves files read-only at dir, which must be an existing empty
// folder, and returns once the file system answers. Call Unmount (or have
// someone run fusermount3 -u dir) to stop it; Wait blocks until then.
func Mount(dir string, files []File, opts Options) (*Mounted, error) {
	files, err := validate(files)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("mount point %s: %w", dir, err)
	}
	if err := checkMountPoint(abs); err != nil {
		return nil, err
	}
	if err := checkFUSE(); err != nil {
		return nil, err
	}
	if opts.FsName == "" {
		opts.FsName = "vmcrypt"
	}

	now := time.Now()
	owner := fuse.Owner{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}
	root := &dirNode{mtime: now, owner: owner, files: files}
	ino := uint64(1)
	root.build = func(ctx context.Context) {
		dirs := map[string]*fs.Inode{"": &root.Inode}
		var mkdir func(path string) *fs.Inode
		mkdir = func(path string) *fs.Inode {
			if n, ok := dirs[path]; ok {
				return n
			}
			parent, name := "", path
			if i := strings.LastIndexByte(path, '/'); i >= 0 {
				parent, name = path[:i], path[i+1:]
			}
			p := mkdir(parent)
			ino++
			n := p.NewPersistentInode(ctx, &dirNode{mtime: now, owner: owner},
				fs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino})
			p.AddChild(name, n, false)
			dirs[path] = n
			return n
		}
		for i := range files {
			f := &files[i]
			parent, name := "", f.Name
			if j := strings.LastIndexByte(f.Name, '/'); j >= 0 {
				parent, name = f.Name[:j], f.Name[j+1:]
			}
			p := mkdir(parent)
			ino++
			mtime := f.ModTime
			if mtime.IsZero() {
				mtime = now
			}
			n := p.NewPersistentInode(ctx,
				&fileNode{f: f, mtime: mtime, owner: owner, alloc: allocatedBytes(f), opts: &opts},
				fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino})
			p.AddChild(name, n, false)
		}
	}

	timeout := cacheTimeout
	logger := log.New(io.Discard, "", 0)
	if opts.Log != nil {
		logger = log.New(logWriter{&opts}, "", 0)
	}
	fsOpts := &fs.Options{
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		UID:             owner.Uid,
		GID:             owner.Gid,
		Logger:          logger,
		MountOptions: fuse.MountOptions{
			AllowOther:              opts.AllowOther,
			FsName:                  opts.FsName,
			Name:                    "vmcrypt",
			Options:                 readOnlyOptions,
			DirectMount:             true, // mount(2) as root, fusermount3 otherwise
			DirectMountFlags:        directMountFlags,
			MaxWrite:                fuse.MAX_KERNEL_WRITE, // also max_read and max_pages
			MaxBackground:           maxBackground,
			MaxInflightRequestBytes: maxInflightBytes,
			DisableXAttrs:           true,
			Logger:                  logger,
			PanicHandler: func(v any) fuse.Status {
				opts.log("panic", "value", fmt.Sprint(v))
				return fuse.EIO
			},
		},
	}
	srv, err := fuse.NewServer(fs.NewNodeFS(root, fsOpts), abs, &fsOpts.MountOptions)
	if err != nil {
		return nil, mountError(abs, err)
	}
	m := &Mounted{dir: abs, srv: srv, opts: opts, done: make(chan struct{})}
	go func() {
		srv.Serve()
		close(m.done)
	}()
	if err := srv.WaitMount(); err != nil {
		_ = m.Unmount()
		return nil, mountError(abs, err)
	}
	afterMount(m)
	return m, nil
}

func mountError(dir string, err error) error {
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("mount %s: %w: %w", dir, ErrNoFUSE, err)
	}
	return fmt.Errorf("mount %s: %w", dir, err)
}

// Dir is the absolute mount point.
func (m *Mounted) Dir() string { return m.dir }

// Wait blocks until the file system is unmounted (by Unmount or by
// fusermount3 -u) and its server has stopped.
func (m *Mounted) Wait() { <-m.done }

// Unmount unmounts the file system and waits for its server to stop. When
// files are still open, the mount is detached from the folder at once;
// as root the connection is also aborted, so the open files fail from then
// on, otherwise they are served until closed. Calling it again returns the
// first result.
func (m *Mounted) Unmount() error {
	m.once.Do(func() { m.err = m.unmount() })
	return m.err
}

func (m *Mounted) unmount() error {
	select {
	case <-m.done:
		return nil // unmounted from outside
	default:
	}
	err := m.srv.Unmount()
	if err == nil {
		<-m.done
		return nil
	}
	select {
	case <-m.done:
		return nil // went away meanwhile
	default:
	}
	m.opts.log("unmount forced", "dir", m.dir, "err", err.Error())
	if ferr := forceUnmount(m.dir); ferr != nil {
		return fmt.Errorf("unmount %s: %v; forced unmount: %w", m.dir, err, ferr)
	}
	<-m.done
	return nil
}

// checkMountPoint refuses anything but an existing empty folder, and
// explains a stale mount.
func checkMountPoint(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, syscall.ENOTCONN) {
			return staleError(dir)
		}
		return fmt.Errorf("%w: %s: %w", ErrNotDir, dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: %s", ErrNotDir, dir)
	}
	d, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, syscall.ENOTCONN) {
			return staleError(dir)
		}
		return fmt.Errorf("mount point %s: %w", dir, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if len(names) > 0 {
		return fmt.Errorf("%w: %s holds %q", ErrNotEmpty, dir, names[0])
	}
	if err != nil && err != io.EOF {
		if errors.Is(err, syscall.ENOTCONN) {
			return staleError(dir)
		}
		return fmt.Errorf("mount point %s: %w", dir, err)
	}
	return nil
}

func staleError(dir string) error {
	return fmt.Errorf("%w: %s: the server of an earlier mount was killed; clear it with `fusermount3 -u %s` (or `umount -l %s` as root), then mount again",
		ErrStaleMount, dir, dir, dir)
}

// logWriter turns go-fuse's diagnostics into Log events.
type logWriter struct{ o *Options }

func (w logWriter) Write(p []byte) (int, error) {
	w.o.log("fuse", "msg", strings.TrimSpace(string(p)))
	return len(p), nil
}

// dirNode is a read-only folder. The root also builds the tree.
type dirNode struct {
	fs.Inode
	mtime time.Time
	owner fuse.Owner
	files []File                    // root only, for Statfs
	build func(ctx context.Context) // root only
}

var (
	_ fs.NodeOnAdder   = (*dirNode)(nil)
	_ fs.NodeGetattrer = (*dirNode)(nil)
	_ fs.NodeSetattrer = (*dirNode)(nil)
	_ fs.NodeStatfser  = (*dirNode)(nil)

	_ fs.NodeOpener    = (*fileNode)(nil)
	_ fs.NodeReader    = (*fileNode)(nil)
	_ fs.NodeGetattrer = (*fileNode)(nil)
	_ fs.NodeSetattrer = (*fileNode)(nil)
	_ fs.NodeLseeker   = (*fileNode)(nil)
	_ fs.NodeAllocater = (*fileNode)(nil)
)

// OnAdd builds the tree once, when the root is mounted.
func (d *dirNode) OnAdd(ctx context.Context) {
	if d.build != nil {
		d.build(ctx)
		d.build = nil
	}
}

func (d *dirNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Owner = d.owner
	out.SetTimes(&d.mtime, &d.mtime, &d.mtime)
	return 0
}

func (d *dirNode) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

// Statfs shows the served bytes as a full, read-only file system.
func (d *dirNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var total uint64
	for i := range d.files {
		total += uint64(d.files[i].Size)
	}
	*out = fuse.StatfsOut{}
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = (total + 4095) / 4096
	out.Files = uint64(len(d.files))
	out.NameLen = MaxNameLen
	return 0
}

// fileNode is one served file.
type fileNode struct {
	fs.Inode
	f     *File
	mtime time.Time
	owner fuse.Owner
	alloc int64 // allocated bytes
	opts  *Options
}

// Open refuses writing and keeps the page cache between opens.
func (n *fileNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0 {
		return nil, 0, syscall.EROFS
	}
	return nil, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0
}

func (n *fileNode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o444
	out.Nlink = 1
	out.Size = uint64(n.f.Size)
	out.Blksize = blockSize
	out.Blocks = uint64((n.alloc + 511) / 512)
	out.Owner = n.owner
	out.SetTimes(&n.mtime, &n.mtime, &n.mtime)
	return 0
}

func (n *fileNode) Setattr(context.Context, fs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (n *fileNode) Allocate(context.Context, fs.FileHandle, uint64, uint64, uint32) syscall.Errno {
	return syscall.EROFS
}

// Read fills dest from the file: zeros for holes, Data for runs. Any failure
// (an error or a panic of Data) fails the whole request with EIO and is
// logged; a short reply would make the kernel shrink the file.
func (n *fileNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (res fuse.ReadResult, errno syscall.Errno) {
	f := n.f
	if off < 0 || off >= f.Size {
		return fuse.ReadResultData(nil), 0
	}
	p := dest[:min(int64(len(dest)), f.Size-off)]
	defer func() {
		if v := recover(); v != nil {
			n.opts.log("panic", "file", f.Name, "offset", off, "length", len(p), "value", fmt.Sprint(v))
			res, errno = nil, syscall.EIO
		}
	}()
	if err := readFile(f, p, off); err != nil {
		var re *readError
		if errors.As(err, &re) {
			n.opts.log("read error", "file", re.File, "offset", re.Offset, "length", re.Len, "err", re.Err.Error())
		} else {
			n.opts.log("read error", "file", f.Name, "offset", off, "length", len(p), "err", err.Error())
		}
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(p), 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the allocation map.
func (n *fileNode) Lseek(ctx context.Context, _ fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	if whence != seekData && whence != seekHole {
		return 0, syscall.EINVAL
	}
	if off > math.MaxInt64 {
		return 0, syscall.ENXIO
	}
	r, err := seekFile(n.f, int64(off), int(whence))
	if err != nil {
		return 0, syscall.ENXIO
	}
	return uint64(r), 0
}
