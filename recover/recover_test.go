package recover

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/vm"
	"github.com/vmcrypt/vmcrypt/vmdk"
	"github.com/vmcrypt/vmcrypt/vmdk/outfile"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// genFixture makes a fixture VM and the key sources its secrets give.
func genFixture(t testing.TB, r fixtures.Recipe) (*fixtures.Fixture, []keys.Source) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fx")
	fx, err := fixtures.Generate(dir, r)
	if err != nil {
		t.Fatal(err)
	}
	return fx, fixtureSources(t, fx)
}

func fixtureSources(t testing.TB, fx *fixtures.Fixture) []keys.Source {
	t.Helper()
	m := fx.Manifest
	var srcs []keys.Source
	if m.Secrets.PassphraseFile != "" {
		b, err := os.ReadFile(filepath.Join(fx.Dir, m.Secrets.PassphraseFile))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, keys.NewPassphrase(bytes.TrimSuffix(b, []byte("\n"))))
	}
	if m.Secrets.KEKFile != "" {
		k, err := keys.OpenKEKFile(filepath.Join(fx.Dir, m.Secrets.KEKFile))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, k)
	}
	if m.Secrets.NKPBackup != "" {
		pw, _ := os.ReadFile(filepath.Join(fx.Dir, m.Secrets.NKPPasswordFile))
		s, err := keys.OpenNKPBackup(filepath.Join(fx.Dir, m.Secrets.NKPBackup), bytes.TrimSuffix(pw, []byte("\n")))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, s)
	}
	return srcs
}

// snapshotDir returns sha256 of every file under dir (to prove inputs are
// untouched).
func snapshotDir(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		out[p] = fileSum(t, p)
		return nil
	})
	return out
}

func fileSum(t testing.TB, p string) string {
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil))
}

func listDir(t testing.TB, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var n []string
	for _, e := range ents {
		n = append(n, e.Name())
	}
	sort.Strings(n)
	return n
}

// contentSum reads a disk through the vmdk reader (or a raw file) and
// returns the sha256 of its virtual content.
func contentSum(t testing.TB, path string) string {
	t.Helper()
	if strings.HasSuffix(path, ".img") {
		return fileSum(t, path)
	}
	d, err := vmdk.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Encrypted() {
		t.Fatalf("%s still carries encryption marks", path)
	}
	h := sha256.New()
	io.Copy(h, io.NewSectionReader(d, 0, d.Size()))
	return hex.EncodeToString(h.Sum(nil))
}

