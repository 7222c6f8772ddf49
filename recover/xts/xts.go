// Package xts is a fast XTS-AES-256 (IEEE 1619) over 512-byte sectors, the
// cipher of encrypted VMDK data (FORMATS.md §8, MODEL): a 64-byte key (the
// first 32 bytes are the data key K1, the last 32 the tweak key K2), data
// unit one 512-byte sector, tweak the sector number (LBA) as a 128-bit
// little-endian integer (dm-crypt's plain64).
//
// On amd64 the work is done by assembly kernels that handle many sectors per
// call and compute the tweaks themselves: a VAES/AVX-512 kernel (16 blocks in
// flight) where the CPU has VAES, VPCLMULQDQ, AVX512F and AVX512BW, else an
// AES-NI kernel (8 blocks in flight). Other CPUs, and builds with the purego
// tag, use a pure-Go path on crypto/aes. All paths give identical output
// (tested against golang.org/x/crypto/xts and openssl).
package xts

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"unsafe"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

const (
	// SectorSize is the XTS data unit: one 512-byte disk sector.
	SectorSize = 512
	// KeySize is the length of an XTS-AES-256 key: K1 (data) || K2 (tweak).
	KeySize = 64

	blocksPerSector = SectorSize / 16
	// maxKernelSectors bounds one assembly call (64 KiB, ~15 µs) so that a
	// huge DecryptSectors call stays preemptible between chunks.
	maxKernelSectors = 128
)

// Cipher is an XTS-AES-256 cipher for 512-byte sectors. It is immutable
// after New and safe for concurrent use by many goroutines.
type Cipher struct {
	// sched is a 64-byte aligned view into a heap buffer holding, in this
	// order, the K1 encryption schedule, the K1 decryption schedule and the
	// K2 encryption schedule (240 bytes each). Aligned because the SSE
	// kernel uses round keys as 16-byte memory operands; on the heap so a
	// copy of the Cipher value keeps the same aligned buffer.
	sched []byte
	// b1 (K1) and b2 (K2) serve the pure-Go path.
	b1, b2 cipher.Block
}

const (
	offEnc1 = 0
	offDec1 = scheduleSize
	offEnc2 = 2 * scheduleSize
)

// New returns a Cipher for a 64-byte XTS-AES-256 key (K1 || K2).
//
// A key of any other length is refused with an error wrapping
// keysafe.ErrUnsupported. A key whose halves are equal (K1 == K2) is
// accepted: IEEE 1619-2018 and NIST SP 800-38E require the halves to
// differ when data is encrypted, but vmcrypt must decrypt whatever exists,
// and OpenSSL 3 likewise refuses such keys only for encryption. Callers
// that create new encrypted data should check WeakKey first.
func New(key []byte) (*Cipher, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("xts: key is %d bytes, XTS-AES-256 needs %d: %w", len(key), KeySize, keysafe.ErrUnsupported)
	}
	b1, err := aes.NewCipher(key[:32])
	if err != nil {
		return nil, err
	}
	b2, err := aes.NewCipher(key[32:])
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 3*scheduleSize+63)
	off := int((64 - uintptr(unsafe.Pointer(&buf[0]))%64) % 64)
	c := &Cipher{sched: buf[off : off+3*scheduleSize : off+3*scheduleSize], b1: b1, b2: b2}
	var unused [scheduleSize]byte
	expandKey256(key[:32], (*[scheduleSize]byte)(c.sched[offEnc1:]), (*[scheduleSize]byte)(c.sched[offDec1:]))
	expandKey256(key[32:], (*[scheduleSize]byte)(c.sched[offEnc2:]), &unused)
	clear(unused[:])
	return c, nil
}

// WeakKey reports whether the two halves of a 64-byte key are equal, which
// IEEE 1619-2018 forbids for encryption (decryption still works).
func WeakKey(key []byte) bool {
	if len(key) != KeySize {
		return false
	}
	var d byte
	for i := 0; i < 32; i++ {
		d |= key[i] ^ key[32+i]
	}
	return d == 0
}

// DecryptSectors decrypts len(src)/512 consecutive sectors from src into
// dst; the first sector has number lba, the next lba+1, and so on (the
// sector number wraps modulo 2^64, as a uint64 counter does). len(src) must
// be a multiple of 512 and dst at least as long; dst may be src itself
// (in place) but must not overlap it otherwise. Misuse panics, as with the
// standard library's cipher modes. It does not allocate.
func (c *Cipher) DecryptSectors(dst, src []byte, lba uint64) {
	c.crypt(dst, src, lba, false)
}

// EncryptSectors encrypts len(src)/512 consecutive sectors from src into
// dst, the first with sector number lba; the rules are DecryptSectors'.
func (c *Cipher) EncryptSectors(dst, src []byte, lba uint64) {
	c.crypt(dst, src, lba, true)
}

func (c *Cipher) crypt(dst, src []byte, lba uint64, encrypt bool) {
	if len(src)%SectorSize != 0 {
		panic("xts: input is not a whole number of 512-byte sectors")
	}
	if len(dst) < len(src) {
		panic("xts: output smaller than input")
	}
	if len(src) == 0 {
		return
	}
	dst = dst[:len(src)]
	if inexactOverlap(dst, src) {
		panic("xts: invalid buffer overlap")
	}
	c.cryptImpl(activeImpl, dst, src, lba, encrypt)
}

// cryptImpl runs one implementation; tests call it for every implementation
// this CPU supports.
func (c *Cipher) cryptImpl(im impl, dst, src []byte, lba uint64, encrypt bool) {
	if im == implGeneric {
		c.cryptGeneric(dst, src, lba, encrypt)
		return
	}
	for len(src) > 0 {
		n := len(src) / SectorSize
		if n > maxKernelSectors {
			n = maxKernelSectors
		}
		c.cryptKernel(im, dst[:n*SectorSize], src[:n*SectorSize], lba, encrypt)
		dst, src = dst[n*SectorSize:], src[n*SectorSize:]
		lba += uint64(n)
	}
}

// inexactOverlap reports whether x and y share memory at different
// offsets (same idea as crypto/internal/alias).
func inexactOverlap(x, y []byte) bool {
	if len(x) == 0 || len(y) == 0 || &x[0] == &y[0] {
		return false
	}
	xs, ys := uintptr(unsafe.Pointer(&x[0])), uintptr(unsafe.Pointer(&y[0]))
	return xs < ys+uintptr(len(y)) && ys < xs+uintptr(len(x))
}

// impl names one implementation of the sector loop.
type impl int

const (
	implGeneric impl = iota // pure Go on crypto/aes
	implAESNI               // amd64 AES-NI kernel, 8 blocks in flight
	implVAES512             // amd64 VAES + AVX-512 kernel, 16 blocks in flight
)

func (im impl) String() string {
	switch im {
	case implAESNI:
		return "aesni"
	case implVAES512:
		return "vaes-avx512"
	}
	return "purego"
}

// activeImpl is the fastest implementation this CPU supports.
var activeImpl = bestImpl()

// Implementation names the code path DecryptSectors uses on this machine:
// "vaes-avx512", "aesni" or "purego".
func Implementation() string { return activeImpl.String() }
