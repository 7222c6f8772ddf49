package scan

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/vmdk"
)

// datastore builds a datastore copy with one VM of each kind and returns
// its root and the fixtures' manifests by folder.
func datastore(t *testing.T) (string, map[string]*fixtures.Manifest) {
	t.Helper()
	root := t.TempDir()
	ms := map[string]*fixtures.Manifest{}
	gen := func(dir string, r fixtures.Recipe) {
		r.Size = fixtures.MinDiskSize
		fx, err := fixtures.Generate(filepath.Join(root, dir), r)
		if err != nil {
			t.Fatal(err)
		}
		ms[dir] = fx.Manifest
	}
	gen("pass", fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicSparse, Snapshot: true, VTPM: true, Seed: 1})
	gen("kms", fixtures.Recipe{Provider: fixtures.ProviderKMS, Disk: vmdk.SubformatTwoGbMaxExtentSparse, Seed: 2})
	gen("nkp", fixtures.Recipe{Provider: fixtures.ProviderNKP, Disk: vmdk.SubformatStreamOptimized, Layout: fixtures.LayoutGPTNTFS, Seed: 3})
	gen("partial", fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatMonolithicFlat, Partial: true, Seed: 4})

	// A plain VM: plain VMX, plain disk, plain .nvram, .vswp and .vmsn.
	plain := filepath.Join(root, "plain")
	os.MkdirAll(plain, 0o755)
	im, _ := fixtures.Content(fixtures.ContentOptions{Size: fixtures.MinDiskSize, Seed: 5})
	writeDisk(t, filepath.Join(plain, "web.vmdk"), im, &vmdk.WriteOptions{})
	os.WriteFile(filepath.Join(plain, "web.vmx"), []byte(".encoding = \"UTF-8\"\ndisplayName = \"web\"\nscsi0:0.fileName = \"web.vmdk\"\n"), 0o644)
	os.WriteFile(filepath.Join(plain, "web.nvram"), bytes.Repeat([]byte("NVRAM"), 100), 0o644)
	os.WriteFile(filepath.Join(plain, "web.vswp"), bytes.Repeat([]byte("swap page"), 1000), 0o644)
	os.WriteFile(filepath.Join(plain, "web-Snapshot1.vmsn"), append([]byte{0xd2, 0xbe, 0xd2, 0xbe}, make([]byte, 100)...), 0o644)
	os.WriteFile(filepath.Join(plain, "web.vmsd"), []byte("snapshot.lastUID = \"1\"\n"), 0o644)

	// A disk whose descriptor claims encryption but whose data is plain.
	liar := filepath.Join(root, "liar")
	os.MkdirAll(liar, 0o755)
	writeDisk(t, filepath.Join(liar, "liar.vmdk"), im, &vmdk.WriteOptions{EncryptionKeys: "vmware:key/list/()", IOFilters: "vmwarevmcrypt"})

	// An orphan flat extent (no descriptor, no VMX) holding GPT + NTFS.
	orphan := filepath.Join(root, "orphan")
	os.MkdirAll(orphan, 0o755)
	gpt, _ := fixtures.Content(fixtures.ContentOptions{Size: fixtures.MinDiskSize, Layout: fixtures.LayoutGPTNTFS, Seed: 6})
	b := make([]byte, gpt.Size())
	gpt.ReadAt(b, 0)
	os.WriteFile(filepath.Join(orphan, "lost-flat.vmdk"), b, 0o644)
	return root, ms
}

func writeDisk(t *testing.T, path string, d fixtures.Disk, o *vmdk.WriteOptions) {
	t.Helper()
	var runs []vmdk.Run
	for _, a := range d.Allocated() {
		runs = append(runs, vmdk.Run{Off: a[0], Len: a[1], State: vmdk.Data})
	}
	if err := vmdk.Write(context.Background(), path, d, d.Size(), runs, o); err != nil {
		t.Fatal(err)
	}
}

func find(t *testing.T, rep *Report, vmx string) VM {
	t.Helper()
	for _, vm := range rep.VMs {
		if vm.VMX == vmx || (vmx == vm.Dir && vm.VMX == "") {
			return vm
		}
	}
	t.Fatalf("VM %s not found", vmx)
	return VM{}
}

