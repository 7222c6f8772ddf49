#!/usr/bin/env bash
# Installs the test peers when missing (fresh Debian machine, as root).
set -euo pipefail
need=()
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v keytool  >/dev/null 2>&1 || need+=(default-jdk-headless)
command -v openssl  >/dev/null 2>&1 || need+=(openssl)
command -v bzip2    >/dev/null 2>&1 || need+=(bzip2)
command -v python3  >/dev/null 2>&1 || need+=(python3)   # drives libcrypto for the XTS peer test
[ -x /usr/bin/pykmip-server ] || need+=(python3-pykmip)   # the KMIP server and client (recover/keys/kmip/kmiptest)
/usr/bin/python3 -c 'import cryptography.hazmat.primitives.kdf.scrypt' 2>/dev/null || need+=(python3-cryptography)   # the sealed-kit peer (recover/keys/kit)
if [ ${#need[@]} -gt 0 ]; then
  echo "peers: installing ${need[*]}"
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
for t in qemu-img qemu-io keytool openssl bzip2 python3 /usr/bin/pykmip-server; do
  command -v "$t" >/dev/null 2>&1 || { echo "peers: $t still missing" >&2; exit 1; }
done
