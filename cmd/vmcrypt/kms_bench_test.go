package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/keys/kmip"
	"github.com/vmcrypt/vmcrypt/recover/keys/kmip/kmiptest"
	"github.com/vmcrypt/vmcrypt/vmx"
	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

// BenchmarkKMSVerify1000 runs `kms verify` over a datastore of 1,000 VM
// folders (a VMX each, its fqid key safe over one of K distinct PyKMIP
// keys, no disks) against the shared PyKMIP server, in process: K = 50
// (VMs share keys, as VMs of one cluster often do) and K = 1000 (a key
// per VM, vCenter's default). Metrics:
//
//	ms/op          the whole command: walk, 1,000 VMs opened, the KMS asked
//	ms/vm          per VM
//	gets           key ids asked (goal: K, one per distinct key id)
//	round-trips    requests answered (goal: K)
//	connections    TLS connections opened (goal: 1)
//	ns/get         vmcrypt's client, one Get, connection reused
//	ns/get-PyKMIP  PyKMIP's own client on the same server (timed in Python)
//	x-vs-PyKMIP    ns/get-PyKMIP / ns/get (above 1: vmcrypt's client is faster)
//	kms-share      the part of ms/op spent waiting for the KMS (gets x ns/get)
func BenchmarkKMSVerify1000(b *testing.B) {
	for _, k := range []int{50, 1000} {
		b.Run(fmt.Sprintf("keys=%d", k), func(b *testing.B) { benchKMSVerify(b, k) })
	}
}

var benchKMSKeys = map[int][2][][]byte{} // K -> uids, key bytes

func benchKMSVerify(b *testing.B, nKeys int) {
	const nVMs = 1000
	s := kmiptest.Shared(b)
	cached, ok := benchKMSKeys[nKeys]
	if !ok {
		ids := s.CreateKeys(b, nKeys, kmiptest.CreateOptions{})
		for _, id := range ids {
			cached[0] = append(cached[0], []byte(id))
		}
		cached[1] = s.Keys(b, nil, ids...)
		benchKMSKeys[nKeys] = cached
	}
	uids := make([]string, nKeys)
	for i, id := range cached[0] {
		uids[i] = string(id)
	}
	keyBytes := cached[1]
	root := b.TempDir()
	plain, err := vmx.ParseBytes([]byte(".encoding = \"UTF-8\"\ndisplayName = \"bench\"\nconfig.version = \"8\"\nvirtualHW.version = \"19\"\n"))
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < nVMs; i++ {
		name := fmt.Sprintf("vm%04d", i)
		lock := kmsLocker("bench-kms", uids[i%nKeys], keyBytes[i%nKeys])
		enc, _, err := vmx.Encrypt(plain, lock, vmx.EncryptOptions{Cipher: keysafe.CipherXTSAES256}, rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".vmx"), enc.Bytes(), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	args := append([]string{"vmcrypt", "kms", "verify", root, "--json"}, kmsArgs(s, nil)...)
	var out kmsVerifyOut
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var o, e bytes.Buffer
		if code := run(args, &o, &e); code != exitOK {
			b.Fatalf("exit %d: %s", code, e.String())
		}
		b.StopTimer()
		out = kmsVerifyOut{}
		if err := json.Unmarshal(o.Bytes(), &out); err != nil {
			b.Fatal(err)
		}
		if len(out.VMs) != nVMs {
			b.Fatalf("%d rows", len(out.VMs))
		}
		for _, r := range out.VMs {
			if r.Status != kmsOpens {
				b.Fatalf("%s: %s", r.VM, r.Status)
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	perOp := b.Elapsed() / time.Duration(b.N)

	// Per-Get latency of vmcrypt's client and of PyKMIP's, same server,
	// same keys, connection reused.
	c, err := kmip.NewClient(kmip.Config{Servers: []string{s.Addr}, Certificate: s.PKI.Client.TLS(), RootCAs: s.PKI.Pool()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Get(ctx, uids[0]); err != nil {
		b.Fatal(err)
	}
	const rounds = 2
	start := time.Now()
	for r := 0; r < rounds; r++ {
		for _, u := range uids {
			k, err := c.Get(ctx, u)
			if err != nil {
				b.Fatal(err)
			}
			k.Zero()
		}
	}
	ours := time.Since(start) / time.Duration(rounds*len(uids))
	py := s.PyGetTime(b, uids, rounds)

	b.ReportMetric(float64(perOp.Microseconds())/1000, "ms/op")
	b.ReportMetric(float64(perOp.Microseconds())/1000/nVMs, "ms/vm")
	b.ReportMetric(float64(out.KMS.KeysAsked), "gets")
	b.ReportMetric(float64(out.KMS.RoundTrips), "round-trips")
	b.ReportMetric(float64(out.KMS.Connections), "connections")
	b.ReportMetric(float64(ours.Nanoseconds()), "ns/get")
	b.ReportMetric(float64(py.Nanoseconds()), "ns/get-PyKMIP")
	b.ReportMetric(float64(py)/float64(ours), "x-vs-PyKMIP")
	b.ReportMetric(float64(out.KMS.KeysAsked)*float64(ours)/float64(perOp), "kms-share")
}
