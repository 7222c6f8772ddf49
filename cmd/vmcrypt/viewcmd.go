package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/view"
	"github.com/vmcrypt/vmcrypt/recover/vm"
)

// What mount and serve share: the VM opened with every key before
// anything is shown (a wrong key exits 3, a missing one 4, and nothing is
// mounted or served), the view of recover/view, and the event log.

// viewFlags are the VM-reading flags of mount and serve.
func viewFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "ignore-mac", Usage: "switch the page-MAC rule off: read a data file whose pages partly fail their MAC (damaged) as far as it goes"},
		&cli.BoolFlag{Name: "strict-mac", Usage: "leave out data files whose page MACs match no known scheme (VMware's is not public) instead of showing them decrypted unauthenticated"},
		&cli.BoolFlag{Name: "allow-unsafe-paths", Usage: "follow disk extent paths and parent hints that are absolute or contain \"..\", and symbolic links out of the VM folder"},
		&cli.BoolFlag{Name: "allow-cid-mismatch", Usage: "read a chain whose parentCID differs from the parent's CID"},
		&cli.BoolFlag{Name: "scan-truncated-stream", Usage: "read a streamOptimized disk without its footer by scanning its grains (what was cut off reads as zeros)"},
		&cli.BoolFlag{Name: "verbose", Usage: "log every event (connections, FUSE diagnostics), not only errors"},
	}
}

// openView opens the VM at path with its keys and builds its view. The
// caller closes both (view first).
func openView(c *cli.Context, path, tool string) (*vm.VM, *view.View, error) {
	v, err := vmOpen(c, path, vmOpenMode{prompt: true, keepGoing: true})
	// Every key is open now: a KMIP connection is not kept while serving.
	closeKeySources(c.App)
	if err != nil {
		return nil, nil, err
	}
	w, err := view.New(v, &view.Options{Tool: tool})
	if err != nil {
		v.Close()
		return nil, nil, err
	}
	return v, w, nil
}

// printWarnings writes the VM's notes and warnings, one line each.
func printWarnings(w io.Writer, rep view.Report) {
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, wn := range rep.Warnings {
		fmt.Fprintf(w, "warning: %s\n", wn)
	}
}

// fileLine describes a file of the view in one line.
func fileLine(f *view.File) string {
	what := f.Kind
	if f.Device != "" {
		what += " " + f.Device
	}
	if f.Snapshot != nil && f.Snapshot.DisplayName != "" {
		what += " (" + f.Snapshot.DisplayName + ")"
	}
	if f.Encrypted {
		what += ", decrypted on read"
	}
	return fmt.Sprintf("%-24s %10s  %s", f.Name, sizeString(f.Size), what)
}

// sizeString writes a size in binary units (1.5 GiB), exact bytes below
// 1 KiB.
func sizeString(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// eventLog writes library events (mount Options.Log, nbd Server.Log) to
// stderr, one line each: time, event, key=value pairs. Events not in
// always are written only when verbose. Safe for concurrent use.
type eventLog struct {
	mu      sync.Mutex
	w       io.Writer
	verbose bool
	always  map[string]bool
}

func newEventLog(w io.Writer, verbose bool, always ...string) *eventLog {
	l := &eventLog{w: w, verbose: verbose, always: map[string]bool{}}
	for _, e := range always {
		l.always[e] = true
	}
	return l
}

func (l *eventLog) log(event string, args ...any) {
	if !l.verbose && !l.always[event] {
		return
	}
	var b strings.Builder
	b.WriteString(time.Now().Format("15:04:05.000"))
	b.WriteString(" ")
	b.WriteString(event)
	b.WriteString(":")
	for i := 0; i+1 < len(args); i += 2 {
		v := fmt.Sprint(args[i+1])
		if v == "" || strings.ContainsAny(v, " \t\n\"=") {
			v = strconv.Quote(v)
		}
		fmt.Fprintf(&b, " %v=%s", args[i], v)
	}
	b.WriteString("\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.w, b.String())
}
