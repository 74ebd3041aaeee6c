#!/usr/bin/env bash
# Makes sure a headless Chromium and a basic set of fonts are installed, so
# the access-review report's HTML rendering test can take a screenshot.
# Safe to run again. Needs root on Debian.
set -euo pipefail

log() { echo "chromium: $*" >&2; }

need_pkgs=()
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
# Without fonts, text renders as empty boxes.
[ -e /usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf ] || need_pkgs+=(fonts-liberation)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_pkgs+=(fonts-dejavu-core)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

chromium --version >&2