func fileOf(t *testing.T, vm VM, path string) File {
	t.Helper()
	for _, f := range vm.Files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("file %s not in VM %s", path, vm.VMX)
	return File{}
}

// hashTree records every file's sha256 and mtime, to prove a scan writes
// nothing.
func hashTree(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			s := sha256.Sum256(b)
			out[p] = string(s[:]) + fi.ModTime().String()
		} else {
			out[p] = "dir"
		}
		return nil
	})
	return out
}

func TestScanDatastore(t *testing.T) {
	root, ms := datastore(t)
	before := hashTree(t, root)
	rep, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	if after := hashTree(t, root); len(after) != len(before) {
		t.Fatal("the scan created or removed files")
	} else {
		for p, h := range before {
			if after[p] != h {
				t.Fatalf("the scan changed %s", p)
			}
		}
	}

	// Encrypted VMs: every file encrypted, with the manifest's keys.
	for _, dir := range []string{"pass", "kms", "nkp"} {
		vm := find(t, rep, dir+"/vm/fixture.vmx")
		if vm.Status != Encrypted || len(vm.Exposed) > 0 {
			t.Errorf("%s: status %s, exposed %v", dir, vm.Status, vm.Exposed)
		}
		if len(vm.Files) != len(ms[dir].Files) {
			t.Errorf("%s: %d files, manifest lists %d", dir, len(vm.Files), len(ms[dir].Files))
		}
		for _, f := range vm.Files {
			if f.Status != Encrypted {
				t.Errorf("%s: %s is %s: %s", dir, f.Path, f.Status, f.Why)
			}
		}
		if len(vm.Keys) != 1 {
			t.Fatalf("%s: keys %v", dir, vm.Keys)
		}
		k, m := vm.Keys[0], ms[dir].Keys
		switch dir {
		case "pass":
			if k.Locker != "phrase" || k.Provider != "passphrase" {
				t.Errorf("pass: key %+v", k)
			}
			if f := fileOf(t, vm, "pass/vm/fixture-000001.vmdk"); f.Parent != "fixture.vmdk" {
				t.Errorf("delta parent %q", f.Parent)
			}
		case "kms":
			if k.Provider != m.Provider || k.KeyID != m.KeyID || k.KDKID != "" {
				t.Errorf("kms: key %+v, manifest %+v", k, m)
			}
		case "nkp":
			if k.Provider != m.Provider || k.KeyID != m.KeyID || k.KDKID != m.KDKID {
				t.Errorf("nkp: key %+v, manifest %+v", k, m)
			}
		}
	}
	// Partial: exposed, naming the plain disk; VMX and nvram encrypted.
	vm := find(t, rep, "partial/vm/fixture.vmx")
	if vm.Status != Exposed || len(vm.Exposed) != 1 || !strings.HasPrefix(vm.Exposed[0], "partial/vm/fixture.vmdk: ") {
		t.Errorf("partial: %s %v", vm.Status, vm.Exposed)
	}
	d := fileOf(t, vm, "partial/vm/fixture.vmdk")
	if names := sigNames(d.Signatures); names != "MBR partition table, ext4" {
		t.Errorf("partial disk signatures %q", names)
	}
	for _, p := range []string{"partial/vm/fixture.vmx", "partial/vm/fixture.nvram"} {
		if f := fileOf(t, vm, p); f.Status != Encrypted {
			t.Errorf("%s: %s", p, f.Status)
		}
	}
	if f := fileOf(t, vm, "partial/vm/fixture-flat.vmdk"); f.Kind != KindExtent || f.Status != Exposed {
		t.Errorf("flat extent of the partial disk: %s %s", f.Kind, f.Status)
	}
	// Plain VM: disk, nvram, swap and snapshot state exposed; vmx and vmsd plain.
	vm = find(t, rep, "plain/web.vmx")
	if vm.Status != Exposed || vm.DisplayName != "web" || len(vm.Exposed) != 4 {
		t.Errorf("plain VM: %s %q %v", vm.Status, vm.DisplayName, vm.Exposed)
	}
	for p, want := range map[string]Status{"plain/web.vmx": Plain, "plain/web.vmsd": Plain, "plain/web.vmdk": Exposed,
		"plain/web.nvram": Exposed, "plain/web.vswp": Exposed, "plain/web-Snapshot1.vmsn": Exposed} {
		if f := fileOf(t, vm, p); f.Status != want {
			t.Errorf("%s: %s, want %s (%s)", p, f.Status, want, f.Why)
		}
	}
	// A descriptor that claims encryption over plain data is exposed.
	vm = find(t, rep, "liar")
	if f := fileOf(t, vm, "liar/liar.vmdk"); f.Status != Exposed || len(f.Signatures) == 0 {
		t.Errorf("liar disk: %s %v", f.Status, f.Signatures)
	}
	// An orphan flat extent with GPT + NTFS is exposed.
	vm = find(t, rep, "orphan")
	if f := fileOf(t, vm, "orphan/lost-flat.vmdk"); f.Status != Exposed || sigNames(f.Signatures) != "protective MBR, GPT, NTFS" {
		t.Errorf("orphan extent: %s %q", f.Status, sigNames(f.Signatures))
	}
	// The fixtures' secrets sit in the tree: reported as key material.
	km := map[string]KeyMaterial{}
	for _, k := range rep.KeyMaterial {
		km[k.Path] = k
	}
	if len(km) != 2 || km["kms/secrets/kek.json"].KeyIDs[0] != ms["kms"].Keys.KeyID || km["nkp/secrets/backup.p12"].KDKIDs[0] != ms["nkp"].Keys.KDKID {
		t.Errorf("key material %+v", rep.KeyMaterial)
	}
	s := rep.Summary
	if s.VMs != 7 || s.Encrypted != 3 || s.Exposed != 4 || s.Plain != 0 || s.Files[Error] != 0 {
		t.Errorf("summary %+v", s)
	}
	uses := map[string]int{}
	for _, k := range s.Keys {
		uses[k.Key.Provider] = k.VMs
	}
	if len(s.Keys) != 3 || uses["passphrase"] != 2 || uses[fixtures.KMSProvider] != 1 || uses[fixtures.NKPProvider] != 1 {
		t.Errorf("key uses %+v", s.Keys) // passphrase: pass + partial
	}
}

