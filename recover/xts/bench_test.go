//go:build linux

package xts

import (
	"crypto/aes"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"testing"
	"time"

	xxts "golang.org/x/crypto/xts"
	"golang.org/x/sys/unix"
)

// threadCPU is the CPU time (user + system) the calling OS thread used.
func threadCPU(tb testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		tb.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

const benchCall = 1 << 20 // 1 MiB of 512-byte sectors per call

// BenchmarkDecrypt measures one core: 2048 sectors per call, in place.
func BenchmarkDecrypt(b *testing.B) {
	c, _ := New(benchKey())
	buf := make([]byte, benchCall)
	for _, im := range availableImpls() {
		b.Run(im.String(), func(b *testing.B) {
			b.SetBytes(benchCall)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				c.cryptImpl(im, buf, buf, uint64(i)*benchCall/SectorSize, false)
			}
		})
	}
	b.Run("x-crypto-xts", func(b *testing.B) {
		x, _ := xxts.NewCipher(aes.NewCipher, benchKey())
		b.SetBytes(benchCall)
		for b.Loop() {
			for s := 0; s < benchCall; s += SectorSize {
				x.Decrypt(buf[s:s+SectorSize], buf[s:s+SectorSize], uint64(s/SectorSize))
			}
		}
	})
}

// BenchmarkEncrypt is BenchmarkDecrypt's twin for the fixtures path.
func BenchmarkEncrypt(b *testing.B) {
	c, _ := New(benchKey())
	buf := make([]byte, benchCall)
	for _, im := range availableImpls() {
		b.Run(im.String(), func(b *testing.B) {
			b.SetBytes(benchCall)
			for i := 0; b.Loop(); i++ {
				c.cryptImpl(im, buf, buf, uint64(i)*benchCall/SectorSize, true)
			}
		})
	}
}

// openSSLRate runs `openssl speed -evp aes-256-xts -decrypt -bytes 512`
// and returns its bytes per second (the "The 'numbers' are in 1000s of
// bytes per second" table: one column, for 512-byte blocks).
func openSSLRate(tb testing.TB, seconds int) float64 {
	tb.Helper()
	path, err := exec.LookPath("openssl")
	if err != nil {
		tb.Fatalf("openssl is required as a peer (scripts/peers.sh installs it): %v", err)
	}
	out, err := exec.Command(path, "speed", "-evp", "aes-256-xts", "-decrypt", "-bytes", "512",
		"-seconds", strconv.Itoa(seconds)).CombinedOutput()
	if err != nil {
		tb.Fatalf("openssl speed: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^(?:AES-256-XTS|aes-256-xts)\s+([0-9.]+)k\s*$`).FindSubmatch(out)
	if m == nil {
		tb.Fatalf("openssl speed: no result line in:\n%s", out)
	}
	kps, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil || kps <= 0 {
		tb.Fatalf("openssl speed: bad figure %q", m[1])
	}
	return kps * 1000
}

// BenchmarkVsOpenSSL times our fastest path and openssl's AES-256-XTS
// decryption (512-byte calls, one core) in the same run and reports
// ours/openssl as x-vs-openssl (goal >= 0.8), plus x/crypto/xts for
// reference. Figures are GB/s of CPU time on one core (linux).
func BenchmarkVsOpenSSL(b *testing.B) {
	c, _ := New(benchKey())
	buf := make([]byte, benchCall)
	// rate measures bytes per second of this thread's CPU time (user +
	// system), the way openssl speed measures by default (CPU user time
	// unless -elapsed), so that other processes on a busy machine do not
	// skew the ratio.
	rate := func(f func()) float64 {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		f()
		start, wall, n := threadCPU(b), time.Now(), 0
		for threadCPU(b)-start < time.Second && time.Since(wall) < 3*time.Second {
			f()
			n++
		}
		return float64(n*benchCall) / (threadCPU(b) - start).Seconds()
	}
	for b.Loop() {
		ours := rate(func() { c.DecryptSectors(buf, buf, 1000) })
		x, _ := xxts.NewCipher(aes.NewCipher, benchKey())
		xc := rate(func() {
			for s := 0; s < benchCall; s += SectorSize {
				x.Decrypt(buf[s:s+SectorSize], buf[s:s+SectorSize], uint64(s/SectorSize))
			}
		})
		// The same 1 MiB, but one 512-byte sector per call, as openssl
		// speed -bytes 512 measures.
		ours512 := rate(func() {
			for s := 0; s < benchCall; s += SectorSize {
				c.DecryptSectors(buf[s:s+SectorSize], buf[s:s+SectorSize], uint64(s/SectorSize))
			}
		})
		perImpl := map[impl]float64{}
		for _, im := range availableImpls() {
			if im != implGeneric {
				perImpl[im] = rate(func() { c.cryptImpl(im, buf, buf, 1000, false) })
			}
		}
		ossl := openSSLRate(b, 1)
		for im, r := range perImpl {
			b.ReportMetric(r/1e9, im.String()+"-GB/s")
			b.ReportMetric(r/ossl, im.String()+"-x-vs-openssl")
		}
		b.ReportMetric(ours/1e9, "ours-GB/s")
		b.ReportMetric(ours512/1e9, "ours-512B-calls-GB/s")
		b.ReportMetric(ossl/1e9, "openssl-GB/s")
		b.ReportMetric(xc/1e9, "xcrypto-GB/s")
		b.ReportMetric(ours/ossl, "x-vs-openssl")
		b.ReportMetric(ours512/ossl, "512B-calls-x-vs-openssl")
	}
}
