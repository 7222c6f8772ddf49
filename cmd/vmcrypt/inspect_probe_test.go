package main

import (
	"encoding/binary"
	"os"
	"testing"
)

// sparseHead is a 4 KiB hosted sparse header with the given descriptor
// offset and size (sectors) and text at sector 1.
func sparseHead(off, size uint64, text string) []byte {
	b := make([]byte, 4096)
	copy(b, "KDMV")
	binary.LittleEndian.PutUint32(b[4:], 1)
	binary.LittleEndian.PutUint64(b[28:], off)
	binary.LittleEndian.PutUint64(b[36:], size)
	copy(b[512:], text)
	return b
}

// A descriptor size near 2^64 once made off+size wrap and the probe panic.
func TestProbeVMDKHostileSizes(t *testing.T) {
	for _, size := range []uint64{^uint64(0), ^uint64(0) - 1, 1 << 63, 7} {
		kind, enc, _, ks := vmProbeVMDKHead(sparseHead(1, size, "encryptionKeys=\"vmware:key/list/()\"\n"))
		if kind != "disk" || enc == nil || !*enc || ks != "vmware:key/list/()" {
			t.Errorf("size %#x: kind %q enc %v keysafe %q", size, kind, enc, ks)
		}
	}
	if _, enc, _, _ := vmProbeVMDKHead(sparseHead(9, 1, "")); enc != nil {
		t.Errorf("descriptor beyond the probe: encrypted = %v, want unknown", *enc)
	}
}

func FuzzProbeVMDKHead(f *testing.F) {
	f.Add(sparseHead(1, ^uint64(0), "createType=\"monolithicSparse\"\n"))
	f.Add([]byte("# Disk DescriptorFile\nencryptionKeys=\"vmware:key/list/()\"\n"))
	if b, err := os.ReadFile("../../../shared/vmdk-samples/vmdk-rs/monolithicSparse.vmdk"); err == nil {
		f.Add(b[:4096])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		vmProbeVMDKHead(b) // must not panic
	})
}