func TestScanOneFileAndErrors(t *testing.T) {
	if _, err := Scan(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing root scanned")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bad.vmdk"), []byte("# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 10 FLAT \"/etc/passwd\" 0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "bad.vmx"), []byte("encryption.keySafe = \"vmware:key/nonsense\"\n"), 0o644)
	rep, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	vm := rep.VMs[0]
	for _, f := range vm.Files {
		if f.Status != Error || f.Error == "" {
			t.Errorf("%s: %s, want unreadable", f.Path, f.Status)
		}
	}
	// A snapshot delta copied without its parent: its descriptor still
	// says it is encrypted and by which key.
	fx, err := fixtures.Generate(filepath.Join(dir, "snap"), fixtures.Recipe{Provider: fixtures.ProviderKMS, Snapshot: true, Size: fixtures.MinDiskSize, Seed: 8})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(fx.Dir, fixtures.VMDir, "fixture.vmdk"))
	rep, err = Scan(filepath.Join(fx.Dir, fixtures.VMDir))
	if err != nil {
		t.Fatal(err)
	}
	d := fileOf(t, rep.VMs[0], "fixture-000001.vmdk")
	if d.Status != Encrypted || d.Error == "" || len(d.Keys) != 1 || d.Keys[0].KeyID != fx.Manifest.Keys.KeyID || d.Parent != "fixture.vmdk" {
		t.Errorf("orphan delta: %+v", d)
	}
	rep, err = Scan(filepath.Join(dir, "bad.vmx"))
	if err != nil || len(rep.VMs) != 1 || len(rep.VMs[0].Files) != 1 {
		t.Fatalf("scan of one file: %v %+v", err, rep)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.ReaderAt
	n atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.n.Add(int64(len(p)))
	return c.r.ReadAt(p, off)
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		layout fixtures.Layout
		want   string
	}{{fixtures.LayoutMBRExt4, "MBR partition table at 0, ext4 at 66616"}, {fixtures.LayoutGPTNTFS, "protective MBR at 0, GPT at 512, NTFS at 65539"}} {
		im, _ := fixtures.Content(fixtures.ContentOptions{Size: 64 << 20, Layout: tc.layout, Seed: 1})
		cr := &countingReader{r: im}
		sigs, err := Detect(cr, im.Size())
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range sigs {
			got = append(got, s.String())
		}
		if strings.Join(got, ", ") != tc.want {
			t.Errorf("%s: %v, want %s", tc.layout, got, tc.want)
		}
		if cr.n.Load() > 3*probeLen {
			t.Errorf("%s: read %d bytes", tc.layout, cr.n.Load())
		}
	}
	// Whole-disk file systems and containers.
	mk := func(off int, b []byte) []byte {
		d := make([]byte, 1<<20)
		copy(d[off:], b)
		return d
	}
	sb := make([]byte, 1024)
	binary.LittleEndian.PutUint16(sb[56:], 0xEF53)
	for name, d := range map[string][]byte{
		"XFS":        mk(0, []byte("XFSB")),
		"LUKS":       mk(0, []byte("LUKS\xba\xbe\x00\x02")),
		"LVM2 PV":    mk(512, append([]byte("LABELONE\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x20\x00\x00\x00"), []byte("LVM2 001")...)),
		"btrfs":      mk(65536+64, []byte("_BHRfS_M")),
		"Linux swap": mk(4086, []byte("SWAPSPACE2")),
		"FAT32":      mk(82, []byte("FAT32   ")),
		"BitLocker":  mk(3, []byte("-FVE-FS-")),
		"ext2":       mk(1024, sb),
	} {
		sigs, err := Detect(bytes.NewReader(d), int64(len(d)))
		if err != nil || len(sigs) != 1 || sigs[0].Name != name {
			t.Errorf("%s: %v %v", name, sigs, err)
		}
	}
	// Noise and zeros hold nothing; a short disk is not a read error.
	if sigs, _ := Detect(bytes.NewReader(fixtures.NewStream(1, "noise").Bytes(1<<20)), 1<<20); len(sigs) != 0 {
		t.Errorf("noise: %v", sigs)
	}
	if sigs, err := Detect(bytes.NewReader(make([]byte, 4096)), 4096); err != nil || len(sigs) != 0 {
		t.Errorf("zeros: %v %v", sigs, err)
	}
}

