#!/usr/bin/env bash
# vmcrypt mount demo (make demo-mount): a real ext4 file system inside an
# encrypted VM; the cold copy gives nothing away; `vmcrypt mount` with the
# key shows the disk read-only, decrypted on read, and Sleuth Kit reads the
# guest file out of it, with no plaintext written anywhere.
#
# Needs Linux with FUSE and root (or fusermount3 and /dev/fuse access), and
# the peers e2fsprogs (mkfs.ext4, debugfs), sleuthkit (mmls, fls, icat) and
# libnbd-bin (nbdinfo): `make peers` installs them. Exits non-zero if any
# step does not behave as claimed. Usage: bash scripts/demo-mount.sh [path/to/vmcrypt]
set -u -o pipefail

VMCRYPT=${1:-bin/vmcrypt}
case $VMCRYPT in /*) ;; *) VMCRYPT=$PWD/$VMCRYPT ;; esac
if [ ! -x "$VMCRYPT" ]; then
	echo "demo-mount: $VMCRYPT not found: run make build first" >&2
	exit 1
fi
fail() { printf '\nDEMO FAILED: %s\n' "$*" >&2; exit 1; }
for tool in mkfs.ext4 debugfs mmls fls icat nbdinfo strings; do
	command -v "$tool" >/dev/null || fail "$tool is missing: run make peers (e2fsprogs, sleuthkit, libnbd-bin, binutils)"
done
if [ "$(id -u)" -ne 0 ] && ! { [ -r /dev/fuse ] && [ -w /dev/fuse ] && command -v fusermount3 >/dev/null; }; then
	fail "FUSE needs root here (or /dev/fuse access and fusermount3 from fuse3): run as root"
fi
[ -e /dev/fuse ] || fail "/dev/fuse is missing: this system has no FUSE (load the fuse module, install fuse3)"

T=$(mktemp -d "${TMPDIR:-/tmp}/vmcrypt-demo-mount.XXXXXX") || exit 1
MNT=$T/mnt
PID=
cleanup() {
	[ -n "$PID" ] && kill -INT "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
	grep -q " $MNT " /proc/mounts 2>/dev/null && fusermount3 -u -z "$MNT"
	rm -rf "$T"
}
trap cleanup EXIT
cd "$T" || exit 1

N=0
heading() { N=$((N + 1)); printf '\n== %d. %s\n' "$N" "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
ok() { printf '   -> ok: %s\n' "$*"; }

SECRET="Quarterly numbers: the vault code is 7-4-1-9 (vmcrypt demo)"

heading "A guest disk: an MBR and an ext4 file system holding notes/secret.txt"
mkdir -p tree/notes && printf '%s\n' "$SECRET" >tree/notes/secret.txt
truncate -s 24M guest.raw
# One Linux partition at sector 2048 (1 MiB), 32768 sectors long.
printf '\x00\x00\x00\x00\x83\x00\x00\x00\x00\x08\x00\x00\x00\x80\x00\x00' |
	dd of=guest.raw bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of=guest.raw bs=1 seek=510 conv=notrunc status=none
run mkfs.ext4 -q -F -E offset=1048576 -d tree -L guest guest.raw 16M || fail "mkfs.ext4 failed"
rm -rf tree
PLAIN=$(sha256sum guest.raw | cut -d' ' -f1)
echo "sha256 of the plain guest disk: $PLAIN"

heading "Encrypt it into a VM (a seeded test fixture: never for real data)"
run "$VMCRYPT" fixture fx --provider passphrase --disk monolithicSparse --from guest.raw --seed 42 ||
	fail "vmcrypt fixture failed"
rm -f guest.raw
ls -l fx/vm | sed 's/^/   /'

heading "The cold copy gives nothing: strings and grep find no trace of the file"
printf '$ strings -a fx/vm/* | grep -c vault\n'
HITS=$(strings -a fx/vm/* | grep -c 'vault' || true)
echo "   $HITS"
[ "$HITS" -eq 0 ] || fail "the text is readable in the encrypted VM folder"
run grep -r -a -l 'vault code' fx/vm
[ $? -eq 1 ] || fail "grep found the text in the VM folder"
ok "no plaintext at rest"

heading "Without the key, nothing is mounted"
mkdir "$MNT"
printf '$ %s\n' "$VMCRYPT mount fx/vm $MNT"
"$VMCRYPT" mount fx/vm "$MNT" </dev/null
CODE=$?
echo "   exit code: $CODE (4: the key is missing)"
[ "$CODE" -eq 4 ] || fail "mount without the key exited $CODE, want 4"
[ -z "$(ls -A "$MNT")" ] || fail "something appeared in the mount point"
ok "refused before mounting"

heading "Mount it with the passphrase: read-only, decrypted on read"
printf '$ %s &\n' "$VMCRYPT mount fx/vm $MNT --passphrase-file fx/secrets/passphrase.txt"
"$VMCRYPT" mount fx/vm "$MNT" --passphrase-file fx/secrets/passphrase.txt 2>mount.log &
PID=$!
for _ in $(seq 100); do
	[ -e "$MNT/report.json" ] && break
	kill -0 "$PID" 2>/dev/null || { cat mount.log; fail "vmcrypt mount stopped"; }
	sleep 0.1
done
[ -e "$MNT/report.json" ] || fail "the mount did not come up"
sed 's/^/   /' mount.log
run ls -l "$MNT"
GOT=$(sha256sum "$MNT/fixture.raw" | cut -d' ' -f1)
echo "sha256 of the mounted fixture.raw: $GOT"
[ "$GOT" = "$PLAIN" ] || fail "the mounted disk differs from the plain guest disk"
ok "the mounted disk is the plain guest disk, byte for byte"

heading "Sleuth Kit reads the guest file out of the mounted disk"
run mmls "$MNT/fixture.raw" || fail "mmls failed"
run fls -r -p -o 2048 "$MNT/fixture.raw" || fail "fls failed"
INODE=$(fls -r -p -o 2048 "$MNT/fixture.raw" | sed -n 's/^r\/r \([0-9]*\):\tnotes\/secret\.txt$/\1/p')
[ -n "$INODE" ] || fail "fls does not list notes/secret.txt"
printf '$ icat -o 2048 %s %s\n' "$MNT/fixture.raw" "$INODE"
TEXT=$(icat -o 2048 "$MNT/fixture.raw" "$INODE")
echo "   $TEXT"
[ "$TEXT" = "$SECRET" ] || fail "icat printed something else"
printf "\$ debugfs -R 'cat /notes/secret.txt' '%s'\n" "$MNT/fixture.raw?offset=1048576"
TEXT=$(debugfs -R 'cat /notes/secret.txt' "$MNT/fixture.raw?offset=1048576" 2>/dev/null)
echo "   $TEXT"
[ "$TEXT" = "$SECRET" ] || fail "debugfs printed something else"
ok "the guest file, read through the mount"

heading "Unmount (Ctrl-C in the vmcrypt window does the same)"
printf '$ kill -INT %s\n' "$PID"
kill -INT "$PID"
wait "$PID"
CODE=$?
PID=
tail -n 2 mount.log | sed 's/^/   /'
echo "   exit code: $CODE (130: stopped by a signal, unmounted cleanly)"
[ "$CODE" -eq 130 ] || fail "vmcrypt mount exited $CODE, want 130"
grep -q " $MNT " /proc/mounts && fail "still mounted"
[ -z "$(ls -A "$MNT")" ] || fail "the mount point is not empty"
ok "unmounted; nothing was written"

heading "The same disk over NBD: vmcrypt serve"
"$VMCRYPT" serve fx/vm --passphrase-file fx/secrets/passphrase.txt 2>serve.log &
PID=$!
for _ in $(seq 100); do grep -q 'socket=' serve.log && break; sleep 0.1; done
sed 's/^/   /' serve.log
SOCK=$(sed -n 's/.*nbd+unix:\/\/\/fixture.raw?socket=\([^ ]*\).*/\1/p' serve.log | head -n 1)
[ -n "$SOCK" ] || fail "vmcrypt serve printed no socket"
run nbdinfo --map "nbd+unix:///fixture.raw?socket=$SOCK" || fail "nbdinfo --map failed"
kill -INT "$PID"
wait "$PID"
PID=
[ -e "$SOCK" ] && fail "the socket was left behind"
ok "served, mapped (holes are not decrypted), stopped; the socket is gone"

printf '\nDemo passed: nothing readable at rest, the guest file read through a read-only decrypted mount.\n'