// Every key provider and every disk kind recovers to exactly the plaintext.
func TestRecoverFixtures(t *testing.T) {
	type tc struct {
		provider, disk string
		snapshot       bool
		format         string
		flatten        bool
	}
	cases := []tc{
		{fixtures.ProviderPassphrase, vmdk.SubformatMonolithicSparse, false, FormatVMDK, false},
		{fixtures.ProviderPassphrase, vmdk.SubformatMonolithicFlat, false, FormatRaw, false},
		{fixtures.ProviderKMS, vmdk.SubformatStreamOptimized, false, FormatVMDK, false},
		{fixtures.ProviderKMS, vmdk.SubformatTwoGbMaxExtentSparse, false, FormatRaw, false},
		{fixtures.ProviderNKP, vmdk.SubformatMonolithicSparse, true, FormatVMDK, false},
		{fixtures.ProviderNKP, vmdk.SubformatTwoGbMaxExtentSparse, true, FormatVMDK, true},
		{fixtures.ProviderPassphrase, vmdk.SubformatStreamOptimized, true, FormatRaw, false},
		{fixtures.ProviderKMS, vmdk.SubformatMonolithicFlat, true, FormatVMDK, false},
	}
	partial := len(cases) // the next case: Workstation partial encryption (plain disk)
	cases = append(cases, tc{fixtures.ProviderPassphrase, vmdk.SubformatMonolithicSparse, false, FormatVMDK, false})
	for i, c := range cases {
		name := strings.Join([]string{c.provider, c.disk, map[bool]string{true: "snapshot"}[c.snapshot], c.format, map[bool]string{true: "flatten"}[c.flatten]}, "-")
		t.Run(name, func(t *testing.T) {
			fx, srcs := genFixture(t, fixtures.Recipe{Provider: c.provider, Disk: c.disk, Snapshot: c.snapshot, Size: 3 << 20, Seed: uint64(100 + i), VTPM: i%2 == 0, Partial: i == partial})
			vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
			before := snapshotDir(t, vmDir)
			out := filepath.Join(t.TempDir(), "out")
			rep, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), Format: c.format, Flatten: c.flatten, Jobs: 2})
			if err != nil {
				t.Fatal(err)
			}
			if after := snapshotDir(t, vmDir); !equalMaps(before, after) {
				t.Fatal("input files changed")
			}
			m := fx.Manifest
			if len(rep.Disks) != 1 || rep.Disks[0].ContentSHA256 != m.SHA256.Disk {
				t.Fatalf("report disk sha %+v, want %s", rep.Disks, m.SHA256.Disk)
			}
			diskOut := filepath.Join(out, rep.Disks[0].Output)
			if got := contentSum(t, diskOut); got != m.SHA256.Disk {
				t.Fatalf("recovered disk sha256 %s, want %s", got, m.SHA256.Disk)
			}
			if c.format == FormatVMDK && !c.flatten && c.snapshot {
				// The chain is kept: the base alone is the base plaintext.
				if got := contentSum(t, filepath.Join(out, fixtures.DefaultName+".vmdk")); got != m.SHA256.BaseDisk {
					t.Fatalf("base link sha256 %s, want %s", got, m.SHA256.BaseDisk)
				}
			}
			if got := fileSum(t, filepath.Join(out, fixtures.DefaultName+".nvram")); got != m.SHA256.NVRAM {
				t.Fatal("nvram differs")
			}
			if i != partial {
				if got := fileSum(t, filepath.Join(out, fixtures.DefaultName+".vswp")); got != m.SHA256.VSWP {
					t.Fatal("vswp differs")
				}
			} else if rep.Disks[0].Links[0].Encrypted {
				t.Fatal("partial encryption: the plain disk is reported encrypted")
			}
			// The VMX: plain, no encryption lines, the settings kept.
			vb, err := os.ReadFile(filepath.Join(out, fixtures.DefaultName+".vmx"))
			if err != nil {
				t.Fatal(err)
			}
			f, err := vmx.ParseBytes(vb)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"encryption.keySafe", "encryption.data", "dataFileKey", "cryptoState"} {
				if _, ok := f.Get(k); ok {
					t.Fatalf("recovered VMX still has %s", k)
				}
			}
			if !bytes.Contains(vb, []byte("displayName")) || (c.format == FormatVMDK && len(vmx.Disks(f)) != 1) ||
				!bytes.Contains(vb, []byte(rep.Disks[0].Output)) {
				t.Fatalf("recovered VMX lost its settings:\n%s", vb)
			}
			// Written descriptors carry no encryption marks.
			for _, n := range listDir(t, out) {
				b, _ := os.ReadFile(filepath.Join(out, n))
				if strings.HasSuffix(n, ".vmdk") && (bytes.Contains(b, []byte("encryptionKeys")) || bytes.Contains(b, []byte("vmwarevmcrypt"))) {
					t.Fatalf("%s still has encryption marks", n)
				}
			}
			// The report lists every output with its real sha256.
			var r2 Report
			rb, err := os.ReadFile(filepath.Join(out, ReportName))
			if err != nil || json.Unmarshal(rb, &r2) != nil {
				t.Fatalf("report: %v", err)
			}
			if len(r2.Outputs) != len(listDir(t, out))-1 {
				t.Fatalf("report lists %d outputs, folder has %v", len(r2.Outputs), listDir(t, out))
			}
			for _, o := range r2.Outputs {
				if got := fileSum(t, filepath.Join(out, o.File)); got != o.SHA256 {
					t.Fatalf("report sha256 of %s is %s, file has %s", o.File, o.SHA256, got)
				}
			}
			if r2.KeySafe.Source == "" || len(r2.Notes) == 0 {
				t.Fatalf("report lacks key source or modelled-format notes: %+v", r2)
			}
			// A second run refuses existing outputs, and writes nothing.
			before2 := snapshotDir(t, out)
			if _, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), Format: c.format, Flatten: c.flatten}); !errors.Is(err, ErrOutputExists) {
				t.Fatalf("second run: %v, want ErrOutputExists", err)
			}
			if !equalMaps(before2, snapshotDir(t, out)) {
				t.Fatal("refused run changed the output folder")
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Negative fixtures: each fails with its sentinel and writes nothing.
func TestRecoverNegatives(t *testing.T) {
	cases := []struct {
		recipe fixtures.Recipe
		want   error
	}{
		{fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Negative: fixtures.NegWrongPassphrase}, keysafe.ErrWrongKey},
		{fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Negative: fixtures.NegFlipKeySafeMAC}, keysafe.ErrWrongKey},
		{fixtures.Recipe{Provider: fixtures.ProviderKMS, Negative: fixtures.NegOtherKEK}, keysafe.ErrKeyNotFound},
		{fixtures.Recipe{Provider: fixtures.ProviderNKP, Negative: fixtures.NegOtherKDK}, keysafe.ErrKeyNotFound},
		{fixtures.Recipe{Provider: fixtures.ProviderKMS, Disk: vmdk.SubformatStreamOptimized, Negative: fixtures.NegFlipGrain}, vmdk.ErrCorrupt},
		{fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Negative: fixtures.NegTruncateDisk}, vmdk.ErrCorrupt},
	}
	for i, c := range cases {
		t.Run(c.recipe.Provider+"-"+c.recipe.Negative, func(t *testing.T) {
			c.recipe.Seed = uint64(200 + i)
			c.recipe.Size = 2 << 20
			fx, srcs := genFixture(t, c.recipe)
			vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
			before := snapshotDir(t, vmDir)
			out := filepath.Join(t.TempDir(), "out")
			os.Mkdir(out, 0o755)
			_, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...)})
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want %v", err, c.want)
			}
			if n := listDir(t, out); len(n) != 0 {
				t.Fatalf("output folder holds %v", n)
			}
			if !equalMaps(before, snapshotDir(t, vmDir)) {
				t.Fatal("input files changed")
			}
			var kn *keysafe.KeyNotFoundError
			if errors.Is(c.want, keysafe.ErrKeyNotFound) && (!errors.As(err, &kn) || kn.Provider == "" || kn.KeyID == "") {
				t.Fatalf("missing key error does not name provider and key id: %v", err)
			}
		})
	}
}

