package esxi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// Fuzz targets of every parser of untrusted bytes in the package: the
// envelope's attribute list and header, the key store, visor tar headers
// and whole archives, member names, and Detect. Inputs are capped inside
// each target so that each runs thousands of times a second.

// FuzzParseAttributes: never panics; what parses re-serialises byte for
// byte; a failure is a *FormatError.
func FuzzParseAttributes(f *testing.F) {
	raw := readTestdata(f, realEnvelope)
	f.Add(raw[attrStart:BlockSize])
	f.Add(MarshalAttributes([]Attribute{{Type: AttrUint32, Name: "n", Value: []byte{1, 2, 3, 4}}, {Type: AttrFloat64, Name: "f", Value: make([]byte, 8)}}))
	f.Add([]byte{0x0c, 0, 0, 0, 'a', 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > BlockSize {
			b = b[:BlockSize]
		}
		attrs, n, err := ParseAttributes("f", b, attrStart)
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("error is not a *FormatError: %v", err)
			}
			return
		}
		if !bytes.Equal(MarshalAttributes(attrs), b[:n]) {
			t.Fatalf("attributes do not re-serialise: %x", b[:n])
		}
		for _, a := range attrs {
			_ = a.Text()
		}
	})
}

// FuzzParseEnvelope: the first 1 KiB of the header block, the start of the
// footer block and its tag size and version come from the fuzzer, around
// one data block: Parse never panics, errors carry a sentinel, and a
// parsed envelope refuses a wrong key by its hash.
func FuzzParseEnvelope(f *testing.F) {
	raw := readTestdata(f, realEnvelope)
	foot := raw[len(raw)-BlockSize:]
	f.Add(raw[:0x2c0], foot[:48], uint32(16), uint32(1))
	f.Add(raw[:0x220], foot[:30], uint32(12), uint32(2))
	f.Fuzz(func(t *testing.T, hdr, ft []byte, tagSize, version uint32) {
		b := make([]byte, 3*BlockSize)
		copy(b, hdr[:min(len(hdr), 1024)])
		copy(b[2*BlockSize:], ft[:min(len(ft), 64)])
		binary.LittleEndian.PutUint32(b[2*BlockSize+footTagSizeOff:], tagSize)
		binary.LittleEndian.PutUint32(b[2*BlockSize+footVersionOff:], version)
		e, err := parseBytes(t, b)
		if err != nil {
			if !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if e.DataSize != BlockSize || len(e.KeyHash) != 32 || len(e.IV) != 12 {
			t.Fatalf("inconsistent envelope %+v", e)
		}
		if _, err := e.Decrypt(make([]byte, 32), nil, DecryptOptions{}); err == nil {
			t.Fatal("an all-zero key opened a fuzzed envelope")
		}
	})
}

// FuzzKeyStore: never panics; errors carry a sentinel; a mode NONE store
// written back by MarshalKeyStore parses to the same key id.
func FuzzKeyStore(f *testing.F) {
	f.Add(readTestdata(f, realKeyStore))
	f.Add([]byte("mode = \"TPM\"\nincludeKeyCache = \"TRUE\"\n"))
	f.Add([]byte("mode = \"NONE\"\nConfigEncData = \"keyId=AAAAAAAAAAAAAAAAAAAAAA%3d%3d:data1=AA%3d%3d:data2=AA%3d%3d:version=1\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 4096 {
			b = b[:4096]
		}
		ks, err := ParseKeyStore("f", b)
		if err != nil {
			if !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if ks.Sealed() {
			return
		}
		id := make([]byte, 16)
		for i := range 16 {
			var v byte
			for _, c := range []byte(strings.ReplaceAll(ks.KeyID, "-", "")[2*i : 2*i+2]) {
				v = v<<4 | unhexByte(c)
			}
			id[i] = v
		}
		back, err := ParseKeyStore("f", MarshalKeyStore(ks.IncludeKeyCache, id, ks.data1, ks.data2))
		if err != nil || back.KeyID != ks.KeyID || !bytes.Equal(back.data1, ks.data1) || !bytes.Equal(back.data2, ks.data2) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func unhexByte(c byte) byte {
	if c >= 'a' {
		return c - 'a' + 10
	}
	return c - '0'
}

// FuzzVMTarHeader: one header; never panics; errors carry a sentinel; a
// parsed member has a name, a size within bounds and a known type.
func FuzzVMTarHeader(f *testing.F) {
	raw := readTestdata(f, realVMTar)
	for i := 0; i < 6; i++ {
		f.Add(raw[i*512 : (i+1)*512])
	}
	f.Add(make([]byte, 512))
	f.Fuzz(func(t *testing.T, b []byte) {
		h := make([]byte, 512)
		copy(h, b)
		e, end, err := ParseVMTarHeader("f", h, 0)
		if err != nil {
			if !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) {
				t.Fatalf("error without a sentinel: %v", err)
			}
			return
		}
		if end {
			return
		}
		if e.Name == "" || e.Size < 0 || e.Size > MaxTarMemberSize || e.Type > TypeOther {
			t.Fatalf("bad entry %+v", e)
		}
	})
}

// FuzzWalkTar: a whole small archive (visor or plain tar): never panics,
// never hands out more data than a member's size, errors carry a sentinel
// (or are I/O errors of the in-memory reader: none).
func FuzzWalkTar(f *testing.F) {
	raw := readTestdata(f, realVMTar)
	f.Add(raw[:3584]) // the real headers, data cut
	f.Add(append(visorHeader("a", '0', 10, 2048), append(visorHeader("b", '0', 5, 2058), make([]byte, 1024+512+15)...)...))
	f.Add(makeTar(f, []member{{name: "d/", typ: '5'}, {name: "d/f", typ: '0', body: "data"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 8<<10 {
			b = b[:8<<10]
		}
		_, err := WalkTar("f", bytes.NewReader(b), func(e *Entry, d io.Reader) error {
			// At most 1 MiB: a sparse member may claim terabytes of holes
			// (the extractor refuses such sizes before reading).
			n, err := io.CopyN(io.Discard, d, 1<<20)
			if err == io.EOF {
				err = nil
			}
			if n > e.Size {
				t.Fatalf("%d bytes of a %d-byte member", n, e.Size)
			}
			return err
		})
		if err != nil && !errors.Is(err, keysafe.ErrCorrupt) && !errors.Is(err, keysafe.ErrUnsupported) {
			t.Fatalf("error without a sentinel: %v", err)
		}
	})
}

// FuzzCleanName: an accepted name never leaves the root.
func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"etc/a", "./x/", "../x", "/abs", "a/../../b", `c:\x`, "a/./b//c"} {
		f.Add(s, "target")
	}
	f.Fuzz(func(t *testing.T, name, link string) {
		c, err := CleanName("f", name)
		if err != nil {
			if !errors.Is(err, ErrUnsafeMember) {
				t.Fatalf("error without ErrUnsafeMember: %v", err)
			}
			return
		}
		if c == ".." || strings.HasPrefix(c, "../") || strings.HasPrefix(c, "/") || strings.Contains(c, `\`) {
			t.Fatalf("%q cleaned to %q", name, c)
		}
		e := &Entry{Name: name, Type: TypeSymlink, Linkname: link}
		if _, err := CheckEntry("f", e, DefaultLimits); err == nil {
			if strings.HasPrefix(link, "/") {
				t.Fatalf("absolute link %q accepted", link)
			}
		}
	})
}

// FuzzDetect: small files of any content: never panics.
func FuzzDetect(f *testing.F) {
	f.Add(readTestdata(f, realKeyStore))
	f.Add(tgz(f, file{NameKeyStore, readTestdata(f, realKeyStore)}, file{PathEsxConf, []byte("x")}))
	f.Add(readTestdata(f, realVMTar)[:1024])
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 8<<10 {
			b = b[:8<<10]
		}
		Detect(bytes.NewReader(b), int64(len(b)))
	})
}
