package main

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/sha1"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zlib"
	"github.com/urfave/cli/v2"

	"github.com/vmcrypt/vmcrypt/recover/xts"
)

// benchmark: like `cryptsetup benchmark`, the speed of the primitives a
// recovery spends its time in, and what that means for a 100 GiB disk.

const (
	benchDefaultSeconds = 0.5
	benchMaxSeconds     = 60
	benchXTSBuffer      = 1 << 20  // 1 MiB of 512-byte sectors per call, as recover does
	benchGrain          = 64 << 10 // a streamOptimized grain (128 sectors)
	benchPBKDF2Chunk    = 1000     // iterations per pbkdf2.Key call
	benchRecoverBytes   = 100 << 30
)

// benchResult is the --json output; rates are decimal (GB = 1e9 bytes).
type benchResult struct {
	SecondsPerTest         float64 `json:"seconds_per_test"`
	Cores                  int     `json:"cores"`
	XTSImplementation      string  `json:"xts_implementation"`
	XTSDecryptGBps1Core    float64 `json:"xts_decrypt_gbps_1core"`
	XTSDecryptGBpsAllCores float64 `json:"xts_decrypt_gbps_all_cores"`
	PBKDF2SHA1IterPerSec   float64 `json:"pbkdf2_sha1_iterations_per_sec"`
	InflateMBps1Core       float64 `json:"inflate_mbps_1core"`
	Recover100GiBSeconds   float64 `json:"recover_100gib_seconds"`
	Recover100GiBFormula   string  `json:"recover_100gib_formula"`
}

const benchFormula = "100 GiB / xts_decrypt_gbps_all_cores: the CPU-bound lower bound; " +
	"a real recovery takes 100 GiB / min(XTS on all cores, disk read, disk write), " +
	"and for streamOptimized disks also min(..., inflate on all cores); disk speeds are not measured here"

func init() {
	register(&cli.Command{
		Name:  "benchmark",
		Usage: "measure XTS-AES-256, PBKDF2 and inflate speed on this machine (like cryptsetup benchmark)",
		Description: "Each test runs for --seconds on the CPU only (no files are read or written). " +
			"XTS-AES-256 decryption is measured on one core and on all cores (GOMAXPROCS goroutines) " +
			"in 1 MiB calls of 512-byte sectors; PBKDF2-HMAC-SHA1 in iterations per second for a " +
			"32-byte key (a VMX passphrase key safe); inflate on 64 KiB zlib grains of semi-compressible data.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the figures as one JSON object"},
			&cli.Float64Flag{Name: "seconds", Value: benchDefaultSeconds, Usage: "duration of each test, in seconds"},
		},
		Action: benchmarkAction,
	})
}