// A flipped data-file MAC is corruption; IgnoreMAC recovers.
func TestRecoverDataFileMAC(t *testing.T) {
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Seed: 300})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	nv := filepath.Join(vmDir, fixtures.DefaultName+".nvram")
	b, _ := os.ReadFile(nv)
	b[len(b)-1] ^= 1 // last MAC byte of the last page
	os.WriteFile(nv, b, 0o644)
	out := filepath.Join(t.TempDir(), "out")
	_, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...)})
	if !errors.Is(err, datafile.ErrMACMismatch) {
		t.Fatalf("err %v", err)
	}
	if n := listDir(t, out); len(n) != 0 {
		t.Fatalf("output folder holds %v", n)
	}
	rep, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), IgnoreMAC: true})
	if err != nil {
		t.Fatal(err)
	}
	if fileSum(t, filepath.Join(out, fixtures.DefaultName+".nvram")) != fx.Manifest.SHA256.NVRAM {
		t.Fatal("nvram differs")
	}
	found := false
	for _, n := range rep.Notes {
		found = found || n == vm.NoteMACSkip
	}
	if !found {
		t.Fatal("report does not say the MAC was skipped")
	}
}

// Cancelling half-way (from the progress callback) leaves no output file.
func TestRecoverCancel(t *testing.T) {
	for _, format := range []string{FormatRaw, FormatVMDK} {
		fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Size: 8 << 20, Seed: 400})
		vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
		out := filepath.Join(t.TempDir(), "out")
		ctx, cancel := context.WithCancel(context.Background())
		var seen bool
		_, err := Recover(ctx, vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), Format: format, Jobs: 2,
			Progress: func(p Progress) {
				if p.Total > 0 && p.Done > p.Total/4 && strings.HasSuffix(p.File, filepathExt(format)) {
					seen = true
					cancel()
				}
			}})
		if !errors.Is(err, context.Canceled) || !seen {
			t.Fatalf("%s: err %v (cancel seen %v), want context.Canceled", format, err, seen)
		}
		if n := listDir(t, out); len(n) != 0 {
			t.Fatalf("%s: output folder holds %v", format, n)
		}
	}
}

func filepathExt(format string) string {
	if format == FormatRaw {
		return ".img"
	}
	return ".vmdk"
}

