package xts

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"
)

// opensslXTS runs requests through OpenSSL's libcrypto (EVP AES-256-XTS)
// via testdata/openssl_xts.py: `openssl enc` itself refuses XTS ciphers
// ("enc XTS ciphers not supported"), so the script calls the library the
// openssl command uses. Each request is one 512-byte sector; the answer is
// the output, or nil when OpenSSL refuses the key.
type opensslReq struct {
	encrypt bool
	key     []byte
	lba     uint64
	data    []byte
}

func opensslXTS(t *testing.T, reqs []opensslReq) [][]byte {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl is required as a peer (scripts/peers.sh installs it): %v", err)
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is required to drive OpenSSL's libcrypto as a peer: %v", err)
	}
	var in bytes.Buffer
	for _, r := range reqs {
		op := "d"
		if r.encrypt {
			op = "e"
		}
		fmt.Fprintf(&in, "%s %x %d %x\n", op, r.key, r.lba, r.data)
	}
	cmd := exec.Command(py, "testdata/openssl_xts.py")
	cmd.Stdin = &in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl peer: %v\n%s", err, stderr.String())
	}
	t.Logf("peer: %s", strings.TrimSpace(stderr.String()))
	var res [][]byte
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if sc.Text() == "ERR" {
			res = append(res, nil)
			continue
		}
		b, err := hex.DecodeString(sc.Text())
		if err != nil {
			t.Fatalf("openssl peer output: %v", err)
		}
		res = append(res, b)
	}
	if len(res) != len(reqs) {
		t.Fatalf("openssl peer answered %d of %d requests", len(res), len(reqs))
	}
	return res
}

func TestAgainstOpenSSL(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	key := make([]byte, KeySize)
	for i := range key {
		key[i] = byte(r.Uint32())
	}
	c, _ := New(key)
	// Sectors lba..lba+5 for each start: crossing 2^32 and wrapping at 2^64.
	const n = 6
	lbas := []uint64{0, 1<<32 - 2, ^uint64(0) - 3}
	srcs := make([][]byte, len(lbas))
	var reqs []opensslReq
	for i, lba := range lbas {
		srcs[i] = make([]byte, n*SectorSize)
		for j := range srcs[i] {
			srcs[i][j] = byte(r.Uint32())
		}
		for _, enc := range []bool{false, true} {
			for s := 0; s < n; s++ {
				reqs = append(reqs, opensslReq{enc, key, lba + uint64(s), srcs[i][s*SectorSize : (s+1)*SectorSize]})
			}
		}
	}
	res := opensslXTS(t, reqs)
	forEachImpl(t, func(t *testing.T, im impl) {
		for i, lba := range lbas {
			for k, enc := range []bool{false, true} {
				got := make([]byte, n*SectorSize)
				c.cryptImpl(im, got, srcs[i], lba, enc)
				for s := 0; s < n; s++ {
					if !bytes.Equal(got[s*SectorSize:(s+1)*SectorSize], res[(2*i+k)*n+s]) {
						t.Errorf("lba %#x sector %d encrypt=%v: differs from OpenSSL", lba, s, enc)
					}
				}
			}
		}
	})
}

// TestEqualHalvesLikeOpenSSL documents the K1 == K2 policy: OpenSSL 3
// decrypts with such a key but refuses to encrypt; New accepts it (we only
// need to read existing data) and WeakKey flags it for writers.
func TestEqualHalvesLikeOpenSSL(t *testing.T) {
	key := bytes.Repeat([]byte{0x11}, KeySize)
	data := bytes.Repeat([]byte{0x5c}, SectorSize)
	res := opensslXTS(t, []opensslReq{{false, key, 9, data}, {true, key, 9, data}})
	if res[0] == nil {
		t.Fatal("OpenSSL refused to decrypt with K1 == K2; the documented policy needs revisiting")
	}
	if res[1] != nil {
		t.Fatal("OpenSSL encrypted with K1 == K2; the documented policy needs revisiting")
	}
	c, err := New(key)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, SectorSize)
	c.DecryptSectors(got, data, 9)
	if !bytes.Equal(got, res[0]) {
		t.Fatal("decryption with K1 == K2 differs from OpenSSL")
	}
	if !WeakKey(key) {
		t.Fatal("WeakKey does not flag K1 == K2")
	}
}
