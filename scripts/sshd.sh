#!/usr/bin/env bash
# Makes sure the OpenSSH server and client are installed, so the SSH
# connector's tests can start a private sshd on loopback. It does not start
# or reconfigure the system sshd. Safe to run again. Needs root on Debian.
set -euo pipefail

log() { echo "sshd: $*" >&2; }

need_pkgs=()
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
if ! command -v ssh >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1; then
  need_pkgs+=(openssh-client)
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  # Do not let the package start the system sshd.
  policy=/usr/sbin/policy-rc.d
  created_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  if [ -n "$created_policy" ]; then rm -f "$policy"; fi
fi

# sshd refuses to start without its privilege separation directory.
mkdir -p /run/sshd
chmod 0755 /run/sshd

/usr/sbin/sshd -V 2>&1 | head -1 | sed 's/^/sshd: /' >&2 || true
log "ready"
