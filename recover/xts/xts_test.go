package xts

import (
	"bytes"
	"crypto/aes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	xxts "golang.org/x/crypto/xts"

	"github.com/vmcrypt/vmcrypt/vmx/keysafe"
)

func fromHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forEachImpl runs f for every implementation this CPU supports (on this
// amd64 machine: purego, aesni and vaes-avx512).
func forEachImpl(t *testing.T, f func(t *testing.T, im impl)) {
	for _, im := range availableImpls() {
		t.Run(im.String(), func(t *testing.T) { f(t, im) })
	}
}

func TestAllPathsPresentOnThisMachine(t *testing.T) {
	// The development and CI machine has AES-NI, VAES and AVX-512: make
	// sure the tests below really exercise every assembly path there.
	got := map[impl]bool{}
	for _, im := range availableImpls() {
		got[im] = true
	}
	t.Logf("implementations: %v, active %s", availableImpls(), Implementation())
	if !got[implGeneric] {
		t.Fatal("pure-Go path missing")
	}
	if activeImpl != availableImpls()[len(availableImpls())-1] {
		t.Fatalf("active implementation %s is not the fastest available", activeImpl)
	}
}

// Test vectors 10-14 of IEEE P1619-2007 Annex B (XTS-AES-256, 512-byte data
// units, plaintext 00 01 .. ff 00 01 .. ff), as carried by BoringSSL
// decrepit/xts/xts_test.cc ("test vectors from OpenSSL 1.1.1d"); vector 10
// is also in golang.org/x/crypto/xts's xts_test.go.
const ieeeKey = "27182818284590452353602874713526624977572470936999595749669676273141592653589793238462643383279502884197169399375105820974944592"

var ieeeVectors = []struct {
	vector int
	lba    uint64
	ct     string
}{
	{10, 0xff, `1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b5d31e2
		76f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd5776926c49a3
		095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0c5cd4d5fff9dac89ae
		ba122961d03a757123e9870f8acf1000020887891429ca2a3e7a7d7df7b10355165c8b
		9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0b5781c34803fa75421c790dfe1de18
		34f280d7667b327f6c8cd7557e12ac3a0f93ec05c52e0493ef31a12d3d9260f79a289d
		6a379bc70c50841473d1a8cc81ec583e9645e07b8d9670655ba5bbcfecc6dc3966380a
		d8fecb17b6ba02469a020a84e18e8f84252070c13e9f1f289be54fbc481457778f6160
		15e1327a02b140f1505eb309326d68378f8374595c849d84f4c333ec4423885143cb47
		bd71c5edae9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f9
		0c29a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac6e
		333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f645e8b7e
		9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed43851ad77f16f541df
		d269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa773dad38014bd2092fa7
		55c824bb5e54c4f36ffda9fcea70b9c6e693e148c151`},
	{11, 0xffff, `77a31251618a15e6b92d1d66dffe7b50b50bad552305ba0217a610688eff7e11e1d022
		5438e093242d6db274fde801d4cae06f2092c728b2478559df58e837c2469ee4a4fa79
		4e4bbc7f39bc026e3cb72c33b0888f25b4acf56a2a9804f1ce6d3d6e1dc6ca181d4b54
		6179d55544aa7760c40d06741539c7e3cd9d2f6650b2013fd0eeb8c2b8e3d8d240ccae
		2d4c98320a7442e1c8d75a42d6e6cfa4c2eca1798d158c7aecdf82490f24bb9b38e108
		bcda12c3faf9a21141c3613b58367f922aaa26cd22f23d708dae699ad7cb40a8ad0b6e
		2784973dcb605684c08b8d6998c69aac049921871ebb65301a4619ca80ecb485a31d74
		4223ce8ddc2394828d6a80470c092f5ba413c3378fa6054255c6f9df4495862bbb3287
		681f931b687c888abf844dfc8fc28331e579928cd12bd2390ae123cf03818d14dedde5
		c0c24c8ab018bfca75ca096f2d531f3d1619e785f1ada437cab92e980558b3dce1474a
		fb75bfedbf8ff54cb2618e0244c9ac0d3c66fb51598cd2db11f9be39791abe447c6309
		4f7c453b7ff87cb5bb36b7c79efb0872d17058b83b15ab0866ad8a58656c5a7e20dbdf
		308b2461d97c0ec0024a2715055249cf3b478ddd4740de654f75ca686e0d7345c69ed5
		0cdc2a8b332b1f8824108ac937eb050585608ee734097fc09054fbff89eeaeea791f4a
		7ab1f9868294a4f9e27b42af8100cb9d59cef9645803`},
	{12, 0xffffff, `e387aaa58ba483afa7e8eb469778317ecf4cf573aa9d4eac23f2cdf914e4e200a8b490
		e42ee646802dc6ee2b471b278195d60918ececb44bf79966f83faba0499298ebc699c0
		c8634715a320bb4f075d622e74c8c932004f25b41e361025b5a87815391f6108fc4afa
		6a05d9303c6ba68a128a55705d415985832fdeaae6c8e19110e84d1b1f199a2692119e
		dc96132658f09da7c623efcec712537a3d94c0bf5d7e352ec94ae5797fdb377dc15511
		50721adf15bd26a8efc2fcaad56881fa9e62462c28f30ae1ceaca93c345cf243b73f54
		2e2074a705bd2643bb9f7cc79bb6e7091ea6e232df0f9ad0d6cf502327876d82207abf
		2115cdacf6d5a48f6c1879a65b115f0f8b3cb3c59d15dd8c769bc014795a1837f3901b
		5845eb491adfefe097b1fa30a12fc1f65ba22905031539971a10f2f36c321bb51331cd
		efb39e3964c7ef079994f5b69b2edd83a71ef549971ee93f44eac3938fcdd61d01fa71
		799da3a8091c4c48aa9ed263ff0749df95d44fef6a0bb578ec69456aa5408ae32c7af0
		8ad7ba8921287e3bbee31b767be06a0e705c864a769137df28292283ea81a2480241b4
		4d9921cdbec1bc28dc1fda114bd8e5217ac9d8ebafa720e9da4f9ace231cc949e5b96f
		e76ffc21063fddc83a6b8679c00d35e09576a875305bed5f36ed242c8900dd1fa965bc
		950dfce09b132263a1eef52dd6888c309f5a7d712826`},
	{13, 0xffffffff, `bf53d2dade78e822a4d949a9bc6766b01b06a8ef70d26748c6a7fc36d80ae4c5520f7c
		4ab0ac8544424fa405162fef5a6b7f229498063618d39f0003cb5fb8d1c86b643497da
		1ff945c8d3bedeca4f479702a7a735f043ddb1d6aaade3c4a0ac7ca7f3fa5279bef56f
		82cd7a2f38672e824814e10700300a055e1630b8f1cb0e919f5e942010a416e2bf48cb
		46993d3cb6a51c19bacf864785a00bc2ecff15d350875b246ed53e68be6f55bd7e05cf
		c2b2ed6432198a6444b6d8c247fab941f569768b5c429366f1d3f00f0345b96123d562
		04c01c63b22ce78baf116e525ed90fdea39fa469494d3866c31e05f295ff21fea8d4e6
		e13d67e47ce722e9698a1c1048d68ebcde76b86fcf976eab8aa9790268b7068e017a8b
		9b749409514f1053027fd16c3786ea1bac5f15cb79711ee2abe82f5cf8b13ae73030ef
		5b9e4457e75d1304f988d62dd6fc4b94ed38ba831da4b7634971b6cd8ec325d9c61c00
		f1df73627ed3745a5e8489f3a95c69639c32cd6e1d537a85f75cc844726e8a72fc0077
		ad22000f1d5078f6b866318c668f1ad03d5a5fced5219f2eabbd0aa5c0f460d183f044
		04a0d6f469558e81fab24a167905ab4c7878502ad3e38fdbe62a41556cec3732575953
		3ce8f25f367c87bb5578d667ae93f9e2fd99bcbc5f2fbba88cf6516139420fcff3b736
		1d86322c4bd84c82f335abb152c4a93411373aaa8220`},
	{14, 0xffffffffff, `64497e5a831e4a932c09be3e5393376daa599548b816031d224bbf50a818ed2350eae7
		e96087c8a0db51ad290bd00c1ac1620857635bf246c176ab463be30b808da548081ac8
		47b158e1264be25bb0910bbc92647108089415d45fab1b3d2604e8a8eff1ae4020cfa3
		9936b66827b23f371b92200be90251e6d73c5f86de5fd4a950781933d79a28272b782a
		2ec313efdfcc0628f43d744c2dc2ff3dcb66999b50c7ca895b0c64791eeaa5f29499fb
		1c026f84ce5b5c72ba1083cddb5ce45434631665c333b60b11593fb253c5179a2c8db8
		13782a004856a1653011e93fb6d876c18366dd8683f53412c0c180f9c848592d593f86
		09ca736317d356e13e2bff3a9f59cd9aeb19cd482593d8c46128bb32423b37a9adfb48
		2b99453fbe25a41bf6feb4aa0bef5ed24bf73c762978025482c13115e4015aac992e56
		13a3b5c2f685b84795cb6e9b2656d8c88157e52c42f978d8634c43d06fea928f2822e4
		65aa6576e9bf419384506cc3ce3c54ac1a6f67dc66f3b30191e698380bc999b05abce1
		9dc0c6dcc2dd001ec535ba18deb2df1a101023108318c75dc98611a09dc48a0acdec67
		6fabdf222f07e026f059b672b56e5cbc8e1d21bbd867dd927212054681d70ea737134c
		dfce93b6f82ae22423274e58a0821cc5502e2d0ab4585e94de6975be5e0b4efce51cd3
		e70c25a1fbbbd609d273ad5b0d59631c531f6a0a57b9`},
}

func ieeePlaintext() []byte {
	pt := make([]byte, SectorSize)
	for i := range pt {
		pt[i] = byte(i)
	}
	return pt
}

func TestIEEE1619Vectors(t *testing.T) {
	c, err := New(fromHex(t, ieeeKey))
	if err != nil {
		t.Fatal(err)
	}
	pt := ieeePlaintext()
	forEachImpl(t, func(t *testing.T, im impl) {
		for _, v := range ieeeVectors {
			want := fromHex(t, v.ct)
			got := make([]byte, SectorSize)
			c.cryptImpl(im, got, pt, v.lba, true)
			if !bytes.Equal(got, want) {
				t.Errorf("vector %d encrypt: got %x", v.vector, got[:32])
			}
			c.cryptImpl(im, got, want, v.lba, false)
			if !bytes.Equal(got, pt) {
				t.Errorf("vector %d decrypt: got %x", v.vector, got[:32])
			}
		}
	})
}

// TestIEEE1619VectorsMultiSector decrypts vectors 10-14 as parts of longer
// runs so that each lands in every lane of the 4-sector tweak batch of the
// VAES kernel and on both sides of a kernel chunk boundary.
func TestIEEE1619VectorsMultiSector(t *testing.T) {
	c, _ := New(fromHex(t, ieeeKey))
	pt := ieeePlaintext()
	forEachImpl(t, func(t *testing.T, im impl) {
		for _, v := range ieeeVectors {
			want := fromHex(t, v.ct)
			for _, pos := range []int{0, 1, 2, 3, 5, maxKernelSectors - 1, maxKernelSectors, maxKernelSectors + 3} {
				n := pos + 1 + pos%3
				buf := make([]byte, n*SectorSize)
				copy(buf[pos*SectorSize:], want)
				c.cryptImpl(im, buf, buf, v.lba-uint64(pos), false)
				if !bytes.Equal(buf[pos*SectorSize:(pos+1)*SectorSize], pt) {
					t.Errorf("vector %d at sector %d of %d: wrong plaintext", v.vector, pos, n)
				}
			}
		}
	})
}

func TestNewKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 32, 48, 63, 65, 128} {
		c, err := New(make([]byte, n))
		if c != nil || !errors.Is(err, keysafe.ErrUnsupported) {
			t.Errorf("New(%d bytes) = %v, %v; want ErrUnsupported", n, c, err)
		}
	}
	if _, err := New(make([]byte, KeySize)); err != nil {
		t.Errorf("New(64 zero bytes): %v (equal halves must be accepted for decryption)", err)
	}
}

