package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/fixtures"
	"github.com/vmcrypt/vmcrypt/recover"
	"github.com/vmcrypt/vmcrypt/recover/datafile"
	"github.com/vmcrypt/vmcrypt/recover/keys"
	"github.com/vmcrypt/vmcrypt/recover/memory"
	"github.com/vmcrypt/vmcrypt/recover/vm"
)

const snap1 = fixtures.DefaultName + "-Snapshot1"

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkPhysical: each region of the fixture's memory is at its
// guest-physical offset of raw, and the hole between them is zeros.
func checkPhysical(t *testing.T, raw []byte, ms *fixtures.MemoryState) {
	t.Helper()
	if int64(len(raw)) != ms.PhysSize {
		t.Fatalf("physical image of %d bytes, want %d", len(raw), ms.PhysSize)
	}
	for _, r := range ms.Regions {
		got := raw[r.PhysOffset() : r.PhysOffset()+r.Size()]
		if !bytes.Equal(got, ms.Flat[r.FlatOffset():r.FlatOffset()+r.Size()]) {
			t.Fatalf("region at guest-physical %#x is not the flat bytes at %#x", r.PhysOffset(), r.FlatOffset())
		}
	}
	hole := raw[ms.Regions[0].PhysOffset()+ms.Regions[0].Size() : ms.Regions[1].PhysOffset()]
	if len(hole) == 0 || !bytes.Equal(hole, make([]byte, len(hole))) {
		t.Fatal("the hole between the regions is not zeros")
	}
}

// vmcrypt memory on every kind of fixture: passphrase, KMS, NKP, and
// partial encryption (plain disks, encrypted memory): the manifest's flat
// memory and plain state file, and with --physical each region at its
// guest-physical offset.
func TestMemoryCLI(t *testing.T) {
	for i, r := range []fixtures.Recipe{
		{Provider: fixtures.ProviderPassphrase},
		{Provider: fixtures.ProviderKMS},
		{Provider: fixtures.ProviderNKP},
		{Provider: fixtures.ProviderPassphrase, Partial: true},
	} {
		r.Snapshot, r.Memory, r.Seed = true, true, uint64(700+i)
		fx := recFixture(t, r)
		vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
		before := recSums(t, vmDir)
		out := filepath.Join(t.TempDir(), "mem")
		code, stdout, stderr := runCLI(t, append([]string{"memory", vmDir, "-o", out, "--physical"}, recKeyArgs(fx)...)...)
		if code != exitOK {
			t.Fatalf("%s partial=%v: exit %d: %s", r.Provider, r.Partial, code, stderr)
		}
		m := fx.Manifest.SHA256
		if fileSum(t, filepath.Join(out, snap1+".vmem")) != m.VMem || fileSum(t, filepath.Join(out, snap1+".vmsn")) != m.VMSN {
			t.Fatalf("%s: the pair differs from the manifest", r.Provider)
		}
		raw, err := os.ReadFile(filepath.Join(out, snap1+".raw"))
		if err != nil {
			t.Fatal(err)
		}
		checkPhysical(t, raw, fx.Memory)
		if got := recNames(t, out); strings.Join(got, " ") != snap1+".raw "+snap1+".vmem "+snap1+".vmsn "+recover.MemoryReportName {
			t.Fatalf("outputs %v", got)
		}
		var rep recover.MemoryReport
		b, _ := os.ReadFile(filepath.Join(out, recover.MemoryReportName))
		if err := json.Unmarshal(b, &rep); err != nil || len(rep.States) != 1 || rep.KeySafe == nil || len(rep.States[0].Regions) != 2 {
			t.Fatalf("report: %v %s", err, b)
		}
		if !strings.Contains(stdout, snap1+".vmem") {
			t.Fatalf("summary: %s", stdout)
		}
		after := recSums(t, vmDir)
		for k, v := range before {
			if after[k] != v {
				t.Fatalf("input %s changed", k)
			}
		}
		// Again: refused (exit 2) without --force, accepted with it.
		if code, _, _ := runCLI(t, append([]string{"memory", vmDir, "-o", out}, recKeyArgs(fx)...)...); code != exitUsage {
			t.Fatalf("existing outputs: exit %d", code)
		}
		if code, _, e := runCLI(t, append([]string{"memory", vmDir, "-o", out, "--force", "-q", "--snapshot", "vmcrypt fixture snapshot"}, recKeyArgs(fx)...)...); code != exitOK {
			t.Fatalf("--force: exit %d: %s", code, e)
		}
	}
}