func benchmarkAction(c *cli.Context) error {
	if c.NArg() != 0 {
		return usagef("benchmark takes no arguments")
	}
	secs := c.Float64("seconds")
	if !(secs > 0 && secs <= benchMaxSeconds) {
		return usagef("--seconds must be more than 0 and at most %d", benchMaxSeconds)
	}
	d := time.Duration(secs * float64(time.Second))
	r := benchResult{SecondsPerTest: secs, Cores: runtime.GOMAXPROCS(0), XTSImplementation: xts.Implementation()}
	var err error
	if r.XTSDecryptGBps1Core, err = benchXTS(d, 1); err != nil {
		return err
	}
	if r.XTSDecryptGBpsAllCores, err = benchXTS(d, r.Cores); err != nil {
		return err
	}
	if r.PBKDF2SHA1IterPerSec, err = benchPBKDF2(d); err != nil {
		return err
	}
	if r.InflateMBps1Core, err = benchInflate(d); err != nil {
		return err
	}
	r.Recover100GiBSeconds = benchRecoverBytes / (r.XTSDecryptGBpsAllCores * 1e9)
	r.Recover100GiBFormula = benchFormula

	w := c.App.Writer
	if c.Bool("json") {
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(r)
	}
	lines := []struct {
		label, value string
	}{
		{fmt.Sprintf("XTS-AES-256 decrypt, 1 core (%s)", r.XTSImplementation), fmt.Sprintf("%10.2f GB/s", r.XTSDecryptGBps1Core)},
		{fmt.Sprintf("XTS-AES-256 decrypt, %d cores", r.Cores), fmt.Sprintf("%10.2f GB/s", r.XTSDecryptGBpsAllCores)},
		{"PBKDF2-HMAC-SHA1, 32-byte key", fmt.Sprintf("%10.0f iterations/s", r.PBKDF2SHA1IterPerSec)},
		{"inflate, 64 KiB zlib grains, 1 core", fmt.Sprintf("%10.0f MB/s", r.InflateMBps1Core)},
		{"recover 100 GiB, CPU bound", fmt.Sprintf("%10.1f s", r.Recover100GiBSeconds)},
	}
	if _, err := fmt.Fprintf(w, "# Tests are approximate, CPU only, %.2f s each (--seconds).\n", secs); err != nil {
		return err
	}
	for _, l := range lines {
		if _, err := fmt.Fprintf(w, "%-44s %s\n", l.label, l.value); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(w, "# recover 100 GiB = %s\n", benchFormula)
	return err
}

// benchXTS decrypts 1 MiB buffers in place on `workers` goroutines for d
// and returns the total rate in GB/s.
func benchXTS(d time.Duration, workers int) (float64, error) {
	key := make([]byte, xts.KeySize)
	for i := range key {
		key[i] = byte(i*31 + 7)
	}
	c, err := xts.New(key)
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	total := make([]int64, workers)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, benchXTSBuffer)
			lba := uint64(w) << 40
			// At least one call each: on a loaded machine a goroutine may
			// start after d has passed, and a zero rate is meaningless.
			for total[w] == 0 || time.Since(start) < d {
				c.DecryptSectors(buf, buf, lba)
				lba += benchXTSBuffer / xts.SectorSize
				total[w] += benchXTSBuffer
			}
		}()
	}
	wg.Wait()
	var sum int64
	for _, n := range total {
		sum += n
	}
	return float64(sum) / time.Since(start).Seconds() / 1e9, nil
}

// benchPBKDF2 runs PBKDF2-HMAC-SHA1 with a 32-byte output in chunks of
// benchPBKDF2Chunk iterations for d and returns iterations per second.
func benchPBKDF2(d time.Duration) (float64, error) {
	salt := []byte("vmcrypt-salt-16b")
	start, iters := time.Now(), 0
	for iters == 0 || time.Since(start) < d {
		if _, err := pbkdf2.Key(sha1.New, "correct horse battery staple", salt, benchPBKDF2Chunk, 32); err != nil {
			return 0, err
		}
		iters += benchPBKDF2Chunk
	}
	return float64(iters) / time.Since(start).Seconds(), nil
}

// benchGrainData is 64 KiB of semi-compressible data (zlib level 6 shrinks
// it to about 40 %): lines of words from a small vocabulary with random
// numbers, like logs and text on a guest disk.
func benchGrainData() []byte {
	words := []string{"vmware", "sector", "grain", "extent", "kernel", "inode", "block", "journal", "config", "user"}
	r := rand.New(rand.NewPCG(1, 1))
	var b bytes.Buffer
	for b.Len() < benchGrain {
		fmt.Fprintf(&b, "%s %s %08x %d\n", words[r.IntN(len(words))], words[r.IntN(len(words))], r.Uint32(), r.IntN(100000))
	}
	return b.Bytes()[:benchGrain]
}

// benchInflate decompresses one zlib-compressed grain repeatedly for d and
// returns the uncompressed MB/s.
func benchInflate(d time.Duration) (float64, error) {
	plain := benchGrainData()
	var z bytes.Buffer
	zw := zlib.NewWriter(&z)
	if _, err := zw.Write(plain); err != nil {
		return 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	comp := z.Bytes()
	src := bytes.NewReader(comp)
	zr, err := zlib.NewReader(src)
	if err != nil {
		return 0, err
	}
	out := make([]byte, len(plain))
	start, n := time.Now(), 0
	for n == 0 || time.Since(start) < d {
		src.Reset(comp)
		if err := zr.(zlib.Resetter).Reset(src, nil); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(zr, out); err != nil {
			return 0, fmt.Errorf("inflate benchmark: %w", err)
		}
		n += len(out)
	}
	if !bytes.Equal(out, plain) {
		return 0, fmt.Errorf("inflate benchmark: decompressed grain differs from the original")
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}