// Cases a review found: an unreadable file makes a VM unreadable (never
// plain); a root that is a symbolic link (ESXi's /vmfs/volumes/NAME) is
// walked; a descriptor that claims encryption over plain data without any
// signature is exposed by its entropy; a FIFO root is refused, not waited on.
func TestScanReviewCases(t *testing.T) {
	root := t.TempDir()
	fx, err := fixtures.Generate(filepath.Join(root, "enc"), fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Size: fixtures.MinDiskSize, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	rep, err := Scan(vmDir)
	if err != nil || rep.VMs[0].Status != Encrypted {
		t.Fatalf("intact: %v %+v", err, rep)
	}
	if err := os.Truncate(filepath.Join(vmDir, "fixture.nvram"), 8000); err != nil {
		t.Fatal(err)
	}
	rep, err = Scan(vmDir)
	if err != nil || rep.VMs[0].Status != Error || rep.Summary.Unreadable != 1 || rep.Summary.Plain != 0 {
		t.Fatalf("truncated nvram: VM %s, summary %+v, %v", rep.VMs[0].Status, rep.Summary, err)
	}

	link := filepath.Join(t.TempDir(), "datastore1")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	rep, err = Scan(link)
	if err != nil || len(rep.VMs) != 1 {
		t.Fatalf("symlinked root: %v, %d VMs", err, len(rep.VMs))
	}

	text := []byte(strings.Repeat("the quick brown fox reads the plain guest disk\n", 30000))[:1<<20]
	liar := filepath.Join(t.TempDir(), "liar")
	os.MkdirAll(liar, 0o755)
	size := int64(len(text))
	if err := vmdk.Write(context.Background(), filepath.Join(liar, "liar.vmdk"), bytes.NewReader(text), size, []vmdk.Run{{Off: 0, Len: size, State: vmdk.Data}},
		&vmdk.WriteOptions{EncryptionKeys: "vmware:key/list/()", IOFilters: "vmwarevmcrypt"}); err != nil {
		t.Fatal(err)
	}
	rep, err = Scan(liar)
	if err != nil {
		t.Fatal(err)
	}
	if f := fileOf(t, rep.VMs[0], "liar.vmdk"); f.Status != Exposed || !strings.Contains(f.Why, "not random") {
		t.Fatalf("plain data under an encryption descriptor: %s %s", f.Status, f.Why)
	}
	// The same descriptor over ciphertext-like data stays encrypted.
	rnd := make([]byte, size)
	fixtures.NewStream(1, "random").Read(rnd)
	os.Remove(filepath.Join(liar, "liar.vmdk"))
	if err := vmdk.Write(context.Background(), filepath.Join(liar, "liar.vmdk"), bytes.NewReader(rnd), size, []vmdk.Run{{Off: 0, Len: size, State: vmdk.Data}},
		&vmdk.WriteOptions{EncryptionKeys: "vmware:key/list/()", IOFilters: "vmwarevmcrypt"}); err != nil {
		t.Fatal(err)
	}
	rep, _ = Scan(liar)
	if f := fileOf(t, rep.VMs[0], "liar.vmdk"); f.Status != Encrypted {
		t.Fatalf("random data under an encryption descriptor: %s %s", f.Status, f.Why)
	}

	fifo := filepath.Join(t.TempDir(), "p.nvram")
	mkfifo(t, fifo)
	done := make(chan error, 1)
	go func() { _, err := Scan(fifo); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a FIFO root was scanned")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Scan blocked on a FIFO root")
	}
}

