package keysafe

import (
	"bytes"
	"encoding/hex"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// openssl runs the openssl peer (OpenSSL 3); a missing peer fails the test.
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

// The PBKDF2 KEK and the AES-256-CBC layer of both vector key safes agree
// with OpenSSL: the KEK from `openssl kdf PBKDF2`, the dict from
// `openssl enc -d -aes-256-cbc` with it.
func TestPeerOpenSSLKeySafe(t *testing.T) {
	for _, name := range []string{"workstation-encrypted.vmx", "xts-selfgen.vmx"} {
		p := vmxKeySafe(t, name).Pairs()[0]
		pp, err := ParsePhraseParams(p.Locker.KeyGenData)
		if err != nil {
			t.Fatal(err)
		}
		ours, err := DerivePhraseKEK(pp, []byte("password"))
		if err != nil {
			t.Fatal(err)
		}
		out := openssl(t, nil, "kdf", "-keylen", strconv.Itoa(len(ours)), "-kdfopt", "digest:SHA1", "-kdfopt", "pass:password",
			"-kdfopt", "hexsalt:"+hex.EncodeToString(pp.Salt), "-kdfopt", "iter:"+strconv.Itoa(pp.Rounds), "PBKDF2")
		theirs, err := hex.DecodeString(strings.ReplaceAll(strings.TrimSpace(string(out)), ":", ""))
		if err != nil || !bytes.Equal(theirs, ours) {
			t.Fatalf("%s: PBKDF2 differs from openssl:\n ours %x\n openssl %s", name, ours, out)
		}
		ct := p.Locked[16 : len(p.Locked)-20]
		dict := openssl(t, ct, "enc", "-d", "-aes-256-cbc", "-K", hex.EncodeToString(ours[:32]), "-iv", hex.EncodeToString(p.Locked[:16]))
		k, err := UnlockPhrase(p, []byte("password"))
		if err != nil {
			t.Fatal(err)
		}
		if string(dict) != k.Dict() {
			t.Fatalf("%s: openssl decrypts to %q, we read %q", name, dict, k.Dict())
		}
		mac := openssl(t, dict, "dgst", "-sha1", "-mac", "HMAC", "-macopt", "hexkey:"+hex.EncodeToString(ours), "-binary")
		if !bytes.Equal(mac, p.Locked[len(p.Locked)-20:]) {
			t.Fatalf("%s: openssl HMAC differs", name)
		}
	}
}