// A suspend state (.vmss + .vmem) beside a snapshot: both pairs written,
// each under its own base name; --snapshot picks one.
func TestMemoryCLISuspend(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Snapshot: true, Memory: true, Seed: 710})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	susp := fixtures.DefaultName + "-1a2b3c4d"
	for ext, from := range map[string]string{".vmss": snap1 + ".vmsn", ".vmem": snap1 + ".vmem"} {
		b, err := os.ReadFile(filepath.Join(vmDir, from))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(vmDir, susp+ext), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(t.TempDir(), "mem")
	if code, _, e := runCLI(t, append([]string{"memory", vmDir, "-o", out, "-q"}, recKeyArgs(fx)...)...); code != exitOK {
		t.Fatalf("exit %d: %s", code, e)
	}
	m := fx.Manifest.SHA256
	for _, base := range []string{snap1, susp} {
		st := ".vmsn"
		if base == susp {
			st = ".vmss"
		}
		if fileSum(t, filepath.Join(out, base+".vmem")) != m.VMem || fileSum(t, filepath.Join(out, base+st)) != m.VMSN {
			t.Fatalf("%s: the pair differs", base)
		}
	}
	one := filepath.Join(t.TempDir(), "one")
	if code, _, e := runCLI(t, append([]string{"memory", vmDir, "-o", one, "-q", "--snapshot", susp}, recKeyArgs(fx)...)...); code != exitOK {
		t.Fatalf("--snapshot: exit %d: %s", code, e)
	}
	if got := recNames(t, one); len(got) != 3 || got[0] != susp+".vmem" {
		t.Fatalf("--snapshot %s wrote %v", susp, got)
	}
}

// A plain VM (decompression only): a suspend with a compressed .vmem and a
// snapshot whose memory is inside its .vmsn.
func TestMemoryCLIPlainVM(t *testing.T) {
	dir := t.TempDir()
	ms, err := fixtures.GenerateMemory(720, fixtures.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	emb, err := fixtures.GenerateMemory(721, fixtures.MemoryOptions{Embedded: true})
	if err != nil {
		t.Fatal(err)
	}
	for n, b := range map[string][]byte{
		"p.vmx":     []byte(".encoding = \"UTF-8\"\ndisplayName = \"plain\"\n"),
		"p-s.vmss":  ms.State,
		"p-s.vmem":  ms.VMem,
		"p-e1.vmsn": emb.State,
	} {
		os.WriteFile(filepath.Join(dir, n), b, 0o644)
	}
	out := filepath.Join(t.TempDir(), "mem")
	if code, _, e := runCLI(t, "memory", dir, "-o", out, "--physical", "-q"); code != exitOK {
		t.Fatalf("exit %d: %s", code, e)
	}
	got, _ := os.ReadFile(filepath.Join(out, "p-s.vmem"))
	raw, _ := os.ReadFile(filepath.Join(out, "p-s.raw"))
	if !bytes.Equal(got, ms.Flat) {
		t.Fatal("suspend: flat memory differs")
	}
	checkPhysical(t, raw, ms)
	got, _ = os.ReadFile(filepath.Join(out, "p-e1.vmem"))
	raw, _ = os.ReadFile(filepath.Join(out, "p-e1.raw"))
	state, _ := os.ReadFile(filepath.Join(out, "p-e1.vmsn"))
	if !bytes.Equal(got, emb.Flat) || !bytes.Equal(state, emb.State) {
		t.Fatal("embedded: the pair differs")
	}
	checkPhysical(t, raw, emb)
}

// Refusals: usage (2), wrong key (3), missing key (4).
func TestMemoryCLIRefusals(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderKMS, Snapshot: true, Memory: true, Seed: 730})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	noMem := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Seed: 731})
	wrong := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Snapshot: true, Memory: true, Negative: fixtures.NegWrongPassphrase, Seed: 732})
	o := func() string { return filepath.Join(t.TempDir(), "o") }
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{"memory", vmDir}, exitUsage},
		{[]string{"memory", "-o", o()}, exitUsage},
		{append([]string{"memory", vmDir, "-o", o(), "--snapshot", "nope"}, recKeyArgs(fx)...), exitUsage},
		{append([]string{"memory", filepath.Join(noMem.Dir, fixtures.VMDir), "-o", o()}, recKeyArgs(noMem)...), exitUsage},
		{append([]string{"memory", vmDir, "-o", vmDir, "--force"}, recKeyArgs(fx)...), exitUsage},
		{append([]string{"memory", filepath.Join(wrong.Dir, fixtures.VMDir), "-o", o()}, recKeyArgs(wrong)...), exitWrongKey},
		{[]string{"memory", vmDir, "-o", o()}, exitKeyNotFound},
	} {
		if code, _, e := runCLI(t, c.args...); code != c.want {
			t.Errorf("%v: exit %d, want %d: %s", c.args, code, c.want, e)
		}
	}
}

