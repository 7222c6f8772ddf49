package view

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/nbd"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

const testdata = "../../fixtures/testdata"

// sources are the key sources a fixture's secrets give.
func sources(t testing.TB, dir string, m *fixtures.Manifest) []keys.Source {
	t.Helper()
	var srcs []keys.Source
	if p := m.Secrets.PassphraseFile; p != "" {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, keys.NewPassphrase(bytes.TrimSuffix(b, []byte("\n"))))
	}
	if p := m.Secrets.KEKFile; p != "" {
		k, err := keys.OpenKEKFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, k)
	}
	if p := m.Secrets.NKPBackup; p != "" {
		pw, err := os.ReadFile(filepath.Join(dir, m.Secrets.NKPPasswordFile))
		if err != nil {
			t.Fatal(err)
		}
		s, err := keys.OpenNKPBackup(filepath.Join(dir, p), bytes.TrimSuffix(pw, []byte("\n")))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, s)
	}
	return srcs
}

// openFixture opens a fixture folder's VM with its secrets and builds the
// view; both are closed with the test.
func openFixture(t testing.TB, dir string) (*View, *fixtures.Manifest) {
	t.Helper()
	m, err := fixtures.LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	v, err := vm.OpenVM(context.Background(), filepath.Join(dir, fixtures.VMDir), &vm.Options{Resolver: keys.NewResolver(sources(t, dir, m)...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	w, err := New(v, &Options{Tool: "test", Now: func() time.Time { return time.Unix(0, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, m
}

// readAll reads a file of the view through its Data with 64 KiB reads at
// several goroutines at once, holes included (Data must read them as
// zeros too).
func readAll(t testing.TB, f *File) []byte {
	t.Helper()
	out := make([]byte, f.Size)
	const chunk = 64 << 10
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for off := int64(g) * chunk; off < f.Size; off += 4 * chunk {
				n := min(chunk, f.Size-off)
				if got, err := f.Data.ReadAt(out[off:off+n], off); got != int(n) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("%s: %v", f.Name, err)
	}
	return out
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func names(w *View) []string {
	var n []string
	for _, f := range w.Files {
		n = append(n, f.Name)
	}
	return n
}

// TestCheckedInFixtures: every checked-in fixture that opens shows its
// disk (and the base disk as DISK@1 for a snapshot), its VMX and its data
// files with the sha256 of fixture.json; the allocation map tells the
// truth (bytes outside Data runs are zeros); report.json lists what opened
// what.
func TestCheckedInFixtures(t *testing.T) {
	ents, err := os.ReadDir(testdata)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		dir := filepath.Join(testdata, e.Name())
		m, err := fixtures.LoadManifest(dir)
		if err != nil || m.Expect != fixtures.ExpectOpens {
			continue
		}
		n++
		t.Run(e.Name(), func(t *testing.T) {
			w, m := openFixture(t, dir)
			want := []string{"fixture.raw"}
			if m.Recipe.Snapshot {
				want = append(want, "fixture@1.raw")
			}
			want = append(want, "fixture.vmx")
			for _, f := range m.Files {
				if k := vm.KindOf(f); vm.IsDataFileKind(k) || k == vm.KindSnapList {
					want = append(want, filepath.Base(f))
				}
			}
			want = append(want, ReportName)
			if got := names(w); !slices.Equal(got, want) {
				t.Fatalf("files %q, want %q", got, want)
			}
			disk := w.File("fixture.raw")
			b := readAll(t, disk)
			if (sum(b) == m.SHA256.Disk) == (m.Tamper != nil) {
				t.Fatalf("disk sha256 %s, manifest %s (tampered: %v)", sum(b), m.SHA256.Disk, m.Tamper != nil)
			}
			checkRuns(t, disk, b, m.Recipe.Disk == vmdk.SubformatMonolithicFlat)
			if m.Recipe.Snapshot {
				s := w.File("fixture@1.raw")
				sb := readAll(t, s)
				if sum(sb) != m.SHA256.BaseDisk {
					t.Fatalf("snapshot state sha256 %s, manifest base disk %s", sum(sb), m.SHA256.BaseDisk)
				}
				checkRuns(t, s, sb, m.Recipe.Disk == vmdk.SubformatMonolithicFlat)
				if s.Snapshot == nil || s.Snapshot.Level != 1 || s.Snapshot.N != 1 || len(s.Links) != 1 {
					t.Fatalf("snapshot state %+v, links %+v", s.Snapshot, s.Links)
				}
				// The .vmsd (written with --memory) names the snapshot.
				if named := s.Snapshot.UID == 1 && s.Snapshot.DisplayName == "vmcrypt fixture snapshot"; named != m.Recipe.Memory {
					t.Fatalf("snapshot %+v, .vmsd present: %v", s.Snapshot, m.Recipe.Memory)
				}
			}
			vmxb := readAll(t, w.File("fixture.vmx"))
			if sum(w.VM.Decrypted.Text) != m.SHA256.VMXBody || !bytes.HasSuffix(vmxb, w.VM.Decrypted.Text) ||
				!bytes.HasPrefix(vmxb, w.VM.Decrypted.Header.Bytes()) || bytes.Contains(vmxb, []byte("encryption.data")) {
				t.Fatalf("fixture.vmx is not the decrypted VMX:\n%s", vmxb)
			}
			// The .vmem is shown flat (decompressed on read), as Volatility reads it.
			for name, want := range map[string]string{"fixture.nvram": m.SHA256.NVRAM, "fixture.vswp": m.SHA256.VSWP, "fixture-Snapshot1.vmsn": m.SHA256.VMSN, "fixture-Snapshot1.vmem": m.SHA256.VMem} {
				if want == "" {
					continue
				}
				f := w.File(name)
				if f == nil || sum(readAll(t, f)) != want {
					t.Fatalf("%s: not shown decrypted (want sha256 %s)", name, want)
				}
			}
			var rep Report
			if err := json.Unmarshal(readAll(t, w.File(ReportName)), &rep); err != nil {
				t.Fatal(err)
			}
			if rep.Tool != "test" || !rep.Encrypted || rep.KeySafe == nil || rep.KeySafe.Locker != m.Keys.VMX || rep.KeySafe.Source == "" ||
				len(rep.Files) != len(w.Files)-1 || rep.Files[0].Name != "fixture.raw" || rep.Files[0].DataBytes != disk.DataBytes() {
				t.Fatalf("report %+v", rep)
			}
			// Encrypted data files say how their pages are authenticated.
			for _, fr := range rep.Files {
				if fr.Kind == KindDataFile && fr.Encrypted && fr.MAC == "" {
					t.Fatalf("report: %s without its MAC scheme", fr.Name)
				}
			}
			// Every disk link that carries a key names its locker and source.
			for _, mk := range m.Keys.Disks {
				found := false
				for _, l := range rep.Files[0].Links {
					found = found || (filepath.Base(l.File) == mk.File && l.Locker == mk.Locker && l.Source != "")
				}
				if !found {
					t.Fatalf("report links %+v do not say who opened %s (%s)", rep.Files[0].Links, mk.File, mk.Locker)
				}
			}
		})
	}
	if n < 15 {
		t.Fatalf("only %d checked-in fixtures open", n)
	}
}

// checkRuns: the allocation map is sorted and inside the file, the bytes
// outside Data runs read as zeros, and the NBD extents describe the same
// map.
func checkRuns(t *testing.T, f *File, content []byte, flat bool) {
	t.Helper()
	if f.Runs == nil {
		t.Fatalf("%s: no allocation map", f.Name)
	}
	var end int64
	data := make([]bool, f.Size)
	for _, r := range f.Runs {
		if r.Off < end || r.Len <= 0 || r.Off+r.Len > f.Size {
			t.Fatalf("%s: bad run %+v", f.Name, r)
		}
		end = r.Off + r.Len
		if r.State == vmdk.Data {
			for i := r.Off; i < end; i++ {
				data[i] = true
			}
		}
	}
	holes := int64(0)
	for i, d := range data {
		if !d {
			holes++
			if content[i] != 0 {
				t.Fatalf("%s: byte %d outside the Data runs is %#x", f.Name, i, content[i])
			}
		}
	}
	if holes == 0 && !flat {
		t.Fatalf("%s: no holes: the test proves less", f.Name)
	}
	exts, err := extents(f.Runs, f.Size)(0, f.Size)
	if err != nil {
		t.Fatal(err)
	}
	var at int64
	for _, e := range exts {
		for i := at; i < at+e.Length; i++ {
			if data[i] == e.Zero {
				t.Fatalf("%s: extent at %d %+v disagrees with the map at %d", f.Name, at, e, i)
			}
		}
		at += e.Length
	}
	if at != f.Size {
		t.Fatalf("%s: extents cover %d of %d bytes", f.Name, at, f.Size)
	}
}

// TestDataIsReaderAt: the disk and data-file views pass testing/iotest's
// io.ReaderAt checks (no cursor, short reads only with an error).
func TestDataIsReaderAt(t *testing.T) {
	w, _ := openFixture(t, filepath.Join(testdata, "kms-snapshot-memory"))
	for _, name := range []string{"fixture.raw", "fixture@1.raw", "fixture.nvram", "fixture.vmx"} {
		f := w.File(name)
		// The first 192 KiB: partition table, data and a hole (iotest
		// reads byte by byte in places: keep it small).
		content := readAll(t, f)[:min(f.Size, 192<<10)]
		if err := iotest.TestReader(io.NewSectionReader(f.Data, 0, int64(len(content))), content); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestDamagedGrain: a streamOptimized disk with a flipped byte in one
// compressed grain opens; reads of that grain fail with the vmdk's
// ErrCorrupt naming the file, other reads of the same disk work.
func TestDamagedGrain(t *testing.T) {
	dir := filepath.Join(testdata, "neg-flip-grain-stream")
	w, m := openFixture(t, dir)
	f := w.File("fixture.raw")
	var bad, good int
	buf := make([]byte, 64<<10)
	for _, r := range f.Runs {
		if r.State != vmdk.Data {
			continue
		}
		for off := r.Off; off < r.Off+r.Len; off += int64(len(buf)) {
			n := min(int64(len(buf)), r.Off+r.Len-off)
			if _, err := f.Data.ReadAt(buf[:n], off); err != nil {
				if !errors.Is(err, vmdk.ErrCorrupt) || !strings.Contains(err.Error(), "fixture.vmdk") {
					t.Fatalf("read at %d: %v, want vmdk.ErrCorrupt naming the file", off, err)
				}
				bad++
			} else {
				good++
			}
		}
	}
	if bad == 0 || good == 0 {
		t.Fatalf("%d failed and %d good grain reads (tamper %+v): want some of each", bad, good, m.Tamper)
	}
}

// TestWrongKeyNoView: a wrong passphrase fails in vm.OpenVM
// (keysafe.ErrWrongKey) and a VM opened without keys gives no view.
func TestWrongKeyNoView(t *testing.T) {
	dir := filepath.Join(testdata, "neg-wrong-passphrase")
	m, err := fixtures.LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = vm.OpenVM(context.Background(), filepath.Join(dir, fixtures.VMDir), &vm.Options{Resolver: keys.NewResolver(sources(t, dir, m)...)})
	if !errors.Is(err, keysafe.ErrWrongKey) {
		t.Fatalf("OpenVM: %v, want ErrWrongKey", err)
	}
	v, err := vm.OpenVM(context.Background(), filepath.Join(dir, fixtures.VMDir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := New(v, nil); !errors.Is(err, ErrNoKeys) {
		t.Fatalf("New on a locked VM: %v, want ErrNoKeys", err)
	}
}

// TestGeneratedKinds: generated fixtures of every disk kind and provider,
// with a snapshot, show the manifest's disk and base disk.
func TestGeneratedKinds(t *testing.T) {
	for i, disk := range []string{vmdk.SubformatMonolithicSparse, vmdk.SubformatMonolithicFlat, vmdk.SubformatStreamOptimized, vmdk.SubformatTwoGbMaxExtentSparse} {
		provider := []string{fixtures.ProviderPassphrase, fixtures.ProviderKMS, fixtures.ProviderNKP, fixtures.ProviderKMS}[i]
		t.Run(disk, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "fx")
			fx, err := fixtures.Generate(dir, fixtures.Recipe{Provider: provider, Disk: disk, Size: 3 << 20, Snapshot: true, Memory: i%2 == 0, Seed: uint64(500 + i)})
			if err != nil {
				t.Fatal(err)
			}
			defer fx.Close()
			w, m := openFixture(t, dir)
			if got := sum(readAll(t, w.File("fixture.raw"))); got != m.SHA256.Disk {
				t.Fatalf("disk %s, want %s", got, m.SHA256.Disk)
			}
			if got := sum(readAll(t, w.File("fixture@1.raw"))); got != m.SHA256.BaseDisk {
				t.Fatalf("base %s, want %s", got, m.SHA256.BaseDisk)
			}
		})
	}
}

func TestSanitize(t *testing.T) {
	long := strings.Repeat("é", 150) // 300 bytes
	for in, want := range map[string]string{
		"fixture.vmdk":  "fixture.vmdk",
		"a/b":           "a_b",
		"x\x00y\nz":     "x_y_z",
		"bad\xffutf8":   "bad_utf8",
		"..":            "_..",
		"":              "_",
		long:            strings.Repeat("é", 100),
		"snap shot (1)": "snap shot (1)",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClaims(t *testing.T) {
	c := newClaims()
	if err := c.claim("Disk.raw", "a"); err != nil {
		t.Fatal(err)
	}
	if err := c.claim("disk.RAW", "b"); !errors.Is(err, ErrNameClash) {
		t.Fatalf("second claim: %v, want ErrNameClash", err)
	}
}

// TestSnapshotNumbers: a .vmsd that names every parent link gives their
// uids; one that does not, positions from the base.
func TestSnapshotNumbers(t *testing.T) {
	f, err := vmx.ParseBytes([]byte(`.encoding = "UTF-8"
snapshot0.uid = "7"
snapshot0.displayName = "before update"
snapshot0.numDisks = "2"
snapshot0.disk0.fileName = "sub/disk.vmdk"
snapshot0.disk0.node = "scsi0:0"
snapshot0.disk1.fileName = "other.vmdk"
snapshot0.disk1.node = "scsi0:1"
snapshot1.uid = "9"
snapshot1.displayName = "after"
snapshot1.disk0.fileName = "disk-000001.vmdk"
snapshot1.disk0.node = "scsi0:0"
snapshot5000.uid = "3"
snapshot2.uid = "junk"
`))
	if err != nil {
		t.Fatal(err)
	}
	snaps := parseVMSD(f)
	want := []vmsdSnapshot{
		{uid: 7, displayName: "before update", file: "disk.vmdk", node: "scsi0:0"},
		{uid: 7, displayName: "before update", file: "other.vmdk", node: "scsi0:1"},
		{uid: 9, displayName: "after", file: "disk-000001.vmdk", node: "scsi0:0"},
	}
	if !slices.Equal(snaps, want) {
		t.Fatalf("parseVMSD: %+v, want %+v", snaps, want)
	}
	if s, ok := findSnapshot(snaps, "scsi0:0", "/vm/DISK.VMDK"); !ok || s.uid != 7 {
		t.Fatalf("findSnapshot: %+v %v", s, ok)
	}
	if _, ok := findSnapshot(snaps, "scsi0:1", "/vm/disk.vmdk"); ok {
		t.Fatal("findSnapshot matched another device's disk")
	}
}

// FuzzParseVMSD: any .vmsd text parses without panic into snapshots with
// positive uids and plain file names.
func FuzzParseVMSD(f *testing.F) {
	f.Add([]byte("snapshot0.uid = \"1\"\nsnapshot0.disk0.fileName = \"a.vmdk\"\nsnapshot0.disk0.node = \"scsi0:0\"\n"))
	f.Add([]byte("snapshot999999999999999999.uid = \"1\"\nsnapshot1.disk-1.fileName = \"x\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 8<<10 {
			return
		}
		vf, err := vmx.ParseBytes(b)
		if err != nil {
			return
		}
		for _, s := range parseVMSD(vf) {
			if s.uid <= 0 || s.file == "" || strings.ContainsRune(s.file, filepath.Separator) {
				t.Fatalf("bad snapshot %+v", s)
			}
		}
	})
}

// TestExtentsPrefix: a map with more runs than one answer holds gives a
// prefix of at most maxExtents extents; asking again from where it ended
// goes on, and the whole answers agree with the map byte for byte.
func TestExtentsPrefix(t *testing.T) {
	const n = maxExtents + 100
	var runs []vmdk.Run
	for i := range n {
		st := vmdk.Data
		if i%3 == 1 {
			st = vmdk.Zero
		}
		runs = append(runs, vmdk.Run{Off: int64(i) * 1024, Len: 512, State: st})
	}
	size := int64(n) * 1024
	f := extents(runs, size)
	var at int64
	calls := 0
	for at < size {
		exts, err := f(at, size-at)
		if err != nil || len(exts) == 0 || len(exts) > maxExtents {
			t.Fatalf("extents(%d): %d extents, %v", at, len(exts), err)
		}
		for _, e := range exts {
			for off := at; off < at+e.Length; off += 512 {
				i := off / 1024
				hole := off%1024 != 0
				zero := hole || runs[i].State == vmdk.Zero
				if e.Hole != hole || e.Zero != zero {
					t.Fatalf("offset %d: extent %+v, want hole %v zero %v", off, e, hole, zero)
				}
			}
			at += e.Length
		}
		calls++
	}
	if at != size || calls < 2 {
		t.Fatalf("covered %d of %d in %d calls", at, size, calls)
	}
	// A range inside one run, and one past the last run.
	if exts, _ := f(100, 10); len(exts) != 1 || exts[0] != (nbd.Extent{Length: 10}) {
		t.Fatalf("inside a run: %+v", exts)
	}
	if exts, _ := extents(runs[:1], 4096)(1024, 3072); len(exts) != 1 || exts[0] != (nbd.Extent{Length: 3072, Hole: true, Zero: true}) {
		t.Fatalf("after the last run: %+v", exts)
	}
}

func TestDescription(t *testing.T) {
	if got := description("disk scsi0:0 of a/b.vmdk\n\xff"); got != "disk scsi0:0 of a/b.vmdk__" {
		t.Fatalf("description: %q", got)
	}
	if got := description(strings.Repeat("é", 400)); len(got) > maxDescription || !utf8.ValidString(got) {
		t.Fatalf("long description: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
}

// TestMountFilesAndExports: the FUSE files list only Data runs as
// allocated (Zero runs read as zeros without Data), the exports are the
// disk images under the same names, the first disk is the default.
func TestMountFilesAndExports(t *testing.T) {
	w, _ := openFixture(t, filepath.Join(testdata, "nkp-snapshot"))
	mf := w.MountFiles()
	if len(mf) != len(w.Files) {
		t.Fatalf("%d mount files for %d view files", len(mf), len(w.Files))
	}
	for i, f := range mf {
		v := w.Files[i]
		if f.Name != v.Name || f.Size != v.Size || (v.Runs == nil) != (f.Allocated == nil) {
			t.Fatalf("mount file %+v for %+v", f, v)
		}
		var want int64
		for _, r := range v.Runs {
			if r.State == vmdk.Data {
				want += r.Len
			}
		}
		var got int64
		for _, r := range f.Allocated {
			got += r.Len
		}
		if v.Runs != nil && got != want {
			t.Fatalf("%s: %d allocated bytes, %d Data bytes in the map", f.Name, got, want)
		}
	}
	ex := w.Exports()
	if len(ex) != 2 || ex[0].Name != "fixture.raw" || ex[1].Name != "fixture@1.raw" || w.DefaultExport() != "fixture.raw" || ex[0].Extents == nil {
		t.Fatalf("exports %+v, default %q", ex, w.DefaultExport())
	}
}

// TestBrokenDataFileLeftOut: with vm.Options.KeepGoing (as mount and serve
// open VMs), a data file whose container header is damaged is left out of
// the view with a warning (in the report too); the disks are shown.
func TestBrokenDataFileLeftOut(t *testing.T) {
	src := filepath.Join(testdata, "passphrase-monolithicSparse")
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	nv := filepath.Join(dir, fixtures.VMDir, "fixture.nvram")
	b, err := os.ReadFile(nv)
	if err != nil {
		t.Fatal(err)
	}
	b[4] = 0x7f // header version
	if err := os.WriteFile(nv, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := fixtures.LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	res := keys.NewResolver(sources(t, dir, m)...)
	if _, err := vm.OpenVM(context.Background(), filepath.Join(dir, fixtures.VMDir), &vm.Options{Resolver: res}); !errors.Is(err, keysafe.ErrUnsupported) && !errors.Is(err, keysafe.ErrCorrupt) {
		t.Fatalf("OpenVM without KeepGoing: %v, want the header's error", err)
	}
	v, err := vm.OpenVM(context.Background(), filepath.Join(dir, fixtures.VMDir), &vm.Options{Resolver: res, KeepGoing: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	w, err := New(v, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if w.File("fixture.nvram") != nil || w.File("fixture.raw") == nil || len(w.Warnings) != 1 ||
		!strings.Contains(w.Warnings[0], "fixture.nvram") || !slices.Contains(w.Report.Warnings, w.Warnings[0]) {
		t.Fatalf("files %q, warnings %q", names(w), w.Warnings)
	}
}
