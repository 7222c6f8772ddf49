# An independent implementation of the sealed kit format of
# docs/formats.md §17 with python3-cryptography (the peer of kit_test.go).
#   kit.py open KIT PASSFILE   -> plaintext on stdout; exit 3 wrong
#                                 passphrase, 5 damaged
#   kit.py seal IN PASSFILE LOGN SALT_HEX -> sealed kit on stdout
import base64
import hashlib
import hmac
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt


def derive(passphrase, salt, logn):
    return Scrypt(salt=salt, length=64, n=1 << logn, r=8, p=1).derive(passphrase)


def seal(plain, passphrase, logn, salt):
    k = derive(passphrase, salt, logn)
    hdr = b"vmcrypt-kit/v1\nscrypt %d 8 1 %s\nchacha20poly1305 %d\n" % (
        logn, base64.b64encode(salt), len(plain))
    mac = hmac.new(k[:32], hdr, hashlib.sha256).digest()
    hdr += b"--- " + base64.b64encode(mac) + b"\n"
    return hdr + ChaCha20Poly1305(k[32:]).encrypt(b"\0" * 12, plain, hdr)


def open_kit(data, passphrase):
    lines = data.split(b"\n", 4)
    if len(lines) != 5 or lines[0] != b"vmcrypt-kit/v1":
        sys.exit(5)
    word, logn, r, p, salt = lines[1].split(b" ")
    if word != b"scrypt" or r != b"8" or p != b"1":
        sys.exit(5)
    word, length = lines[2].split(b" ")
    if word != b"chacha20poly1305":
        sys.exit(5)
    word, mac = lines[3].split(b" ")
    if word != b"---":
        sys.exit(5)
    k = derive(passphrase, base64.b64decode(salt), int(logn))
    signed = b"\n".join(lines[:3]) + b"\n"
    if not hmac.compare_digest(hmac.new(k[:32], signed, hashlib.sha256).digest(), base64.b64decode(mac)):
        sys.exit(3)
    hdr = signed + lines[3] + b"\n"
    ct = lines[4]
    if len(ct) != int(length) + 16:
        sys.exit(5)
    try:
        return ChaCha20Poly1305(k[32:]).decrypt(b"\0" * 12, ct, hdr)
    except InvalidTag:
        sys.exit(5)


def main():
    if sys.argv[1] == "open":
        data = open(sys.argv[2], "rb").read()
        pw = open(sys.argv[3], "rb").read()
        sys.stdout.buffer.write(open_kit(data, pw))
    elif sys.argv[1] == "seal":
        plain = open(sys.argv[2], "rb").read()
        pw = open(sys.argv[3], "rb").read()
        sys.stdout.buffer.write(seal(plain, pw, int(sys.argv[4]), bytes.fromhex(sys.argv[5])))
    else:
        sys.exit(2)


main()