// reencrypt stores plain as the VM's data file name, encrypted with its
// dataFileKey, as a damaged file would be.
func reencrypt(t *testing.T, fx *fixtures.Fixture, name string, plain []byte, version uint32) {
	t.Helper()
	srcs, _ := keySourcesForTest(t, fx)
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	v, err := vm.OpenVM(context.Background(), vmDir, &vm.Options{Resolver: keys.NewResolver(srcs...), Depth: vm.SettingsOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	var b bytes.Buffer
	if err := datafile.Encrypt(&b, bytes.NewReader(plain), int64(len(plain)), v.DataFileKey.Bytes, version, rand.Reader); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vmDir, name), b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func vmemBlock(usize, csize int, stream ...byte) []byte {
	var h [memory.BlockHeaderSize]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(usize))
	binary.LittleEndian.PutUint32(h[8:], uint32(csize))
	return append(h[:], stream...)
}

// Damaged memory: every case exits 5 naming the file and the offset
// (plaintext offsets of the decrypted file), for `memory` (with
// --physical) and `recover` alike, and nothing is written.
func TestMemoryCLIDamaged(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Snapshot: true, Memory: true, Seed: 740})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	good := vmemBlock(4, 5, 0x03, 'a', 'b', 'c', 'd')
	base := int64(len(fx.Memory.VMem))
	after := func(blocks ...[]byte) []byte {
		return bytes.Join(append([][]byte{fx.Memory.VMem}, blocks...), nil)
	}
	hugeGroups := append([]byte(nil), fx.Memory.State...)
	binary.LittleEndian.PutUint32(hugeGroups[8:], 0xffffffff)
	// A memory group claiming 2^32-1 regions.
	var s memory.StateFile
	s.Group("memory").Uint32("regionsCount", 0xffffffff)
	hugeRegions, err := s.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, file string
		plain      []byte
		off        int64
	}{
		// Each bad block follows the fixture's whole stream, so that the
		// flat memory still covers the regions and decoding reaches it.
		{"block length past the file", ".vmem", after(vmemBlock(0x10000, 0x8000, 0x00, 1, 2)), base + 8},
		{"stream ends inside a literal run", ".vmem", after(good, vmemBlock(64, 3, 0x1f, 'a', 'b')), base + int64(len(good)) + 16},
		{"stream ends inside a distance escape", ".vmem", after(vmemBlock(100, 7, 0x02, 'a', 'b', 'c', 0x3f, 0xff, 0x00)), base + 20},
		{"block decodes to less than its size", ".vmem", after(vmemBlock(10, 4, 0x02, 'a', 'b', 'c')), base + 20},
		{"block decodes to more than its size", ".vmem", after(vmemBlock(2, 4, 0x02, 'a', 'b', 'c')), base + 16},
		{"first control byte F>>5 > 1", ".vmem", after(vmemBlock(4, 5, 0x43, 'a', 'b', 'c', 'd')), base + 16},
		{"tag stream with 2^32-1 groups", ".vmsn", hugeGroups, 8},
		{"memory group with 2^32-1 regions", ".vmsn", hugeRegions, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Restore both files, then damage one.
			reencrypt(t, fx, snap1+".vmem", fx.Memory.VMem, 2)
			reencrypt(t, fx, snap1+".vmsn", fx.Memory.State, 1)
			version := uint32(2)
			if c.file == ".vmsn" {
				version = 1
			}
			reencrypt(t, fx, snap1+c.file, c.plain, version)
			for _, cmd := range [][]string{{"memory", "--physical"}, {"recover"}} {
				out := filepath.Join(t.TempDir(), "o")
				code, _, stderr := runCLI(t, append(append([]string{cmd[0], vmDir, "-o", out}, cmd[1:]...), recKeyArgs(fx)...)...)
				if cmd[0] == "recover" && c.file == ".vmsn" {
					// recover copies state files as they are (decrypted).
					if code != exitOK {
						t.Fatalf("recover: exit %d: %s", code, stderr)
					}
					continue
				}
				if code != exitCorrupt {
					t.Fatalf("%s: exit %d, want %d: %s", cmd[0], code, exitCorrupt, stderr)
				}
				want := snap1 + c.file
				if c.off >= 0 {
					want += fmt.Sprintf(" (decrypted) at offset %d", c.off)
				}
				if !strings.Contains(stderr, want) {
					t.Fatalf("%s: the error does not name %q: %s", cmd[0], want, stderr)
				}
				if n := recNames(t, out); len(n) != 0 {
					t.Fatalf("%s: OUTDIR holds %v", cmd[0], n)
				}
			}
		})
	}
}

