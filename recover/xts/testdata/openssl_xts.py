#!/usr/bin/env python3
# Peer for recover/xts tests: XTS-AES-256 through OpenSSL's own libcrypto
# (EVP "AES-256-XTS"), because `openssl enc` refuses XTS ciphers
# ("enc XTS ciphers not supported", OpenSSL 3). One request per stdin line:
#   <e|d> <64-byte key hex> <sector number, decimal> <one 512-byte sector hex>
# answered by one stdout line: the output hex, or "ERR" if OpenSSL refuses.
# The IV is the sector number as 16 bytes little-endian (dm-crypt plain64).
import ctypes, ctypes.util, sys

try:
    lib = ctypes.CDLL("libcrypto.so.3")  # OpenSSL 3 (find_library is slow)
except OSError:
    lib = ctypes.CDLL(ctypes.util.find_library("crypto"))
vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
lib.OpenSSL_version.restype = cp
lib.OpenSSL_version.argtypes = [ci]
lib.EVP_CIPHER_fetch.restype = vp
lib.EVP_CIPHER_fetch.argtypes = [vp, cp, cp]
lib.EVP_CIPHER_CTX_new.restype = vp
lib.EVP_CIPHER_CTX_free.argtypes = [vp]
lib.EVP_CipherInit_ex.argtypes = [vp, vp, vp, cp, cp, ci]
lib.EVP_CipherUpdate.argtypes = [vp, cp, ctypes.POINTER(ci), cp, ci]
lib.EVP_CipherFinal_ex.argtypes = [vp, cp, ctypes.POINTER(ci)]

sys.stderr.write(lib.OpenSSL_version(0).decode() + "\n")
cipher = lib.EVP_CIPHER_fetch(None, b"AES-256-XTS", None)
if not cipher:
    sys.exit("AES-256-XTS not available in libcrypto")
for line in sys.stdin:
    op, keyhex, lba, datahex = line.split()
    key, data = bytes.fromhex(keyhex), bytes.fromhex(datahex)
    iv = int(lba).to_bytes(16, "little")
    ctx = lib.EVP_CIPHER_CTX_new()
    out = ctypes.create_string_buffer(len(data) + 32)
    n, m = ci(0), ci(0)
    ok = (lib.EVP_CipherInit_ex(ctx, cipher, None, key, iv, 1 if op == "e" else 0) == 1
          and lib.EVP_CipherUpdate(ctx, out, ctypes.byref(n), data, len(data)) == 1
          and lib.EVP_CipherFinal_ex(ctx, ctypes.cast(ctypes.addressof(out) + n.value, cp), ctypes.byref(m)) == 1)
    lib.EVP_CIPHER_CTX_free(ctx)
    print(out.raw[: n.value + m.value].hex() if ok else "ERR", flush=True)
