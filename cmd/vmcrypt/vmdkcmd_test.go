package main

import (
	"compress/bzip2"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmdk"
)

const vmdkSamples = "../../vmdk/testdata/samples"

func vmdkFileSHA(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func vmdkBunzip(t *testing.T, src string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(src), ".bz2"))
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, bzip2.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

const tenMiBSum = "a3bcf05f07a1c06a3380eeca8571f0efb2b85afafa1e21662b8cad436d1f7727"

func TestVMDKInfo(t *testing.T) {
	code, out, errOut := runCLI(t, "vmdk", "info", filepath.Join(vmdkSamples, "vmdk-rs/twoGbMaxExtentSparse.vmdk"), "--json")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var r vmdkInfoReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Capacity != 10<<20 || r.CreateType != "twoGbMaxExtentSparse" || len(r.Chain) != 1 || r.Encrypted ||
		len(r.Chain[0].Extents) != 1 || r.Chain[0].GrainSize != 65536 || r.Chain[0].ParentCID != "ffffffff" ||
		r.Chain[0].AllocatedBytes <= 0 || r.Chain[0].AllocatedBytes > r.Capacity {
		t.Fatalf("report %+v", r)
	}
	// text output, stream sample
	code, out, errOut = runCLI(t, "vmdk", "info", filepath.Join(vmdkSamples, "vmdk-rs/streamOptimizedWithMarkers.vmdk"))
	if code != exitOK || !strings.Contains(out, "streamOptimized") || !strings.Contains(out, "7e5b80a7") {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	if code, _, _ := runCLI(t, "vmdk", "info"); code != exitUsage {
		t.Fatalf("no DISK: exit %d", code)
	}
	if code, _, _ := runCLI(t, "vmdk", "info", filepath.Join(t.TempDir(), "missing.vmdk")); code != exitFailure {
		t.Fatalf("missing DISK: exit %d", code)
	}
}

func TestVMDKInfoChainAndEncryption(t *testing.T) {
	dir := t.TempDir()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal("qemu-img not found: run make peers")
	}
	base := filepath.Join(dir, "base.vmdk")
	if out, err := exec.Command("qemu-img", "create", "-f", "vmdk", "-o", "subformat=monolithicFlat", base, "1M").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	d, err := vmdk.ParseDescriptor(mustReadFile(t, base), base)
	if err != nil {
		t.Fatal(err)
	}
	d.EncryptionKeys = "vmware:key/list/(pair/(fqid/<VMWARE-NULL>/x,HMAC-SHA-256,abc))"
	d.SetDDB("ddb.iofilters", "vmwarevmcrypt")
	text, err := d.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	enc := filepath.Join(dir, "enc.vmdk")
	if err := os.WriteFile(enc, text, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "vmdk", "info", enc, "--json")
	var r vmdkInfoReport
	if code != exitOK || json.Unmarshal([]byte(out), &r) != nil || !r.Encrypted || !r.Chain[0].EncryptionKeys || !r.Chain[0].VMCryptFilter {
		t.Fatalf("exit %d %+v %s", code, r, errOut)
	}
	if code, _, _ := runCLI(t, "vmdk", "export", enc, "-o", filepath.Join(dir, "out.raw")); code != exitCorrupt {
		t.Fatalf("export of an encrypted disk: exit %d, want %d", code, exitCorrupt)
	}
	if _, err := os.Stat(filepath.Join(dir, "out.raw")); err == nil {
		t.Fatal("refused export left a file")
	}
}

