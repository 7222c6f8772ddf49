package vmdk

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const samplesDir = "testdata/samples"

// sampleDescriptors returns the descriptor text of every sample that is a
// text descriptor (or whose embedded descriptor starts at sector 1).
func sampleDescriptors(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for _, g := range []string{"vmdk-rs/*.vmdk", "vmdk-forensic/*.vmdk"} {
		files, _ := filepath.Glob(filepath.Join(samplesDir, g))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > 4 && string(b[:4]) == "KDMV" {
				if len(b) < 512+10240 {
					continue
				}
				b = b[512 : 512+10240]
			}
			if len(b) > MaxDescriptorSize || !strings.Contains(string(b), "createType") {
				continue
			}
			out[filepath.Base(f)] = b
		}
	}
	if len(out) < 8 {
		t.Fatalf("found %d sample descriptors in %s", len(out), samplesDir)
	}
	return out
}

func TestDescriptorSamples(t *testing.T) {
	for name, b := range sampleDescriptors(t) {
		d, err := ParseDescriptor(b, name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(d.Extents) == 0 {
			t.Errorf("%s: no extents", name)
		}
		checkRoundTrip(t, name, d)
	}
}

func TestDescriptorFields(t *testing.T) {
	text := "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=8f67ca74\nparentCID=0172e8a4\n" +
		"isNativeSnapshot=\"no\"\ncreateType=\"vmfsSparse\"\nparentFileNameHint=\"vmfs_thick.vmdk\"\n" +
		"encryptionKeys=\"vmware:key/list/(pair/(fqid/<VMWARE-NULL>/x%2fy,HMAC-SHA-256,abc))\"\n" +
		"# Extent description\nRW 4096 VMFSSPARSE \"vmfs thick-000001-delta.vmdk\"\nRDONLY 10 ZERO\nRW 20 FLAT \"f.vmdk\" 7\n" +
		"\n#DDB\nddb.longContentID = \"4b98\"\nddb.iofilters = \"vmwarevmcrypt\"\n"
	d, err := ParseDescriptor([]byte(text+"\x00\x00garbage"), "x.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	want := []ExtentLine{
		{AccessRW, 4096, ExtentVMFSSparse, "vmfs thick-000001-delta.vmdk", 0},
		{AccessRDONLY, 10, ExtentZero, "", 0},
		{AccessRW, 20, ExtentFlat, "f.vmdk", 7},
	}
	if d.Version != 1 || d.Encoding != "UTF-8" || d.CID != 0x8f67ca74 || d.ParentCID != 0x0172e8a4 ||
		d.CreateType != "vmfsSparse" || d.ParentFileNameHint != "vmfs_thick.vmdk" ||
		d.EncryptionKeys != "vmware:key/list/(pair/(fqid/<VMWARE-NULL>/x%2fy,HMAC-SHA-256,abc))" ||
		!reflect.DeepEqual(d.Extents, want) || !d.Encrypted() || d.Sectors() != 4126 {
		t.Fatalf("parsed %+v", d)
	}
	if v, _ := d.DDBValue("ddb.longContentID"); v != "4b98" {
		t.Fatalf("ddb.longContentID = %q", v)
	}
	if s := d.String(); s != text {
		t.Fatalf("unchanged descriptor not byte-exact:\n%s\nwant\n%s", s, text)
	}
	// edits land in place; unknown lines survive
	d.CID = 0x11223344
	d.EncryptionKeys = ""
	d.SetDDB("ddb.new", "v")
	s := d.String()
	for _, w := range []string{"CID=11223344\n", "isNativeSnapshot=\"no\"\n", "ddb.iofilters = \"vmwarevmcrypt\"\nddb.new = \"v\"\n"} {
		if !strings.Contains(s, w) {
			t.Errorf("edited descriptor lacks %q:\n%s", w, s)
		}
	}
	if strings.Contains(s, "encryptionKeys") {
		t.Errorf("removed encryptionKeys still written")
	}
}

func TestDescriptorFromScratch(t *testing.T) {
	d := &Descriptor{Version: 1, Encoding: "UTF-8", ParentCID: NoParentCID, CreateType: "monolithicSparse",
		Extents: []ExtentLine{{AccessRW, 2048, ExtentSparse, "a.vmdk", 0}}}
	d.NewContentID()
	d.SetDDB("ddb.adapterType", "lsilogic")
	b, err := d.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := ParseDescriptor(b, "a.vmdk")
	if err != nil {
		t.Fatal(err)
	}
	if d2.CID != d.CID || d2.CID == 0 || d2.CID == NoParentCID || !reflect.DeepEqual(d2.Extents, d.Extents) ||
		!reflect.DeepEqual(d2.DDB, d.DDB) || d2.CreateType != d.CreateType {
		t.Fatalf("round trip %+v != %+v", d2, d)
	}
	d.ParentFileNameHint = "evil\"\nCID=0"
	if _, err := d.Bytes(); err == nil {
		t.Fatal("Bytes accepted a value with a quote and newline")
	}
}

func TestDescriptorRefuses(t *testing.T) {
	for name, text := range map[string]string{
		"no createType": "version=1\nCID=1\nRW 1 FLAT \"a\" 0\n",
		"bad CID":       "CID=xyz\ncreateType=\"x\"\n",
		"bad version":   "version=9\ncreateType=\"x\"\n",
		"bad size":      "createType=\"x\"\nRW -1 FLAT \"a\" 0\n",
		"huge size":     "createType=\"x\"\nRW 99999999999999999 FLAT \"a\" 0\n",
		"bad type":      "createType=\"x\"\nRW 1 BOGUS \"a\" 0\n",
		"no file":       "createType=\"x\"\nRW 1 FLAT\n",
		"bad offset":    "createType=\"x\"\nRW 1 FLAT \"a\" x\n",
		"unterminated":  "createType=\"x\"\nRW 1 FLAT \"a\n",
	} {
		if _, err := ParseDescriptor([]byte(text), "t"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := ParseDescriptor(make([]byte, MaxDescriptorSize+1), "t"); !errors.Is(err, ErrCorrupt) {
		t.Errorf("oversized: %v", err)
	}
}

// checkRoundTrip asserts Parse(String(d)) has the same values and that
// String is a fixed point.
func checkRoundTrip(t testing.TB, name string, d *Descriptor) {
	s := d.String()
	d2, err := ParseDescriptor([]byte(s), name)
	if err != nil {
		t.Fatalf("%s: reparse: %v\n%s", name, err, s)
	}
	a, b := *d, *d2
	a.layout, b.layout = nil, nil
	if len(a.DDB) == 0 {
		a.DDB = nil
	}
	if len(b.DDB) == 0 {
		b.DDB = nil
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("%s: round trip changed values\n%+v\n%+v\ntext:\n%q", name, a, b, s)
	}
	if s2 := d2.String(); s2 != s {
		t.Fatalf("%s: String not a fixed point:\n%q\n%q", name, s, s2)
	}
}

func FuzzDescriptor(f *testing.F) {
	for _, b := range sampleDescriptors(f) {
		f.Add(b)
	}
	f.Add([]byte("createType=\"x\"\nRW 1 ZERO\nddb.a=b\nddb.a = \"c\"\n#c\nfoo=bar\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseDescriptor(data, "fuzz")
		if err != nil {
			if d != nil {
				t.Fatal("partial value on error")
			}
			return
		}
		checkRoundTrip(t, "fuzz", d)
	})
}

func TestReadDescriptor(t *testing.T) {
	for name, want := range map[string]string{
		"vmdk-forensic/ms3-win.vmdk":              "twoGbMaxExtentSparse", // text, extents missing
		"vmdk-rs/monolithicSparse.vmdk":           "monolithicSparse",     // embedded
		"vmdk-forensic/plaso_image.vmdk":          "monolithicSparse",
		"vmdk-rs/twoGbMaxExtentSparse.vmdk":       "twoGbMaxExtentSparse",
		"vmdk-rs/streamOptimizedWithMarkers.vmdk": "streamOptimized",
	} {
		d, err := ReadDescriptor(filepath.Join(samplesDir, name))
		if err != nil || d.CreateType != want {
			t.Errorf("%s: %v %+v", name, err, d)
		}
	}
	// an extent of a split disk has no descriptor
	if _, err := ReadDescriptor(filepath.Join(samplesDir, "vmdk-rs/twoGbMaxExtentSparse-s001.vmdk")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("split extent: %v, want ErrUnsupported", err)
	}
	if _, err := ReadDescriptor(filepath.Join(samplesDir, "vmdk-rs/vmfs_thick-flat.vmdk")); !errors.Is(err, ErrUnsupported) {
		t.Errorf("flat data: %v, want ErrUnsupported", err)
	}
}