// A snapshot chain flattens to what qemu-img convert -O raw gives for the
// same chain written plain.
func TestFlattenMatchesQemu(t *testing.T) {
	qemu, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatal("qemu-img is needed (make peers)")
	}
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderNKP, Snapshot: true, Size: 4 << 20, Seed: 500})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	// The same chain written plain, straight from the fixture's plaintexts.
	chainDir := t.TempDir()
	toRuns := func(a [][2]int64) []vmdk.Run {
		var r []vmdk.Run
		for _, x := range a {
			r = append(r, vmdk.Run{Off: x[0], Len: x[1], State: vmdk.Data})
		}
		return r
	}
	if err := vmdk.Write(context.Background(), filepath.Join(chainDir, "base.vmdk"), fx.Base, fx.Base.Size(), toRuns(fx.Base.Allocated()), &vmdk.WriteOptions{CID: 7}); err != nil {
		t.Fatal(err)
	}
	if err := vmdk.Write(context.Background(), filepath.Join(chainDir, "top.vmdk"), fx.Disk, fx.Disk.Size(), toRuns(fx.Delta.Allocated()),
		&vmdk.WriteOptions{CID: 8, Parent: &vmdk.ParentInfo{CID: 7, FileNameHint: "base.vmdk"}}); err != nil {
		t.Fatal(err)
	}
	qraw := filepath.Join(t.TempDir(), "q.raw")
	if out, err := exec.Command(qemu, "convert", "-O", "raw", filepath.Join(chainDir, "top.vmdk"), qraw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	flatOut := filepath.Join(t.TempDir(), "flat")
	rep2, err := Recover(context.Background(), vmDir, flatOut, &Options{Resolver: keys.NewResolver(srcs...), Format: FormatRaw})
	if err != nil {
		t.Fatal(err)
	}
	a, b := fileSum(t, qraw), fileSum(t, filepath.Join(flatOut, rep2.Disks[0].Output))
	if a != b || a != fx.Manifest.SHA256.Disk {
		t.Fatalf("qemu %s, flatten %s, plaintext %s", a, b, fx.Manifest.SHA256.Disk)
	}
	// The chain kept as plain VMDKs reads the same in qemu.
	chainOut := filepath.Join(t.TempDir(), "chain")
	rep, err := Recover(context.Background(), vmDir, chainOut, &Options{Resolver: keys.NewResolver(srcs...)})
	if err != nil {
		t.Fatal(err)
	}
	qraw1 := filepath.Join(t.TempDir(), "q1.raw")
	if out, err := exec.Command(qemu, "convert", "-O", "raw", filepath.Join(chainOut, rep.Disks[0].Output), qraw1).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	if fileSum(t, qraw1) != a {
		t.Fatal("recovered chain differs from qemu's view of the plain chain")
	}
	// And the flattened VMDK too.
	flatV := filepath.Join(t.TempDir(), "flatv")
	rep3, err := Recover(context.Background(), vmDir, flatV, &Options{Resolver: keys.NewResolver(srcs...), Flatten: true})
	if err != nil {
		t.Fatal(err)
	}
	qraw2 := filepath.Join(t.TempDir(), "q2.raw")
	if out, err := exec.Command(qemu, "convert", "-O", "raw", filepath.Join(flatV, rep3.Disks[0].Output), qraw2).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v\n%s", err, out)
	}
	if fileSum(t, qraw2) != a {
		t.Fatal("flattened VMDK differs from qemu's view of the chain")
	}
}

