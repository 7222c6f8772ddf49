#!/usr/bin/env bash
# Installs the test peers when missing (fresh Debian machine, as root): the
# independent implementations the tests compare against, and the servers
# and tools they drive. Tests fail, never skip, without them.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have qemu-img   || need+=(qemu-utils)            # qemu-img, qemu-io: VMDK peer, NBD client
have keytool    || need+=(default-jdk-headless)  # PKCS#12 peer
have openssl    || need+=(openssl)
have bzip2      || need+=(bzip2)
have python3    || need+=(python3)               # drives libcrypto for the XTS peer test
/usr/bin/python3 -c 'import cryptography' 2>/dev/null || need+=(python3-cryptography) # vmem-decrypt peer
[ -x /usr/bin/pykmip-server ] || need+=(python3-pykmip)  # a real KMIP server
have nbdinfo    || need+=(libnbd-bin)            # nbdinfo, nbdcopy, nbdfuse
have nbdkit     || need+=(nbdkit)                # NBD peer server (benchmarks)
have fusermount3 || need+=(fuse3)                # FUSE mounts
have mmls       || need+=(sleuthkit)             # mmls, fls, icat
have ewfacquire || need+=(ewf-tools)             # E01 acquisition
have mkfs.ext4  || need+=(e2fsprogs)             # mkfs.ext4 -d, debugfs
have fio        || need+=(fio)                   # IOPS benchmarks
have strings    || need+=(binutils)              # strings (make demo-mount)
have tar        || need+=(tar)
have crash      || need+=(crash)                 # checkpoint (.vmss/.vmsn) peer reader
if [ ${#need[@]} -gt 0 ]; then
  echo "peers: installing ${need[*]}"
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
for t in qemu-img qemu-io keytool openssl bzip2 python3 /usr/bin/pykmip-server nbdinfo nbdcopy nbdkit fusermount3 mmls fls icat ewfacquire ewfverify mkfs.ext4 debugfs fio tar crash; do
  command -v "$t" >/dev/null 2>&1 || { echo "peers: $t still missing" >&2; exit 1; }
done
/usr/bin/python3 -c 'import cryptography, kmip' || { echo "peers: python3-cryptography or python3-pykmip still missing" >&2; exit 1; }
