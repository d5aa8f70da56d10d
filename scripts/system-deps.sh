#!/usr/bin/env bash
# Debian packages the tests drive for real: Chromium (Control UI and browser SDK tests),
# PostgreSQL (the Postgres store and multi-instance tests), nginx (the TLS reverse-proxy
# tests), openssh-server (the SSH approval proof) and systemd (systemd-analyze verifies the printed service unit). Installed only when missing, so a warm machine pays nothing.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/nginx ] || need+=(nginx)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# iproute2: network namespaces give test clients real non-loopback addresses (remote, node host).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# openssh-server: a real sshd in a network namespace for the SSH proof of approval policies.
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
# systemd: `systemd-analyze verify` checks the unit `clawgate gateway install-service` prints.
[ -x /usr/bin/systemd-analyze ] || need+=(systemd)
# qemu, a kernel and a static busybox: the bench's --idle-vm boots a guest for the idle row
# (bench/vm.ts, test/bench-vm.test.ts); the busybox must be static, it runs in an empty initramfs.
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
ls /boot/vmlinuz-* >/dev/null 2>&1 || need+=(linux-image-amd64)
{ [ -x /usr/bin/busybox ] && ! ldd /usr/bin/busybox >/dev/null 2>&1; } || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "system-deps: missing ${need[*]}; run as root (or install them) so the tests can use them" >&2
    exit 1
  fi
  echo "system-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
# The Debian postgresql package starts a cluster as a service; the tests run their own
# throwaway clusters, so the packaged one is left alone.