// A suspended VM's .vmss and a memory image .vmem, encrypted with the
// VM's dataFileKey, come back plain; a plain .vmem is copied as it is.
func TestRecoverSuspendAndMemoryFiles(t *testing.T) {
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Seed: 310})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	vf, err := vmx.ReadFile(filepath.Join(vmDir, fixtures.DefaultName+".vmx"))
	if err != nil {
		t.Fatal(err)
	}
	ks, err := vf.KeySafe()
	if err != nil {
		t.Fatal(err)
	}
	ck, _, err := keys.NewResolver(srcs...).Open(context.Background(), ks)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := vmx.Decrypt(vf, ck)
	if err != nil {
		t.Fatal(err)
	}
	dfk, err := dec.Settings.DataFileKey()
	if err != nil || dfk == nil {
		t.Fatalf("dataFileKey: %v %v", dfk, err)
	}
	plain := map[string][]byte{}
	for i, name := range []string{fixtures.DefaultName + "-abc123.vmss", fixtures.DefaultName + "-Snapshot1.vmem", "plain-Snapshot2.vmem"} {
		b := make([]byte, 3*4096+1000*(i+1)) // a partial last page too
		fixtures.NewStream(uint64(i), "memory").Read(b)
		plain[name] = b
		var enc bytes.Buffer
		if strings.HasPrefix(name, "plain") {
			enc.Write(b)
		} else if err := datafile.Encrypt(&enc, bytes.NewReader(b), int64(len(b)), dfk.Bytes, 2, fixtures.NewStream(9, "iv")); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(enc.Bytes(), b[:64]) != strings.HasPrefix(name, "plain") {
			t.Fatalf("%s: encryption did not hide the content", name)
		}
		if err := os.WriteFile(filepath.Join(vmDir, name), enc.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	before := snapshotDir(t, vmDir)
	out := filepath.Join(t.TempDir(), "out")
	rep, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...)})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range plain {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("%s: recovered %d bytes differ from the %d plain bytes", name, len(got), len(b))
		}
		sum := sha256.Sum256(b)
		found := false
		for _, o := range rep.Outputs {
			found = found || (o.File == name && o.SHA256 == hex.EncodeToString(sum[:]))
		}
		if !found {
			t.Fatalf("%s: not in the report's outputs with its sha256", name)
		}
		enc := !strings.HasPrefix(name, "plain")
		found = false
		for _, f := range rep.DataFiles {
			found = found || (f.Output == name && f.Encrypted == enc && (f.MAC == datafile.MACModel) == enc)
		}
		if !found {
			t.Fatalf("%s: not in the report's data files as encrypted=%v", name, enc)
		}
	}
	if !equalMaps(before, snapshotDir(t, vmDir)) {
		t.Fatal("an input file changed")
	}
}

// A .vmdk of the folder that no disk of the VMX reads (a snapshot branch
// named only in the .vmsd) is left behind with a warning naming it; the
// files of the chains (deltas, extents) are not named.
func TestRecoverWarnsUnusedDisk(t *testing.T) {
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderKMS, Disk: vmdk.SubformatTwoGbMaxExtentSparse, Snapshot: true, Seed: 320})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	rep, err := Recover(context.Background(), vmDir, filepath.Join(t.TempDir(), "a"), &Options{Resolver: keys.NewResolver(srcs...)})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range rep.Warnings {
		if strings.Contains(w, "is not recovered") {
			t.Fatalf("warning on a chain file: %s", w)
		}
	}
	b, err := os.ReadFile(filepath.Join(vmDir, fixtures.DefaultName+"-000001.vmdk"))
	if err != nil {
		t.Fatal(err)
	}
	branch := fixtures.DefaultName + "-000002.vmdk"
	if err := os.WriteFile(filepath.Join(vmDir, branch), b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "b")
	rep, err = Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...)})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, w := range rep.Warnings {
		if strings.Contains(w, "is not recovered") {
			n++
			if !strings.HasPrefix(w, branch+" is not recovered") {
				t.Fatalf("warning %q does not name %s", w, branch)
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d warnings about unused disks, want 1: %q", n, rep.Warnings)
	}
	if _, err := os.Stat(filepath.Join(out, branch)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s was written: %v", branch, err)
	}
}

// The VM folder itself as the output folder is refused, --force or not:
// the encrypted originals are never replaced.
func TestRecoverOutputIsInput(t *testing.T) {
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Snapshot: true, Seed: 330})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	before := snapshotDir(t, vmDir)
	for _, out := range []string{vmDir, vmDir + "/.", filepath.Join(vmDir, "..", fixtures.VMDir)} {
		for _, force := range []bool{false, true} {
			_, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), Force: force})
			if !errors.Is(err, ErrOutputIsInput) {
				t.Fatalf("-o %s force=%v: %v, want ErrOutputIsInput", out, force, err)
			}
		}
	}
	if !equalMaps(before, snapshotDir(t, vmDir)) {
		t.Fatal("an input changed")
	}
	// A new folder inside the VM folder is fine.
	if _, err := Recover(context.Background(), vmDir, filepath.Join(vmDir, "plain"), &Options{Resolver: keys.NewResolver(srcs...)}); err != nil {
		t.Fatal(err)
	}
}