func mustReadFile(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVMDKExportRaw(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []string{"vmdk-rs/monolithicSparse.vmdk", "vmdk-rs/streamOptimized.vmdk", "vmdk-rs/twoGbMaxExtentSparse.vmdk"} {
		out := filepath.Join(dir, filepath.Base(s)+".raw")
		if code, _, e := runCLI(t, "vmdk", "export", filepath.Join(vmdkSamples, s), "-o", out, "--jobs", "3"); code != exitOK {
			t.Fatalf("%s: exit %d %s", s, code, e)
		}
		if got := vmdkFileSHA(t, out); got != tenMiBSum {
			t.Fatalf("%s: sha256 %s", s, got)
		}
	}
	out := filepath.Join(dir, "monolithicSparse.vmdk.raw")
	if code, _, _ := runCLI(t, "vmdk", "export", filepath.Join(vmdkSamples, "vmdk-rs/streamOptimized.vmdk"), "-o", out); code != exitUsage {
		t.Fatalf("existing OUT without --force: exit %d, want %d", code, exitUsage)
	}
	if code, _, _ := runCLI(t, "vmdk", "export", filepath.Join(vmdkSamples, "vmdk-rs/streamOptimized.vmdk"), "-o", out, "--force"); code != exitOK {
		t.Fatalf("--force: exit %d", code)
	}
	for _, bad := range [][]string{{"--format", "qcow2"}, {"--format", "vmdk", "--subformat", "vhd"}, {"--jobs", "-1"}} {
		args := append([]string{"vmdk", "export", filepath.Join(vmdkSamples, "vmdk-rs/streamOptimized.vmdk"), "-o", filepath.Join(dir, "x")}, bad...)
		if code, _, _ := runCLI(t, args...); code != exitUsage {
			t.Fatalf("%v: exit %d, want %d", bad, code, exitUsage)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Fatalf("temp files left behind: %d entries", len(entries))
	}
}

// TestVMDKExportLargeSparse exports the 16 GiB iotest stream disk: the raw
// output is sparse (a few blocks on disk) and holds qemu's 100 patterned
// sectors.
func TestVMDKExportLargeSparse(t *testing.T) {
	img := vmdkBunzip(t, filepath.Join(vmdkSamples, "qemu-iotests/iotest-version3.vmdk.bz2"))
	out := filepath.Join(t.TempDir(), "v3.raw")
	if code, _, e := runCLI(t, "vmdk", "export", img, "-o", out); code != exitOK {
		t.Fatalf("exit %d %s", code, e)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Size() != 16<<30 {
		t.Fatalf("%v size %d", err, fi.Size())
	}
	if used := diskUsage(t, fi); used > 8<<20 {
		t.Fatalf("output not sparse: %d bytes on disk", used)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1024)
	for i := int64(0); i < 100; i++ {
		off := i*655360 + i*512
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
		want := byte(0x30 + i%10)
		if buf[0] != want || buf[511] != want {
			t.Fatalf("sector at %d: %x, want %x", off, buf[0], want)
		}
	}
}

func TestVMDKExportVMDKAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out.vmdk")
	if code, _, e := runCLI(t, "vmdk", "export", filepath.Join(vmdkSamples, "vmdk-rs/monolithicSparse.vmdk"), "-o", out,
		"--format", "vmdk", "--subformat", "streamOptimized"); code != exitOK {
		t.Fatalf("exit %d %s", code, e)
	}
	raw := filepath.Join(dir, "q.raw")
	if o, err := exec.Command("qemu-img", "convert", "-O", "raw", out, raw).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img reads our export: %v %s", err, o)
	}
	if got := vmdkFileSHA(t, raw); got != tenMiBSum {
		t.Fatalf("qemu reads %s", got)
	}
	afl := vmdkBunzip(t, filepath.Join(vmdkSamples, "qemu-iotests/afl9.vmdk.bz2"))
	for _, args := range [][]string{{"info", afl}, {"export", afl, "-o", filepath.Join(dir, "afl.raw")}} {
		if code, _, _ := runCLI(t, append([]string{"vmdk"}, args...)...); code != exitCorrupt {
			t.Fatalf("afl9 %s: exit %d, want %d", args[0], code, exitCorrupt)
		}
	}
}

// TestVMDKInfoGolden pins the text output of vmdk info (set
// VMCRYPT_UPDATE_GOLDEN=1 to rewrite testdata/vmdk-info-*.golden).
func TestVMDKInfoGolden(t *testing.T) {
	for golden, disk := range map[string]string{
		"vmdk-info-split.golden":  "vmdk-rs/twoGbMaxExtentSparse.vmdk",
		"vmdk-info-stream.golden": "vmdk-rs/streamOptimizedWithMarkers.vmdk",
	} {
		code, out, errOut := runCLI(t, "vmdk", "info", filepath.Join(vmdkSamples, disk))
		if code != exitOK {
			t.Fatalf("%s: exit %d %s", disk, code, errOut)
		}
		path := filepath.Join("testdata", golden)
		if os.Getenv("VMCRYPT_UPDATE_GOLDEN") != "" {
			if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if want := string(mustReadFile(t, path)); out != want {
			t.Errorf("%s: output differs from %s:\n%s", disk, path, out)
		}
	}
}

// TestVMDKInfoMissingExtents: a descriptor whose extent files are missing
// is still described (from the descriptor), and the exit code says it
// failed.
func TestVMDKInfoMissingExtents(t *testing.T) {
	code, out, _ := runCLI(t, "vmdk", "info", filepath.Join(vmdkSamples, "vmdk-forensic/ms3-win.vmdk"), "--json")
	if code != exitFailure {
		t.Fatalf("exit %d, want %d", code, exitFailure)
	}
	var r vmdkInfoReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Error == "" || r.CreateType != "twoGbMaxExtentSparse" || len(r.Chain) != 1 || len(r.Chain[0].Extents) != 16 ||
		r.Chain[0].Extents[0].Size != 8323072*512 || r.Chain[0].AllocatedBytes != -1 {
		t.Fatalf("report %+v", r)
	}
}

// An output that would replace a file of the disk being read (the
// descriptor, its flat extent, or an extent the new VMDK would name) is
// refused even with --force, and the inputs stay as they were.
func TestVMDKExportNeverOverInput(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "d.vmdk")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", d, "4M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v %s", err, out)
	}
	before := map[string]string{"d.vmdk": vmdkFileSHA(t, d), "d-flat.vmdk": vmdkFileSHA(t, filepath.Join(dir, "d-flat.vmdk"))}
	for _, c := range [][]string{
		{"-o", d},
		{"-o", filepath.Join(dir, "d-flat.vmdk")},
		{"-o", d, "--format", "vmdk"},
		{"-o", filepath.Join(dir, "..", filepath.Base(dir), "d.vmdk"), "--format", "vmdk", "--subformat", "monolithicFlat"},
	} {
		args := append(append([]string{"vmdk", "export", d}, c...), "--force")
		if code, _, stderr := runCLI(t, args...); code != exitUsage || !strings.Contains(stderr, "never writes over its inputs") {
			t.Fatalf("%v: exit %d: %s", c, code, stderr)
		}
	}
	for name, sum := range before {
		if vmdkFileSHA(t, filepath.Join(dir, name)) != sum {
			t.Fatalf("%s changed", name)
		}
	}
	if code, _, stderr := runCLI(t, "vmdk", "export", d, "-o", filepath.Join(dir, "e.vmdk"), "--format", "vmdk"); code != exitOK {
		t.Fatalf("a new name: exit %d: %s", code, stderr)
	}
}
