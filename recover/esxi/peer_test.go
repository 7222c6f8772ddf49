package esxi

import (
	"bytes"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The peer: python3 with the cryptography package (AESGCM, PBKDF2HMAC from
// OpenSSL), an implementation independent of Go's crypto.
const pyEnvelope = `
import sys, struct, hashlib
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives import hashes
path, keyhex, context = sys.argv[1], sys.argv[2], sys.argv[3].encode()
f = open(path, 'rb').read()
hsize = struct.unpack('<I', f[0x1f8:0x1fc])[0] + 512
iv = bytes.fromhex(sys.argv[4])
tag = f[-4096 + 0x20:-4096 + 0x30]
pt = AESGCM(bytes.fromhex(keyhex)).decrypt(iv, f[hsize:-4096] + tag, f[:hsize] + context)
pad = struct.unpack('<I', pt[-512 + 0x1f8:-512 + 0x1fc])[0]
sys.stdout.write(hashlib.sha256(pt[:len(pt) - 4096 - pad]).hexdigest() + '\n')
if len(sys.argv) > 6:
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=bytes.fromhex(sys.argv[6]), iterations=100000)
    sys.stdout.write(kdf.derive(bytes.fromhex(sys.argv[5]) + b"This is obfuscation, not encryption. If you want encryption, use TPM.").hex() + '\n')
`

func python(t *testing.T, args ...string) []string {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 with python3-cryptography is required as a peer (scripts/peers.sh installs it)")
	}
	cmd := exec.Command("python3", append([]string{"-c", pyEnvelope}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 peer: %v: %s", err, stderr.String())
	}
	return strings.Fields(string(out))
}

// TestPeerPythonCryptography: envelopes written by Writer (with and without
// a context, payloads of several sizes) open in python's cryptography
// (OpenSSL's AES-GCM) to the same payload, and its PBKDF2 derives the
// same mode NONE key from a key store written by MarshalKeyStore.
func TestPeerPythonCryptography(t *testing.T) {
	key := testKey()
	data1, data2 := []byte("0123456789abcdef"), []byte("salt-salt-salt-!")
	for i, n := range []int{0, 1, 4096, 70000} {
		payload := bytes.Repeat([]byte{byte(i + 1), 0x42}, n/2+1)[:n]
		ctx := []string{"", ContextConfiguration}[i%2]
		iv := []byte("iv-of-12byte")
		var env bytes.Buffer
		w, err := NewWriter(&env, key, WriterOptions{KeyID: "peer", IV: iv, Context: ctx, Fill: bytes.NewReader(bytes.Repeat([]byte{0x5a}, 8192))})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(payload)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "peer.ve")
		os.WriteFile(p, env.Bytes(), 0o600)
		args := []string{p, hex.EncodeToString(key), ctx, hex.EncodeToString(iv)}
		if i == 0 {
			args = append(args, hex.EncodeToString(data1), hex.EncodeToString(data2))
		}
		out := python(t, args...)
		if len(out) != 1+len(args)/6 || out[0] != sha(payload) {
			t.Fatalf("size %d: python reads %v, want %s", n, out, sha(payload))
		}
		if i == 0 {
			derived, err := DeriveKeyStoreKey(data1, data2)
			if err != nil || hex.EncodeToString(derived) != out[1] {
				t.Fatalf("PBKDF2 differs from python: %x vs %s", derived, out[1])
			}
		}
	}
	// The real vector through the peer too.
	out := python(t, realEnvelope, realKeyHex, ContextConfiguration, hex.EncodeToString(DefaultIV))
	if len(out) != 1 || out[0] != realPlainSHA {
		t.Fatalf("python reads the real vector as %v", out)
	}
}