// Ctrl-C half-way: exit 130 and nothing left in OUTDIR.
func TestMemoryCLIInterrupted(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Snapshot: true, Memory: true, Seed: 750})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	out := filepath.Join(t.TempDir(), "out")
	orig := memoryRun
	defer func() { memoryRun = orig }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	memoryRun = func(c *cli.Context, v *vm.VM, out string, o *recover.MemoryOptions) (*recover.MemoryReport, error) {
		o.Progress = func(p recover.Progress) {
			if p.Phase == "decompress" && p.Done > p.Total/3 {
				cancel() // what SIGINT does to the command's context
			}
		}
		return orig(c, v, out, o)
	}
	var stdout, stderr bytes.Buffer
	code := runContext(ctx, append([]string{"vmcrypt", "memory", vmDir, "-o", out, "--physical"}, recKeyArgs(fx)...), &stdout, &stderr)
	if code != exitInterrupted {
		t.Fatalf("exit %d, want %d: %s", code, exitInterrupted, stderr.String())
	}
	if n := recNames(t, out); len(n) != 0 {
		t.Fatalf("OUTDIR holds %v", n)
	}
}

// inspect lists memory states with regions and sizes when the VM opens
// (a key, or a plain VM); without a key it lists none.
func TestInspectMemoryStates(t *testing.T) {
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderNKP, Snapshot: true, Memory: true, Seed: 760})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	var rep vmInspectReport
	code, out, e := runCLI(t, append([]string{"inspect", vmDir, "--json"}, recKeyArgs(fx)...)...)
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("exit %d: %s %s", code, out, e)
	}
	ms := fx.Memory
	if len(rep.Memory) != 1 {
		t.Fatalf("memory states %+v", rep.Memory)
	}
	s := rep.Memory[0]
	if s.Name != snap1 || s.Error != "" || !s.Compressed || s.FlatSize != int64(len(ms.Flat)) || s.MemoryBytes != int64(len(ms.VMem)) || s.PhysicalSize != ms.PhysSize ||
		len(s.Regions) != 2 || s.Regions[1].PhysStart != ms.Regions[1].PhysOffset() || s.Regions[1].Pages != ms.Regions[1].Pages || s.DisplayName != "vmcrypt fixture snapshot" {
		t.Fatalf("state %+v", s)
	}
	code, out, _ = runCLI(t, append([]string{"inspect", vmDir}, recKeyArgs(fx)...)...)
	if code != exitOK || !strings.Contains(out, "Memory states") || !strings.Contains(out, "region 1:") {
		t.Fatalf("text: %s", out)
	}
	rep = vmInspectReport{}
	code, out, _ = runCLI(t, "inspect", vmDir, "--json")
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || len(rep.Memory) != 0 {
		t.Fatalf("without a key: exit %d, %+v", code, rep.Memory)
	}
	// The format report holds the state file's tag groups (names, counts).
	code, out, _ = runCLI(t, append([]string{"inspect", vmDir, "--format-report"}, recKeyArgs(fx)...)...)
	var fr vm.FormatReport
	if code != exitOK || json.Unmarshal([]byte(out), &fr) != nil {
		t.Fatalf("format report: exit %d", code)
	}
	found := false
	for _, d := range fr.DataFiles {
		if d.File == snap1+".vmsn" {
			found = d.Checkpoint != nil && len(d.Checkpoint.Groups) == 3 && d.Checkpoint.Groups[2].Name == "memory" && d.Checkpoint.Groups[2].Tags > 0
		}
		if d.File == snap1+".vmem" && (d.MemoryBlocks == nil || d.MemoryBlocks.Blocks != ms.Encoder.Blocks) {
			t.Fatalf(".vmem blocks: %+v", d.MemoryBlocks)
		}
	}
	if !found {
		t.Fatalf("no checkpoint groups in the format report: %s", out)
	}
}

