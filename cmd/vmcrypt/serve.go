package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/nbd"
)

// The serve command: each disk of an encrypted VM (and each snapshot
// state) as a read-only NBD export, decrypted on read (recover/view over
// recover/nbd), until interrupted.

func init() {
	register(&cli.Command{
		Name:      "serve",
		Usage:     "serve each disk and snapshot state of an encrypted VM as a read-only NBD export, decrypted on read",
		ArgsUsage: "VMPATH",
		Description: "VMPATH is the .vmx file or its folder. Every key is opened before anything is served. Exports\n" +
			"are named as the files of vmcrypt mount (DISK.raw, DISK@N.raw); the first disk is also the\n" +
			"default export. By default the server listens on a Unix socket in a new private folder\n" +
			"(printed on stderr with ready-to-paste qemu-img and nbdcopy commands), removed when it stops\n" +
			"(Ctrl-C, SIGTERM). --listen serves TCP on a loopback address; any other address needs\n" +
			"--listen-any: NBD has no authentication, whoever reaches the port reads the decrypted disks.\n" +
			"Read errors (a damaged range) are logged with the export and offset and fail that request only.",
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "socket", Usage: "listen on the Unix socket `PATH` (must not exist; removed on exit)"},
			&cli.StringFlag{Name: "listen", Usage: "listen on TCP `ADDR` (host:port), loopback only unless --listen-any"},
			&cli.BoolFlag{Name: "listen-any", Usage: "allow a --listen address that is not loopback (no authentication: anyone who reaches it reads the disks)"},
		}, viewFlags()...), keyFlags()...),
		Action: serveAction,
	})
}

// serveListener is where serve listens: uri makes the URI of an export.
type serveListener struct {
	net.Listener
	desc string
	uri  func(export string) string
}

func serveAction(c *cli.Context) error {
	pos := c.Args().Slice()
	if len(pos) != 1 {
		return usagef("serve takes one VMPATH (got %d arguments)", len(pos))
	}
	sock, addr := c.String("socket"), c.String("listen")
	switch {
	case sock != "" && addr != "":
		return usagef("--socket and --listen: choose one")
	case c.Bool("listen-any") && addr == "":
		return usagef("--listen-any needs --listen ADDR")
	case addr != "" && !c.Bool("listen-any"):
		if err := nbd.CheckLoopback(addr); err != nil {
			return usagef("--listen %s is not a loopback address: NBD has no authentication, anyone who reaches it reads the decrypted disks (--listen-any allows it)", addr)
		}
	case sock != "":
		if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
			return usagef("--socket %s already exists: vmcrypt never replaces a file (remove a socket left by a killed run)", sock)
		}
	}
	v, w, err := openView(c, pos[0], "vmcrypt serve")
	if err != nil {
		return err
	}
	defer v.Close()
	defer w.Close()
	exports := w.Exports()
	if len(exports) == 0 {
		return fmt.Errorf("%s has no disk to serve", v.VMXPath)
	}
	stderr := c.App.ErrWriter
	ln, err := serveListen(sock, addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	if addr != "" && nbd.CheckLoopback(addr) != nil {
		fmt.Fprintf(stderr, "WARNING: serving on %s, which is not loopback-only: NBD has no authentication; anyone who reaches this port reads the decrypted disks\n", ln.Addr())
	}
	log := newEventLog(stderr, c.Bool("verbose"), "read error", "extents error", "panic", "accept error", "connection refused", "protocol error")
	srv := &nbd.Server{Exports: exports, DefaultExport: w.DefaultExport(), Log: log.log}

	plural := "s"
	if len(exports) == 1 {
		plural = ""
	}
	fmt.Fprintf(stderr, "serving %d export%s of %s read-only on %s; Ctrl-C stops\n", len(exports), plural, v.VMXPath, ln.desc)
	for _, f := range w.Disks() {
		fmt.Fprintf(stderr, "  %s\n      %s\n", fileLine(&f), ln.uri(f.Name))
	}
	first := ln.uri(exports[0].Name)
	fmt.Fprintf(stderr, "list:  nbdinfo --list '%s'\n", ln.uri(""))
	fmt.Fprintf(stderr, "copy:  qemu-img convert -p -O raw '%s' %s\n", first, filepath.Base(exports[0].Name))
	fmt.Fprintf(stderr, "       nbdcopy --progress '%s' %s\n", first, filepath.Base(exports[0].Name))
	printWarnings(stderr, w.Report)

	if err := srv.Serve(c.Context, ln); err != nil {
		return err
	}
	ln.Close()
	fmt.Fprintf(stderr, "stopped serving %s\n", ln.desc)
	return fmt.Errorf("stopped serving: %w", c.Context.Err())
}

// serveListen listens on --socket, --listen, or a new private folder.
func serveListen(sock, addr string) (*serveListener, error) {
	switch {
	case addr != "":
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, err
		}
		return &serveListener{Listener: ln, desc: ln.Addr().String(), uri: tcpURI(addr, ln.Addr())}, nil
	case sock != "":
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			return nil, err
		}
		ln.SetUnlinkOnClose(true)
		if err := os.Chmod(sock, 0o600); err != nil {
			ln.Close()
			return nil, err
		}
		return &serveListener{Listener: ln, desc: sock, uri: unixURI(sock)}, nil
	}
	ln, err := nbd.ListenUnix("", "nbd.sock")
	if err != nil {
		return nil, err
	}
	return &serveListener{Listener: ln, desc: ln.Path, uri: unixURI(ln.Path)}, nil
}

// tcpURI makes nbd://HOST:PORT/EXPORT: HOST as --listen gave it (this
// machine's name for a wildcard address), PORT the one listened on (a
// --listen port 0 picks one).
func tcpURI(listen string, a net.Addr) func(string) string {
	host, _, _ := net.SplitHostPort(listen)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
		if h, err := os.Hostname(); err == nil && h != "" {
			host = h
		}
	}
	port := "10809"
	if ta, ok := a.(*net.TCPAddr); ok {
		port = strconv.Itoa(ta.Port)
	}
	hp := net.JoinHostPort(host, port)
	return func(e string) string { return "nbd://" + hp + "/" + url.PathEscape(e) }
}

// unixURI makes nbd+unix:///EXPORT?socket=PATH (nbd+unix://?socket=PATH
// for the empty export name).
func unixURI(sock string) func(string) string {
	q := sock
	if strings.ContainsFunc(q, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-", r))
	}) {
		q = url.QueryEscape(q)
	}
	return func(e string) string {
		if e == "" {
			return "nbd+unix://?socket=" + q
		}
		return "nbd+unix:///" + url.PathEscape(e) + "?socket=" + q
	}
}
