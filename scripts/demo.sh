#!/usr/bin/env bash
# vmcrypt demo (make demo): make an encrypted VM, show that it cannot be
# read without its key, recover it with the key, and check the result.
# Offline, a few seconds; exits non-zero if any step does not behave as
# claimed. Usage: bash scripts/demo.sh [path/to/vmcrypt]
set -u -o pipefail

VMCRYPT=${1:-bin/vmcrypt}
case $VMCRYPT in /*) ;; *) VMCRYPT=$PWD/$VMCRYPT ;; esac
if [ ! -x "$VMCRYPT" ]; then
	echo "demo: $VMCRYPT not found: run make build first" >&2
	exit 1
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/vmcrypt-demo.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1

N=0
heading() { N=$((N + 1)); printf '\n== %d. %s\n' "$N" "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
fail() { printf '\nDEMO FAILED: %s\n' "$*" >&2; exit 1; }
ok() { printf '   -> ok: %s\n' "$*"; }

heading "Make an encrypted VM (a seeded test fixture: not for real data)"
run "$VMCRYPT" fixture fx --provider passphrase --disk monolithicSparse --size 4M --seed 42 ||
	fail "vmcrypt fixture failed"
echo "The VM folder, as Workstation lays it out:"
ls -l fx/vm | sed 's/^/   /'
WANT=$(sed -n 's/^    "disk": "\([0-9a-f]\{64\}\)",$/\1/p' fx/fixture.json)
[ ${#WANT} -eq 64 ] || fail "no disk sha256 in fixture.json"
echo "sha256 of the plaintext disk (from fixture.json): $WANT"

heading "Scan the folder: every file is encrypted"
run "$VMCRYPT" scan fx/vm | tee scan.txt || fail "vmcrypt scan failed"
grep -q '1 VM (1 encrypted, 0 exposed, 0 plain)' scan.txt || fail "scan did not call the VM encrypted"
ok "scan: 1 VM, encrypted"

heading "Without the key, nothing can be read"
# expect CODE CMD...: run CMD (stdin closed), print its exit code, check it.
expect() {
	local want=$1 what=$2
	shift 2
	printf '$ %s\n' "$*"
	"$@" </dev/null
	CODE=$?
	echo "   exit code: $CODE ($what)"
	[ "$CODE" -eq "$want" ] || fail "$* exited $CODE, want $want"
}
expect 4 "no key given: the error names the key the VM needs" \
	"$VMCRYPT" recover fx/vm -o out
echo "not-the-passphrase" >wrong.txt
expect 3 "wrong passphrase: the key safe's MAC does not verify" \
	"$VMCRYPT" recover fx/vm -o out --passphrase-file wrong.txt
"$VMCRYPT" fixture other --provider kms --size 1M --seed 7 >/dev/null 2>&1 || fail "second fixture failed"
expect 4 "a key file, but not the key this VM needs" \
	"$VMCRYPT" recover fx/vm -o out --kek other/secrets/kek.json
expect 4 "reading the disk alone: its key is not supplied" \
	"$VMCRYPT" vmdk export fx/vm/fixture.vmdk -o disk.raw
[ ! -e out ] && [ ! -e disk.raw ] || fail "a refused command left output behind"
ok "no key, no data; nothing written"

heading "The raw bytes are noise"
OVER=$(od -A n -t u8 -j 64 -N 8 fx/vm/fixture.vmdk | tr -d ' ')
echo "First stored grain of fixture.vmdk (file offset $((OVER * 512))), where the partition table would be:"
od -A d -t x1 -j $((OVER * 512 + 432)) -N 80 fx/vm/fixture.vmdk | sed 's/^/   /'
HITS=$(cat fx/vm/* | grep -a -c 'vmcrypt fixture secret line' || true)
echo "Plain text lines found in the VM folder: $HITS"
[ "$HITS" -eq 0 ] || fail "plaintext found in the encrypted VM folder"
# Zero sectors are stored as zeros, as vSphere does (docs/formats.md §8):
# they hide nothing. Every other sector is ciphertext, which gzip cannot
# shrink.
read -r NZ GZ < <(tail -c +$((OVER * 512 + 1)) fx/vm/fixture.vmdk | head -c 65536 |
	python3 -c 'import sys, zlib
b = sys.stdin.buffer.read()
s = b"".join(b[i:i+512] for i in range(0, len(b), 512) if any(b[i:i+512]))
print(len(s), len(zlib.compress(s, 6)))')
echo "gzip of the $NZ non-zero bytes of that grain: $GZ bytes ($((GZ * 100 / NZ))%): ciphertext does not compress"
[ "$NZ" -gt 0 ] && [ $((GZ * 100 / NZ)) -ge 99 ] || fail "the encrypted grain compresses: it is not noise"
ok "ciphertext only"

heading "Recover with the passphrase"
run "$VMCRYPT" recover fx/vm -o out --passphrase-file fx/secrets/passphrase.txt ||
	fail "recover with the passphrase failed"
ls -l out | sed 's/^/   /'
DISK=out/fixture.vmdk
[ -f "$DISK" ] || DISK=$(ls out/*.vmdk 2>/dev/null | head -n 1)
[ -n "$DISK" ] && [ -f "$DISK" ] || fail "no recovered disk in out/"
run "$VMCRYPT" vmdk export "$DISK" -o disk.raw || fail "the recovered disk does not export"

heading "The recovered disk reads as a disk again"
echo "MBR partition entry and boot signature (0x55 0xAA at 510):"
od -A d -t x1 -j 446 -N 66 disk.raw | sed 's/^/   /'
[ "$(od -A n -t x1 -j 510 -N 2 disk.raw | tr -d ' ')" = 55aa ] || fail "no 0x55AA at offset 510"
echo "ext4 superblock magic (0xEF53 at partition + 1080):"
od -A d -t x1 -j $((128 * 512 + 1080)) -N 2 disk.raw | sed 's/^/   /'
[ "$(od -A n -t x1 -j $((128 * 512 + 1080)) -N 2 disk.raw | tr -d ' ')" = 53ef ] || fail "no ext4 magic"
GZ=$(head -c 65536 disk.raw | gzip -c | wc -c)
echo "gzip of the same 64 KiB, decrypted: $GZ bytes ($((GZ * 100 / 65536))%)"
echo "Text on the disk:"
grep -a -o -m 3 'vmcrypt fixture secret line [0-9]*' disk.raw | head -n 3 | sed 's/^/   /'
GOT=$(sha256sum disk.raw | cut -d' ' -f1)
echo "sha256 recovered: $GOT"
echo "sha256 expected:  $WANT"
[ "$GOT" = "$WANT" ] || fail "the recovered disk's sha256 differs from fixture.json"
ok "sha256 matches"

heading "Scan the recovered copy: now plain, and exposed"
"$VMCRYPT" scan out | grep -E '^(VM|  EXPOSED|scan of)' | sed 's/^/   /'

printf '\nDemo passed: encrypted, unreadable without the key, recovered byte for byte with it.\n'