func TestWeakKey(t *testing.T) {
	k := make([]byte, KeySize)
	if !WeakKey(k) {
		t.Error("all-zero key: halves equal, WeakKey false")
	}
	k[63] = 1
	if WeakKey(k) {
		t.Error("halves differ, WeakKey true")
	}
	if WeakKey(k[:32]) {
		t.Error("short key reported weak")
	}
}

// refCrypt is the reference: golang.org/x/crypto/xts, one sector per call,
// sector numbers counted in uint64 as DecryptSectors documents.
func refCrypt(t testing.TB, key, src []byte, lba uint64, encrypt bool) []byte {
	t.Helper()
	x, err := xxts.NewCipher(aes.NewCipher, key)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, len(src))
	for s := 0; s < len(src); s += SectorSize {
		if encrypt {
			x.Encrypt(out[s:s+SectorSize], src[s:s+SectorSize], lba)
		} else {
			x.Decrypt(out[s:s+SectorSize], src[s:s+SectorSize], lba)
		}
		lba++
	}
	return out
}

var edgeLBAs = []uint64{0, 1, 0xff, 1<<32 - 3, 1<<32 - 1, 1 << 32, 1<<63 - 1, 1 << 63, ^uint64(0) - 5, ^uint64(0) - 1, ^uint64(0)}