// The peer is vmem-decrypt (heeeyaaaa/vmem-decrypt): vmem_decrypt.py
// decrypts a data file from the VMX and its password, vmem_flatten.py
// expands a decrypted .vmem. It is run, never copied: from
// $VMCRYPT_VMEM_DECRYPT, else ../shared/peers/vmem-decrypt beside the
// module root. A missing peer fails the test.
func vmemPeer(t testing.TB) (python, dir string) {
	t.Helper()
	dir = os.Getenv("VMCRYPT_VMEM_DECRYPT")
	if dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		for d := wd; ; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(filepath.Dir(d), "shared", "peers", "vmem-decrypt")
				break
			}
			if filepath.Dir(d) == d {
				t.Fatal("module root not found")
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "vmem_decrypt.py")); err != nil {
		t.Fatalf("peer vmem-decrypt not found (set VMCRYPT_VMEM_DECRYPT or lay ../shared/peers/vmem-decrypt): %v", err)
	}
	python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		if python, err = exec.LookPath("python3"); err != nil {
			t.Fatalf("python3 is required to run the vmem-decrypt peer: %v", err)
		}
	}
	if out, err := exec.Command(python, "-c", "import cryptography").CombinedOutput(); err != nil {
		t.Fatalf("python3-cryptography is required by the vmem-decrypt peer (apt-get install python3-cryptography): %v\n%s", err, out)
	}
	return python, dir
}

func runPeer(t testing.TB, python, dir, script string, args ...string) {
	t.Helper()
	if out, err := exec.Command(python, append([]string{filepath.Join(dir, script)}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", script, args, err, out)
	}
}

// Peer, both directions. vmem_decrypt.py (from the VMX and the password)
// + vmem_flatten.py on vmcrypt's fixture give exactly the flat .vmem and
// plain .vmsn that `vmcrypt memory` and `vmcrypt recover` write; and
// `vmcrypt memory` on a plain VM made of the peer's decrypted (still
// compressed) files gives the peer's flat image.
func TestMemoryPeerVMemDecrypt(t *testing.T) {
	python, peer := vmemPeer(t)
	fx := recFixture(t, fixtures.Recipe{Provider: fixtures.ProviderPassphrase, Snapshot: true, Memory: true, Seed: 770})
	vmDir := filepath.Join(fx.Dir, fixtures.VMDir)
	pass, err := readSecretFile(filepath.Join(fx.Dir, fx.Manifest.Secrets.PassphraseFile))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	vmx := filepath.Join(vmDir, fixtures.DefaultName+".vmx")
	plainDir := filepath.Join(tmp, "plain")
	os.Mkdir(plainDir, 0o755)
	for _, ext := range []string{".vmem", ".vmsn"} {
		runPeer(t, python, peer, "vmem_decrypt.py", filepath.Join(vmDir, snap1+ext), filepath.Join(plainDir, snap1+ext), "--vmx", vmx, "--password", string(pass))
	}
	peerFlat := filepath.Join(tmp, "peer-flat.vmem")
	runPeer(t, python, peer, "vmem_flatten.py", filepath.Join(plainDir, snap1+".vmem"), peerFlat)

	mem := filepath.Join(tmp, "mem")
	if code, _, e := runCLI(t, append([]string{"memory", vmDir, "-o", mem, "-q"}, recKeyArgs(fx)...)...); code != exitOK {
		t.Fatalf("memory: exit %d: %s", code, e)
	}
	rec := filepath.Join(tmp, "rec")
	if code, _, e := runCLI(t, append([]string{"recover", vmDir, "-o", rec, "-q"}, recKeyArgs(fx)...)...); code != exitOK {
		t.Fatalf("recover: exit %d: %s", code, e)
	}
	want := fileSum(t, peerFlat)
	if want != fx.Manifest.SHA256.VMem {
		t.Fatal("the peer's flat image is not the fixture's flat memory")
	}
	for _, p := range []string{filepath.Join(mem, snap1+".vmem"), filepath.Join(rec, snap1+".vmem")} {
		if fileSum(t, p) != want {
			t.Fatalf("%s differs from vmem_flatten.py's image", p)
		}
	}
	peerState := fileSum(t, filepath.Join(plainDir, snap1+".vmsn"))
	for _, p := range []string{filepath.Join(mem, snap1+".vmsn"), filepath.Join(rec, snap1+".vmsn")} {
		if fileSum(t, p) != peerState {
			t.Fatalf("%s differs from vmem_decrypt.py's .vmsn", p)
		}
	}
	// The other direction: vmcrypt decompresses the peer's decryption.
	os.WriteFile(filepath.Join(plainDir, "p.vmx"), []byte(".encoding = \"UTF-8\"\ndisplayName = \"peer output\"\n"), 0o644)
	back := filepath.Join(tmp, "back")
	if code, _, e := runCLI(t, "memory", plainDir, "-o", back, "-q"); code != exitOK {
		t.Fatalf("memory on the peer's files: exit %d: %s", code, e)
	}
	if fileSum(t, filepath.Join(back, snap1+".vmem")) != want || fileSum(t, filepath.Join(back, snap1+".vmsn")) != peerState {
		t.Fatal("vmcrypt on the peer's decrypted files differs from the peer's flat image")
	}
}