// A sparse extent found without its descriptor is read as a disk of its
// own: plain guest data in it is exposed; an encrypted VM's extent is not.
func TestScanOrphanSparseExtent(t *testing.T) {
	for _, c := range []struct {
		partial bool
		want    Status
	}{{true, Exposed}, {false, Plain}} {
		fx, err := fixtures.Generate(filepath.Join(t.TempDir(), "fx"), fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Disk: vmdk.SubformatTwoGbMaxExtentSparse, Partial: c.partial, Size: fixtures.MinDiskSize, Seed: 12})
		if err != nil {
			t.Fatal(err)
		}
		lone := t.TempDir()
		b, err := os.ReadFile(filepath.Join(fx.Dir, fixtures.VMDir, "fixture-s001.vmdk"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(lone, "fixture-s001.vmdk"), b, 0o644)
		rep, err := Scan(lone)
		if err != nil {
			t.Fatal(err)
		}
		if f := fileOf(t, rep.VMs[0], "fixture-s001.vmdk"); f.Status != c.want {
			t.Fatalf("partial=%v: %s (%s), want %s", c.partial, f.Status, f.Why, c.want)
		}
	}
}

// ESXi host files (issue 14): an encrypted host configuration sealed to a
// TPM and an encrypted core dump are encrypted; a configuration whose
// mode NONE key store travels with it is exposed.
func TestScanESXi(t *testing.T) {
	dir := t.TempDir()
	if _, err := fixtures.GenerateESXi(dir, 7); err != nil {
		t.Fatal(err)
	}
	rep, err := Scan(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Status{}
	for _, vm := range rep.VMs {
		for _, f := range vm.Files {
			got[f.Path] = f.Status
		}
	}
	for p, want := range map[string]Status{
		"configBundle-fixture.tgz": Exposed, "bootbank/state.tgz": Exposed,
		"vmkernel-zdump.1": Encrypted, "negative/tpm/state.tgz": Encrypted,
	} {
		if got[p] != want {
			t.Errorf("%s: %q, want %q (all %v)", p, got[p], want, got)
		}
	}
}
