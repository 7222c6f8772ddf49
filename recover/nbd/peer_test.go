package nbd

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Peer tests: qemu-img (Debian qemu-utils) and libnbd's nbdinfo and nbdcopy
// (Debian libnbd-bin) read from the server over a Unix socket. A missing
// peer fails the test.

func needPeers(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Fatalf("peer %s is missing (install qemu-utils and libnbd-bin): %v", n, err)
		}
	}
}

// peerLayout: data, a hole, data, allocated zeros, a hole, data, a hole,
// data; 64 MiB, every run a multiple of 64 KiB.
var peerLayout = []Extent{
	{Length: 1 << 20},
	{Length: 7 << 20, Hole: true, Zero: true},
	{Length: 64 << 10},
	{Length: 64 << 10, Zero: true},
	{Length: 24<<20 - 128<<10, Hole: true, Zero: true},
	{Length: 8 << 20},
	{Length: 24<<20 - 64<<10, Hole: true, Zero: true},
	{Length: 64 << 10},
}

// peerImage writes the layout as a sparse file: random non-zero bytes in
// data runs, zeros written out in Zero-only runs, holes left unwritten.
func peerImage(t testing.TB) (path string, size int64, sum string) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "plain.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := rand.NewChaCha8([32]byte{7})
	for _, e := range peerLayout {
		if !e.Hole {
			b := make([]byte, e.Length)
			if !e.Zero {
				r.Read(b)
				for i, c := range b {
					if c == 0 {
						b[i] = 1
					}
				}
			}
			if _, err := f.WriteAt(b, size); err != nil {
				t.Fatal(err)
			}
		}
		size += e.Length
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path, size, fileSum(t, path)
}

func fileSum(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// peerServer serves the image as "disk" (with its map), "plain" (no map)
// and "small" (1 MiB in memory, with a description).
func peerServer(t testing.TB, path string, size int64, wrap func(io.ReaderAt) io.ReaderAt) (*harness, *os.File) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var data io.ReaderAt = f
	if wrap != nil {
		data = wrap(f)
	}
	small := newMem(3, []Extent{{Length: 1 << 20}})
	h := start(t, &Server{Exports: []Export{
		{Name: "disk", Description: "sparse test disk", Size: size, Data: data,
			Extents: func(off, n int64) ([]Extent, error) { return cutLayout(peerLayout, off, n), nil }},
		{Name: "plain", Size: size, Data: data},
		{Name: "small", Description: "one MiB in memory", Size: 1 << 20, Data: small},
	}})
	return h, f
}

func uri(h *harness, export string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", export, h.path)
}

func run(t testing.TB, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %q: %w: %s", name, args, err, stderr.Bytes())
	}
	return out, nil
}

