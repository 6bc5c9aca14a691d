#!/usr/bin/env bash
# Build a Debian bookworm aarch64 root that qemu-user can run Python in, without binfmt_misc and without
# chroot: debootstrap's first stage downloads the packages, dpkg-deb -x unpacks every one of them into ROOT.
# Idempotent: a finished root (marker file) is reused. Needs root, debootstrap and qemu-user-static.
set -euo pipefail
CACHE="${EDGELLM_ARM64_CACHE:-$HOME/.cache/edgellm/arm64}"
ROOT="$CACHE/root"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# qemu-user 7.2 shows the emulated program the host's x86 /proc/cpuinfo. Recent onnxruntime (1.29.0, 1.31.1 and
# 1.32.0 checked; its cpuinfo library) segfaults on import when that file describes no Arm core; with -L ROOT, qemu opens ROOT/proc/cpuinfo
# instead when it exists. So the root carries one describing Cortex-A76 cores (Raspberry Pi 5), as many as the
# host has (the library checks them against /sys/devices/system/cpu), and the runs use QEMU_CPU=cortex-a76.
write_cpuinfo() {
  local root="$1" n
  n=$(nproc --all)
  mkdir -p "$root/proc"
  : >"$root/proc/cpuinfo.partial"
  for ((i = 0; i < n; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n' "$i" >>"$root/proc/cpuinfo.partial"
  done
  mv "$root/proc/cpuinfo.partial" "$root/proc/cpuinfo"
}
if [[ -f "$ROOT/.edgellm-root-ok" ]]; then
  write_cpuinfo "$ROOT"
  echo "root: cached at $ROOT"; exit 0
fi
for tool in debootstrap qemu-aarch64-static dpkg-deb; do
  command -v "$tool" >/dev/null || {
    echo "missing $tool: apt-get install -y debootstrap qemu-user-static" >&2; exit 2; }
done
start=$(date +%s)
TMP="$CACHE/root.partial"
rm -rf "$TMP"; mkdir -p "$CACHE"
nice -n 10 debootstrap --foreign --arch=arm64 --variant=minbase \
  --include=python3,python3-venv,python3-pip bookworm "$TMP" "$MIRROR"
# The first stage unpacks only the essential set; unpack everything it downloaded (python3 included).
for deb in "$TMP"/var/cache/apt/archives/*.deb; do
  dpkg-deb -x "$deb" "$TMP"
done
# usr-merge: bookworm's debs ship /lib etc. as symlinks made by the base-files/usrmerge stage; make sure the
# dynamic loader qemu looks for under -L exists.
test -e "$TMP/lib/ld-linux-aarch64.so.1" || { echo "root has no aarch64 loader" >&2; exit 3; }
qemu-aarch64-static -L "$TMP" "$TMP/usr/bin/python3.11" -c 'import platform, ssl, venv; print(platform.machine())'
write_cpuinfo "$TMP"
rm -rf "$TMP"/var/cache/apt/archives/*.deb
touch "$TMP/.edgellm-root-ok"
rm -rf "$ROOT"; mv "$TMP" "$ROOT"
echo "root: built in $(( $(date +%s) - start ))s at $ROOT"
