package vmx

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"os/exec"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

func openssl(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatal("openssl is needed as a peer (make peers)")
	}
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v: %s", args, err, stderr.String())
	}
	return out
}

// encryption.data agrees with OpenSSL both ways: openssl decrypts the real
// Workstation data and our EncryptData output to what DecryptData reads,
// and its HMAC-SHA1 matches the stored MAC.
func TestPeerOpenSSLData(t *testing.T) {
	f := mustParse(t, readVector(t, "workstation-encrypted.vmx"))
	key, _ := keysafe.ParseKeyDict("type=key:cipher=AES-256:key=i7BE98D0tBWWFK9hKfi/HRfRmwKuAF4/UJtB6Z3cHM4%3d")
	_, data, _, _ := f.Encryption()
	ours, err := DecryptData(key, data)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := EncryptData(key, ours, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{data, fresh} {
		raw, _ := base64.StdEncoding.DecodeString(d)
		plain := openssl(t, raw[16:len(raw)-20], "enc", "-d", "-aes-256-cbc", "-K", hex.EncodeToString(key.Bytes), "-iv", hex.EncodeToString(raw[:16]))
		if !bytes.Equal(plain, ours) {
			t.Fatal("openssl decrypts encryption.data differently")
		}
		mac := openssl(t, plain, "dgst", "-sha1", "-mac", "HMAC", "-macopt", "hexkey:"+hex.EncodeToString(key.Bytes), "-binary")
		if !bytes.Equal(mac, raw[len(raw)-20:]) {
			t.Fatal("openssl HMAC-SHA1 differs from the stored MAC")
		}
	}
}