func mustRun(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPeerCopiesMatch(t *testing.T) {
	needPeers(t, "qemu-img", "nbdcopy")
	path, size, sum := peerImage(t)
	h, _ := peerServer(t, path, size, nil)
	out := t.TempDir()
	for _, exp := range []string{"disk", "plain"} {
		q := filepath.Join(out, exp+"-qemu.raw")
		mustRun(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri(h, exp), q)
		if got := fileSum(t, q); got != sum {
			t.Errorf("qemu-img convert of %s: sha256 %s, want %s", exp, got, sum)
		}
		n := filepath.Join(out, exp+"-nbdcopy.raw")
		mustRun(t, "nbdcopy", uri(h, exp), n)
		if got := fileSum(t, n); got != sum {
			t.Errorf("nbdcopy of %s: sha256 %s, want %s", exp, got, sum)
		}
	}
	// Multi-connection, many requests in flight, small requests.
	n := filepath.Join(out, "multi.raw")
	mustRun(t, "nbdcopy", "--connections=4", "--requests=64", "--request-size=65536", uri(h, "disk"), n)
	if got := fileSum(t, n); got != sum {
		t.Errorf("nbdcopy -C 4: sha256 %s, want %s", got, sum)
	}
	// Without block status, nbdcopy reads the holes: the server sends them
	// as hole chunks, which libnbd must fill in.
	n = filepath.Join(out, "noext.raw")
	mustRun(t, "nbdcopy", "--no-extents", uri(h, "disk"), n)
	if got := fileSum(t, n); got != sum {
		t.Errorf("nbdcopy --no-extents: sha256 %s, want %s", got, sum)
	}
	if h.log.count("panic")+h.log.count("read error")+h.log.count("protocol error") != 0 {
		t.Fatalf("server logged errors: %v", h.log.events)
	}
}

func TestPeerNbdinfoList(t *testing.T) {
	needPeers(t, "nbdinfo")
	path, size, _ := peerImage(t)
	h, _ := peerServer(t, path, size, nil)
	var list struct {
		Protocol   string `json:"protocol"`
		Structured bool   `json:"structured"`
		Exports    []struct {
			Name        string   `json:"export-name"`
			Description string   `json:"description"`
			Size        int64    `json:"export-size"`
			ReadOnly    bool     `json:"is_read_only"`
			MultiConn   bool     `json:"can_multi_conn"`
			CanDF       bool     `json:"can_df"`
			CanTrim     bool     `json:"can_trim"`
			CanZero     bool     `json:"can_zero"`
			Contexts    []string `json:"contexts"`
			MinBlock    int64    `json:"block_size_minimum"`
			MaxBlock    int64    `json:"block_size_maximum"`
		} `json:"exports"`
	}
	out := mustRun(t, "nbdinfo", "--list", "--json", fmt.Sprintf("nbd+unix://?socket=%s", h.path))
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if list.Protocol != "newstyle-fixed" || !list.Structured || len(list.Exports) != 3 {
		t.Fatalf("nbdinfo --list: %s", out)
	}
	want := map[string]struct {
		size int64
		desc string
	}{"disk": {size, "sparse test disk"}, "plain": {size, ""}, "small": {1 << 20, "one MiB in memory"}}
	for _, e := range list.Exports {
		w, ok := want[e.Name]
		if !ok || e.Size != w.size || e.Description != w.desc || !e.ReadOnly || !e.MultiConn || !e.CanDF ||
			e.CanTrim || e.CanZero || len(e.Contexts) != 1 || e.Contexts[0] != metaContextAllocation ||
			e.MinBlock != 1 || e.MaxBlock != DefaultMaxRequest {
			t.Errorf("export %+v", e)
		}
		delete(want, e.Name)
	}
	if len(want) != 0 {
		t.Fatalf("not listed: %v", want)
	}
}

func TestPeerMaps(t *testing.T) {
	needPeers(t, "nbdinfo", "qemu-img")
	path, size, _ := peerImage(t)
	h, _ := peerServer(t, path, size, nil)

	var nmap []struct {
		Offset, Length int64
		Type           uint32
	}
	out := mustRun(t, "nbdinfo", "--map", "--json", uri(h, "disk"))
	if err := json.Unmarshal(out, &nmap); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var qmap []struct {
		Start, Length int64
		Data, Zero    bool
	}
	out = mustRun(t, "qemu-img", "map", "--output=json", "-f", "raw", uri(h, "disk"))
	if err := json.Unmarshal(out, &qmap); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(nmap) != len(peerLayout) || len(qmap) != len(peerLayout) {
		t.Fatalf("maps: nbdinfo %+v, qemu-img %+v", nmap, qmap)
	}
	var off int64
	for i, e := range peerLayout {
		var typ uint32
		if e.Hole {
			typ |= stateHole
		}
		if e.Zero {
			typ |= stateZero
		}
		if n := nmap[i]; n.Offset != off || n.Length != e.Length || n.Type != typ {
			t.Errorf("nbdinfo extent %d: %+v, want %d+%d type %d", i, n, off, e.Length, typ)
		}
		// qemu: data unless NBD_STATE_HOLE, zero when NBD_STATE_ZERO.
		if q := qmap[i]; q.Start != off || q.Length != e.Length || q.Data != !e.Hole || q.Zero != e.Zero {
			t.Errorf("qemu-img map extent %d: %+v, want %+v at %d", i, q, e, off)
		}
		off += e.Length
	}
	// Without a map, all data.
	out = mustRun(t, "nbdinfo", "--map", "--json", uri(h, "plain"))
	if err := json.Unmarshal(out, &nmap); err != nil || len(nmap) != 1 || nmap[0].Length != size || nmap[0].Type != 0 {
		t.Fatalf("plain map: %s", out)
	}
}

func TestPeerQemuImgCompare(t *testing.T) {
	needPeers(t, "qemu-img")
	path, size, _ := peerImage(t)
	h, _ := peerServer(t, path, size, nil)
	mustRun(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri(h, "disk"), path)
	// One byte different in the last data run: compare must see it.
	other := filepath.Join(t.TempDir(), "other.raw")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[size-100] ^= 0xff
	if err := os.WriteFile(other, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri(h, "disk"), other)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("compare against a changed image: %v", err)
	}
}