// With --force, a failure while moving the new files into place puts the
// previous recovery back as it was; a folder where an output goes is
// refused before any work.
func TestRecoverForceKeepsOldOnFailure(t *testing.T) {
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, VTPM: true, Seed: 340})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...)}); err != nil {
		t.Fatal(err)
	}
	old := snapshotDir(t, out)
	boom := errors.New("disk unplugged")
	rename = func(from, to string) error {
		if filepath.Base(to) == ReportName && !strings.Contains(from, ".replaced") && !strings.Contains(to, ".replaced") {
			return boom
		}
		return os.Rename(from, to)
	}
	defer func() { rename = os.Rename }()
	_, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), Force: true})
	if !errors.Is(err, boom) {
		t.Fatalf("failing publish: %v", err)
	}
	if now := snapshotDir(t, out); !equalMaps(old, now) {
		t.Fatalf("the previous recovery changed:\nbefore %v\nafter  %v", old, now)
	}
	if names := listDir(t, out); len(names) != len(old) {
		t.Fatalf("output folder holds %v", names)
	}
	rename = os.Rename
	os.Remove(filepath.Join(out, fixtures.DefaultName+".vswp"))
	os.Mkdir(filepath.Join(out, fixtures.DefaultName+".vswp"), 0o755)
	delete(old, filepath.Join(out, fixtures.DefaultName+".vswp"))
	if _, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), Force: true}); !errors.Is(err, ErrOutputExists) {
		t.Fatalf("a folder named like an output: %v", err)
	}
	if !equalMaps(old, snapshotDir(t, out)) {
		t.Fatal("refused run changed the output folder")
	}
}

// Data files that are symbolic links to files elsewhere are unsafe paths
// (left behind, by name) unless allowed; then they are recovered like the
// others, and the folder they point into is an input folder too.
func TestRecoverSymlinkedDataFiles(t *testing.T) {
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, VTPM: true, Seed: 350})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	store := t.TempDir()
	for _, ext := range []string{".nvram", ".vswp"} {
		name := fixtures.DefaultName + ext
		if err := os.Rename(filepath.Join(vmDir, name), filepath.Join(store, name)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join(store, name), filepath.Join(vmDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// Links out of the VM folder are unsafe paths: left behind, by name,
	// unless allowed.
	out := filepath.Join(t.TempDir(), "out")
	// The .nvram of this vTPM VM is then missing: refused, unless allowed.
	if _, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...)}); !errors.Is(err, ErrVTPMNoNVRAM) {
		t.Fatalf("vTPM VM without its .nvram: %v, want ErrVTPMNoNVRAM", err)
	}
	rep, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), AllowMissingNVRAM: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Join(rep.Warnings, "\n"); !strings.Contains(n, fixtures.DefaultName+".nvram is not recovered") || !strings.Contains(n, "allow unsafe paths") {
		t.Fatalf("no warning about the linked files: %q", rep.Warnings)
	}
	if _, err := os.Stat(filepath.Join(out, fixtures.DefaultName+".nvram")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a link out of the folder was followed: %v", err)
	}
	out = filepath.Join(t.TempDir(), "out")
	if _, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), VMDK: &vmdk.OpenOptions{AllowUnsafePaths: true}}); err != nil {
		t.Fatal(err)
	}
	if fileSum(t, filepath.Join(out, fixtures.DefaultName+".nvram")) != fx.Manifest.SHA256.NVRAM ||
		fileSum(t, filepath.Join(out, fixtures.DefaultName+".vswp")) != fx.Manifest.SHA256.VSWP {
		t.Fatal("a symlinked data file was not recovered")
	}
	before := snapshotDir(t, store)
	if _, err := Recover(context.Background(), vmDir, store, &Options{Resolver: keys.NewResolver(srcs...), Force: true, VMDK: &vmdk.OpenOptions{AllowUnsafePaths: true}}); !errors.Is(err, ErrOutputIsInput) {
		t.Fatalf("-o the folder the links point into: %v", err)
	}
	if !equalMaps(before, snapshotDir(t, store)) {
		t.Fatal("an input changed")
	}
}