func TestAgainstXCrypto(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	forEachImpl(t, func(t *testing.T, im impl) {
		for iter := 0; iter < 60; iter++ {
			key := make([]byte, KeySize)
			for i := range key {
				key[i] = byte(r.Uint32())
			}
			c, err := New(key)
			if err != nil {
				t.Fatal(err)
			}
			n := 1 + r.IntN(9)
			if iter%10 == 0 {
				n = maxKernelSectors + 1 + r.IntN(8)
			}
			lba := edgeLBAs[iter%len(edgeLBAs)]
			if iter >= 2*len(edgeLBAs) {
				lba = r.Uint64()
			}
			src := make([]byte, n*SectorSize)
			for i := range src {
				src[i] = byte(r.Uint32())
			}
			for _, enc := range []bool{false, true} {
				want := refCrypt(t, key, src, lba, enc)
				got := make([]byte, len(src))
				c.cryptImpl(im, got, src, lba, enc)
				if !bytes.Equal(got, want) {
					t.Fatalf("iter %d n=%d lba=%#x enc=%v: differs from x/crypto/xts", iter, n, lba, enc)
				}
			}
		}
	})
}

func TestInPlaceAndOddAlignment(t *testing.T) {
	key := make([]byte, KeySize)
	for i := range key {
		key[i] = byte(7*i + 1)
	}
	c, _ := New(key)
	const n = 11
	src := make([]byte, n*SectorSize)
	for i := range src {
		src[i] = byte(i * 13)
	}
	lba := uint64(1<<32 - 4)
	want := refCrypt(t, key, src, lba, false)
	forEachImpl(t, func(t *testing.T, im impl) {
		for _, off := range []int{0, 1, 3, 7, 8, 15, 17, 63} {
			// In place at an odd offset.
			buf := make([]byte, off+len(src)+off)
			b := buf[off : off+len(src)]
			copy(b, src)
			c.cryptImpl(im, b, b, lba, false)
			if !bytes.Equal(b, want) {
				t.Fatalf("in place, offset %d: wrong output", off)
			}
			// Separate buffers, each misaligned differently.
			out := make([]byte, len(src)+2*off+6)
			o := out[off+5 : off+5+len(src)]
			in := buf[off : off+len(src)]
			copy(in, src)
			c.cryptImpl(im, o, in, lba, false)
			if !bytes.Equal(o, want) {
				t.Fatalf("offset %d/%d: wrong output", off, off+5)
			}
			if out[off+4] != 0 || out[off+5+len(src)] != 0 {
				t.Fatalf("offset %d: wrote outside dst", off)
			}
		}
	})
}

