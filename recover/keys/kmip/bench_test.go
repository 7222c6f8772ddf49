package kmip

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vmcrypt/vmcrypt/recover/keys/kmip/kmiptest"
)

// Benchmarks against PyKMIP (one shared server). Each iteration does a
// fixed amount of work, so `-benchtime 1x` (scripts/bench.sh) measures
// something. Metrics:
//
//	ns/get          vmcrypt's client, one Get (GetAttributes+Get batched), connection reused
//	ns/get-PyKMIP   PyKMIP's own client (ProxyKmipClient.get, one connection), timed inside Python
//	x-vs-PyKMIP     ns/get-PyKMIP / ns/get: above 1 means vmcrypt's client is faster
//	round-trips/key requests per distinct key (goal 1)
//	dials           TLS connections opened for all the keys (goal 1)

const benchGets = 100

var (
	benchOnce sync.Once
	benchUIDs []string
)

func benchKeys(b *testing.B, s *kmiptest.Server) []string {
	benchOnce.Do(func() { benchUIDs = s.CreateKeys(b, 200, kmiptest.CreateOptions{}) })
	return benchUIDs
}

func BenchmarkGet(b *testing.B) {
	s := kmiptest.Shared(b)
	uids := benchKeys(b, s)[:20]
	c, err := NewClient(Config{Servers: []string{s.Addr}, Certificate: s.PKI.Client.TLS(), RootCAs: s.PKI.Pool()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Get(ctx, uids[0]); err != nil { // connect outside the timing, as PyKMIP's timing does
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for j := 0; j < benchGets; j++ {
			k, err := c.Get(ctx, uids[j%len(uids)])
			if err != nil {
				b.Fatal(err)
			}
			k.Zero()
		}
	}
	ours := time.Since(start) / time.Duration(b.N*benchGets)
	b.StopTimer()
	py := s.PyGetTime(b, uids, benchGets/len(uids))
	b.ReportMetric(float64(ours.Nanoseconds()), "ns/get")
	b.ReportMetric(float64(py.Nanoseconds()), "ns/get-PyKMIP")
	b.ReportMetric(float64(py)/float64(ours), "x-vs-PyKMIP")
}

// BenchmarkDistinctKeys fetches 200 distinct keys with one client, from
// a cold start (the TLS handshake included), as kms verify would.
func BenchmarkDistinctKeys(b *testing.B) {
	s := kmiptest.Shared(b)
	uids := benchKeys(b, s)
	b.ResetTimer()
	var st Stats
	for i := 0; i < b.N; i++ {
		c, err := NewClient(Config{Servers: []string{s.Addr}, Certificate: s.PKI.Client.TLS(), RootCAs: s.PKI.Pool()})
		if err != nil {
			b.Fatal(err)
		}
		for _, u := range uids {
			k, err := c.Get(context.Background(), u)
			if err != nil {
				b.Fatal(err)
			}
			k.Zero()
		}
		c.Close()
		st = c.Stats()
	}
	b.ReportMetric(float64(st.RoundTrips)/float64(len(uids)), "round-trips/key")
	b.ReportMetric(float64(st.Dials), "dials")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N*len(uids)), "ms/key")
}