// The staging folder of a run killed with SIGKILL (no cleanup ran) is
// removed by the next run into the same folder, with a warning; that of a
// run still going (its lock held) is left alone.
func TestRecoverRemovesStaleStage(t *testing.T) {
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Seed: 360})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	out := t.TempDir()
	// A killed run left its folder and lock file, unlocked.
	stale := filepath.Join(out, ".recover"+outfile.Mark+"123")
	if err := os.Mkdir(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(stale, ".lock"), nil, 0o600)
	// A running one holds its lock.
	held, err := outfile.MkdirTemp(out, "recover")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Remove()
	busy := held.Path
	for _, d := range []string{stale, busy} {
		os.WriteFile(filepath.Join(d, ".fixture.vmdk.tmp-1"), []byte("decrypted"), 0o600)
	}
	rep, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale staging folder left: %v", err)
	}
	if _, err := os.Stat(filepath.Join(busy, ".fixture.vmdk.tmp-1")); err != nil {
		t.Fatalf("the folder of a running recover was touched: %v", err)
	}
	found := false
	for _, w := range rep.Warnings {
		found = found || strings.Contains(w, stale) && strings.Contains(w, "interrupted run")
	}
	if !found {
		t.Fatalf("no warning about %s in %q", stale, rep.Warnings)
	}
}

// Flattening a VM with snapshots copies its .vmsd, which then names disks
// that were not written: the report says so. Without --flatten it does not.
func TestRecoverFlattenWarnsSnapshotList(t *testing.T) {
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Snapshot: true, Memory: true, Seed: 370})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	warned := func(flatten bool) bool {
		rep, err := Recover(context.Background(), vmDir, filepath.Join(t.TempDir(), "out"), &Options{Resolver: keys.NewResolver(srcs...), Flatten: flatten})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range rep.Warnings {
			if strings.HasPrefix(w, fixtures.DefaultName+".vmsd is copied but names snapshot disks") {
				return true
			}
		}
		return false
	}
	if !warned(true) {
		t.Fatal("--flatten: no warning about the .vmsd")
	}
	if warned(false) {
		t.Fatal("without --flatten: a warning about the .vmsd")
	}
}

// The extent files the writer will make (NAME-s001.vmdk...) are outputs
// too: one already in OUTDIR is refused before any work, by name.
func TestRecoverClaimsExtentFiles(t *testing.T) {
	fx, srcs := genFixture(t, fixtures.Recipe{Provider: fixtures.ProviderKMS, Disk: vmdk.SubformatTwoGbMaxExtentSparse, Snapshot: true, Seed: 380})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	for _, flatten := range []bool{false, true} {
		out := t.TempDir()
		stale := fixtures.DefaultName + "-s001.vmdk"
		if flatten {
			stale = fixtures.DefaultName + "-000001-s001.vmdk"
		}
		os.WriteFile(filepath.Join(out, stale), []byte("stale"), 0o644)
		_, err := Recover(context.Background(), vmDir, out, &Options{Resolver: keys.NewResolver(srcs...), Flatten: flatten})
		if !errors.Is(err, ErrOutputExists) || !strings.Contains(err.Error(), stale+" already exists") {
			t.Fatalf("flatten=%v: %v", flatten, err)
		}
		if n := listDir(t, out); len(n) != 1 {
			t.Fatalf("flatten=%v: output folder holds %v", flatten, n)
		}
	}
}

// Key-provider pairs of the real bundles' lengths (272 NKP, 288 KMS), made
// by the fixture writer, recover like the model's.
func TestRecoverRealBundleLengths(t *testing.T) {
	for _, c := range []struct {
		provider string
		bundle   int
	}{{fixtures.ProviderNKP, 272}, {fixtures.ProviderKMS, 288}} {
		fx, srcs := genFixture(t, fixtures.Recipe{Provider: c.provider, Bundle: c.bundle, Snapshot: true, Seed: uint64(480 + c.bundle)})
		vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
		v, err := vm.OpenVM(context.Background(), vmDir, &vm.Options{Depth: vm.SettingsOnly})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(v.KeySafe.Pairs()[0].Locked); n != c.bundle {
			t.Fatalf("%s: locked data of %d bytes, want %d", c.provider, n, c.bundle)
		}
		v.Close()
		rep, err := Recover(context.Background(), vmDir, filepath.Join(t.TempDir(), "o"), &Options{Resolver: keys.NewResolver(srcs...)})
		if err != nil {
			t.Fatalf("%s %d: %v", c.provider, c.bundle, err)
		}
		if rep.Disks[0].ContentSHA256 != fx.Manifest.SHA256.Disk {
			t.Fatalf("%s %d: disk content differs", c.provider, c.bundle)
		}
	}
}