func TestPublicAPIRoundTripAndDstLonger(t *testing.T) {
	key := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8}, 8)
	key[40] = 9
	c, _ := New(key)
	src := bytes.Repeat([]byte("vmcrypt!"), 3*SectorSize/8)
	ct := make([]byte, len(src)+SectorSize) // longer dst: the tail stays untouched
	c.EncryptSectors(ct, src, 42)
	if !bytes.Equal(ct[:len(src)], refCrypt(t, key, src, 42, true)) {
		t.Fatal("EncryptSectors differs from x/crypto/xts")
	}
	if !bytes.Equal(ct[len(src):], make([]byte, SectorSize)) {
		t.Fatal("EncryptSectors wrote past len(src)")
	}
	pt := make([]byte, len(src))
	c.DecryptSectors(pt, ct[:len(src)], 42)
	if !bytes.Equal(pt, src) {
		t.Fatal("round trip failed")
	}
	c.DecryptSectors(nil, nil, 0) // zero sectors: no-op
}

func TestMisusePanics(t *testing.T) {
	c, _ := New(make([]byte, KeySize))
	buf := make([]byte, 4*SectorSize)
	cases := map[string]func(){
		"partial sector": func() { c.DecryptSectors(buf, buf[:SectorSize+16], 0) },
		"short dst":      func() { c.EncryptSectors(buf[:SectorSize], buf[SectorSize:3*SectorSize], 0) },
		"inexact overlap": func() {
			c.DecryptSectors(buf[16:16+2*SectorSize], buf[:2*SectorSize], 0)
		},
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f()
		})
	}
}