func TestPeerDamagedRange(t *testing.T) {
	needPeers(t, "qemu-img", "nbdcopy")
	path, size, _ := peerImage(t)
	bad := int64(32<<20 + 12345) // inside the 8 MiB data run
	h, _ := peerServer(t, path, size, func(r io.ReaderAt) io.ReaderAt {
		return &faultyData{ReaderAt: r, bad: bad, badLen: 1, panicAt: -1}
	})
	dir := t.TempDir()
	if _, err := run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri(h, "disk"), filepath.Join(dir, "q.raw")); err == nil {
		t.Fatal("qemu-img convert of a damaged export succeeded")
	}
	if _, err := run(t, "nbdcopy", uri(h, "disk"), filepath.Join(dir, "n.raw")); err == nil {
		t.Fatal("nbdcopy of a damaged export succeeded")
	}
	args, ok := h.log.find("read error")
	if !ok || argOf(args, "offset") != bad || argOf(args, "export") != "disk" {
		t.Fatalf("read error log: %v", args)
	}
	// The server goes on: the undamaged export copies, in the same run.
	n := filepath.Join(dir, "small.raw")
	mustRun(t, "nbdcopy", uri(h, "small"), n)
	got, err := os.ReadFile(n)
	if err != nil || len(got) != 1<<20 {
		t.Fatalf("small copy: %v", err)
	}
}

// An export whose size is not a multiple of 512 is served exactly:
// nbdcopy copies every byte; qemu (7.2) rounds the size up and pads
// with zeros.
func TestPeerOddSize(t *testing.T) {
	needPeers(t, "qemu-img", "nbdcopy")
	m := newMem(9, []Extent{{Length: 1000}})
	h := start(t, &Server{Exports: []Export{memExport("odd", m, false)}})
	dir := t.TempDir()
	n := filepath.Join(dir, "n.raw")
	mustRun(t, "nbdcopy", uri(h, "odd"), n)
	if got, err := os.ReadFile(n); err != nil || !bytes.Equal(got, m.b) {
		t.Fatalf("nbdcopy of a 1000-byte export: %v %s", err, hexdiff(got, m.b))
	}
	q := filepath.Join(dir, "q.raw")
	mustRun(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", uri(h, "odd"), q)
	got, err := os.ReadFile(q)
	if err != nil || len(got) != 1024 || !bytes.Equal(got[:1000], m.b) || !bytes.Equal(got[1000:], make([]byte, 24)) {
		t.Fatalf("qemu-img convert of a 1000-byte export: %d bytes, %v", len(got), err)
	}
}

// nbdcopy killed in the middle of copies: the server goes on, and stops
// with no goroutine left behind (checked by the harness).
func TestPeerClientKilledMidCopy(t *testing.T) {
	needPeers(t, "nbdcopy")
	path, size, sum := peerImage(t)
	h, _ := peerServer(t, path, size, nil)
	for i := range 5 {
		cmd := exec.Command("nbdcopy", "--no-extents", uri(h, "plain"), "null:")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+20*i) * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
	}
	n := filepath.Join(t.TempDir(), "after.raw")
	mustRun(t, "nbdcopy", uri(h, "disk"), n)
	if got := fileSum(t, n); got != sum {
		t.Fatalf("copy after killed clients: sha256 %s, want %s", got, sum)
	}
	if h.log.count("panic") != 0 {
		t.Fatal("panic logged")
	}
}
