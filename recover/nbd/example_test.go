package nbd_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"

	"github.com/vmcrypt/vmcrypt/recover/nbd"
)

// Serve one in-memory export on a private Unix socket until interrupted.
func ExampleServer_Serve() {
	data := strings.NewReader(strings.Repeat("\x00", 1<<20))
	srv := &nbd.Server{
		Exports: []nbd.Export{{
			Name: "disk0", Description: "a demo disk", Size: 1 << 20, Data: data,
			// All of it is a hole: clients skip it, reads send no data.
			Extents: func(off, n int64) ([]nbd.Extent, error) {
				return []nbd.Extent{{Length: n, Hole: true, Zero: true}}, nil
			},
		}},
		DefaultExport: "disk0",
		Log:           slog.New(slog.NewTextHandler(os.Stderr, nil)).Info,
	}
	ln, err := nbd.ListenUnix("", "nbd.sock")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer ln.Close() // removes the socket and its folder
	fmt.Printf("nbdinfo 'nbd+unix:///disk0?socket=%s'\n", ln.Path)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := srv.Serve(ctx, ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}