func TestZeroAllocs(t *testing.T) {
	c, _ := New(bytes.Repeat([]byte{0x5a, 0xa5}, 32))
	buf := make([]byte, 300*SectorSize)
	forEachImpl(t, func(t *testing.T, im impl) {
		if a := testing.AllocsPerRun(20, func() { c.cryptImpl(im, buf, buf, 77, false) }); a != 0 {
			t.Errorf("decrypt: %v allocs per call", a)
		}
		if a := testing.AllocsPerRun(20, func() { c.cryptImpl(im, buf, buf, 77, true) }); a != 0 {
			t.Errorf("encrypt: %v allocs per call", a)
		}
	})
	if a := testing.AllocsPerRun(20, func() { c.DecryptSectors(buf, buf, 1) }); a != 0 {
		t.Errorf("DecryptSectors: %v allocs per call", a)
	}
	if a := testing.AllocsPerRun(20, func() { c.EncryptSectors(buf, buf, 1) }); a != 0 {
		t.Errorf("EncryptSectors: %v allocs per call", a)
	}
}

// TestKeySchedule checks the Go AES-256 key expansion against crypto/aes
// through the pure-Go path's block cipher: the schedule's first and last
// round keys are the key halves' own bytes and the AES-NI kernels (tested
// above) would fail on any other wrong round key.
func TestKeySchedule(t *testing.T) {
	key := fromHex(t, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	var enc, dec [scheduleSize]byte
	expandKey256(key, &enc, &dec)
	// FIPS-197 Appendix A.3: last round key of this key (w[56..59]).
	if got := hex.EncodeToString(enc[224:]); got != "24fc79ccbf0979e9371ac23c6d68de36" {
		t.Fatalf("round key 14 = %s", got)
	}
	if !bytes.Equal(dec[:16], enc[224:]) || !bytes.Equal(dec[224:], enc[:16]) {
		t.Fatal("decryption schedule ends are not the encryption schedule's")
	}
}

// TestConcurrentUse shares one Cipher between goroutines (run under -race
// by make test): it holds no mutable state, so every result must match.
func TestConcurrentUse(t *testing.T) {
	key := benchKey()
	c, _ := New(key)
	src := bytes.Repeat([]byte{0x3c, 0xc3, 0x99}, 40*SectorSize/3+1)[:40*SectorSize]
	var wg sync.WaitGroup
	errs := make([]bool, 8)
	for g := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lba := uint64(g) << 33
			want := refCrypt(t, key, src, lba, false)
			for range 20 {
				got := make([]byte, len(src))
				c.DecryptSectors(got, src, lba)
				if !bytes.Equal(got, want) {
					errs[g] = true
				}
			}
		}()
	}
	wg.Wait()
	for g, bad := range errs {
		if bad {
			t.Errorf("goroutine %d got a wrong result", g)
		}
	}
}
