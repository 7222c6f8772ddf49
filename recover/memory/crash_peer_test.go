package memory

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// The checkpoint peer is crash (Debian package `crash`), whose
// vmware_vmss.c was written at VMware: run as `crash -d 1 NAMELIST
// FILE.vmss`, it parses the state file's group table and the tags of its
// `cpu` and `memory` groups and prints each with its file position, size
// and value, before it gives up for want of a kernel (any ELF file does as
// the namelist). Volatility 3 is not packaged for Debian 12, so crash is the
// checkpoint peer here.
//
// crash reads the group table as groupCount×80 entries of 80 bytes, so a
// state file must be at least CrashMinSize bytes long for it:
// StateFile.CrashReadable pads with zeros after the last group (VMware's
// files are megabytes).

var (
	crashGroup = regexp.MustCompile(`vmw: Group: (\S+)\s+offset=0x([0-9a-f]+) size=`)
	crashItem  = regexp.MustCompile(`vmw: \t Item\s+([^\t\[]+)((?:\[\d+\])*)\t=> position=0x([0-9a-f]+) size=0x([0-9a-f]+): ([0-9A-F]*)`)
	crashBlock = regexp.MustCompile(`vmw: \t Item\s+([^\t\[]+)((?:\[\d+\])*)\t=> (?:COMPRESSED )?BLOCK: position=0x([0-9a-f]+) size=0x([0-9a-f]+) memsize=0x([0-9a-f]+)`)
)

func crashPeer(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("crash")
	if err != nil {
		t.Fatalf("crash is required as the checkpoint peer (apt-get install crash): %v", err)
	}
	return p
}

func hex64(t *testing.T, s string) int64 {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return int64(v)
}

func idx(indices []uint32) string {
	s := ""
	for _, x := range indices {
		s += fmt.Sprintf("[%d]", x)
	}
	return s
}

// TestCrashReadsStateFiles: crash finds every group, and every tag of the
// cpu and memory groups, where ParseCheckpoint does, with the same sizes
// and values; and the Memory block (memory inside the state file) at the
// same position.
func TestCrashReadsStateFiles(t *testing.T) {
	crash := crashPeer(t)
	self, err := os.Executable() // an ELF file for crash's namelist argument
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	flat := mixedMemory(40, 24*PageSize)
	for _, embedded := range []bool{false, true} {
		s := StateFile{CrashReadable: true}
		s.Group("Checkpoint").Uint32("version", 8)
		cpu := s.Group("cpu").Uint32("cpu:numVCPUs", 2)
		for c := uint32(0); c < 2; c++ {
			for i, v := range []uint64{0x80050033, 0, 0, 0x1ae000 + uint64(c)<<12, 0x350ef8} {
				cpu.Uint64("CR64", v, c, uint32(i))
			}
			cpu.Uint64("rip", 0xfffff80000001000+uint64(c), c)
		}
		var emb []byte
		if embedded {
			emb = flat
		}
		s.MemoryGroup(handRegions, []uint64{0, 5}, emb)
		b, err := s.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseCheckpoint(bytes.NewReader(b), int64(len(b)), "")
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < CrashMinSize(len(c.Groups)) {
			t.Fatalf("%d bytes, crash needs %d", len(b), CrashMinSize(len(c.Groups)))
		}
		name := fmt.Sprintf("state%v", embedded)
		if err := os.WriteFile(filepath.Join(dir, name+".vmss"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".vmem"), flat, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(crash, "-d", "1", self, name+".vmss")
		cmd.Dir = dir
		out, _ := cmd.CombinedOutput() // crash fails later, without a kernel

		groups := crashGroup.FindAllStringSubmatch(string(out), -1)
		if len(groups) != len(c.Groups) {
			t.Fatalf("crash saw %d groups, vmcrypt %d:\n%s", len(groups), len(c.Groups), out)
		}
		for i, g := range groups {
			if g[1] != c.Groups[i].Name || hex64(t, g[2]) != c.Groups[i].Offset {
				t.Fatalf("group %d: crash %s at %s, vmcrypt %s at %#x", i, g[1], g[2], c.Groups[i].Name, c.Groups[i].Offset)
			}
		}
		items := crashItem.FindAllStringSubmatch(string(out), -1)
		blocks := crashBlock.FindAllStringSubmatch(string(out), -1)
		var want, wantBlocks int
		for _, gn := range []string{"cpu", "memory"} {
			for _, tg := range c.Group(gn).Tags {
				if tg.Block != nil {
					if tg.Name == "Memory" {
						wantBlocks++
						bl := blocks[0]
						if bl[1]+bl[2] != tg.Name+idx(tg.Indices) || hex64(t, bl[3]) != tg.Block.DataOffset || hex64(t, bl[4]) != int64(tg.Block.DiskSize) || hex64(t, bl[5]) != int64(tg.Block.MemSize) {
							t.Fatalf("Memory block: crash %q, vmcrypt %+v", bl[0], tg.Block)
						}
					}
					continue
				}
				if want >= len(items) {
					t.Fatalf("crash printed %d items, vmcrypt has more:\n%s", len(items), out)
				}
				it := items[want]
				want++
				valPos := tg.Offset + 2 + int64(len(tg.Name)) + 4*int64(len(tg.Indices))
				v, _ := tg.Uint()
				if it[1] != tg.Name || it[2] != idx(tg.Indices) || hex64(t, it[3]) != valPos || hex64(t, it[4]) != int64(len(tg.Value)) || hex64(t, it[5]) != int64(v) {
					t.Fatalf("tag %s%s: crash %q; vmcrypt value at %#x, %d bytes, %#x", tg.Name, idx(tg.Indices), it[0], valPos, len(tg.Value), v)
				}
			}
		}
		if want != len(items) || wantBlocks != len(blocks) {
			t.Fatalf("crash printed %d items and %d Memory blocks, vmcrypt has %d and %d", len(items), len(blocks), want, wantBlocks)
		}
		if embedded == bytes.Contains(out, []byte("Try to locate the companion vmem file")) {
			t.Fatalf("embedded %v: crash looked for a .vmem: %v", embedded, !embedded)
		}
	}
}
