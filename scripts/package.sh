#!/usr/bin/env bash
# Builds Mayfly's Debian package into dist/ with nfpm, then checks it: its
# files and modes, the binary's version and commit, the default
# configuration, the man page, and the systemd unit (systemd-analyze verify
# and its exposure score, where systemd-analyze is available). --rpm also
# builds the RPM. Needs Go and network access to the Go module proxy (nfpm
# is run at a pinned version, not kept in go.mod).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2

log() { echo "package: $*" >&2; }
fail() { echo "package: FAIL: $*" >&2; exit 1; }

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -z "${MAYFLY_VERSION:-}" ]; then
  if tag=$(git describe --tags --exact-match 2>/dev/null); then
    MAYFLY_VERSION=${tag#v}
  else
    # No release tag: a version Debian orders after 0.0.0 releases.
    MAYFLY_VERSION=0.0.0+git$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null || date -u +%Y%m%d%H%M%S).${commit:0:12}
  fi
fi
export MAYFLY_VERSION GOARCH=${GOARCH:-$(go env GOARCH)}

rm -rf dist/build && mkdir -p dist/build
log "building mayfly $MAYFLY_VERSION ($commit) for linux/$GOARCH"
CGO_ENABLED=0 GOOS=linux go build -trimpath \
  -ldflags "-s -w -X main.version=$MAYFLY_VERSION -X main.commit=$commit -X main.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  -o dist/build/mayfly ./cmd/mayfly
dist/build/mayfly man | gzip -9n > dist/build/mayfly.1.gz
for sh in bash zsh fish; do dist/build/mayfly completion "$sh" > "dist/build/mayfly.$sh"; done

packagers=(deb)
[ "${1:-}" = "--rpm" ] && packagers+=(rpm)
for p in "${packagers[@]}"; do
  go run "$NFPM" package --config packaging/nfpm.yaml --packager "$p" --target dist/ >&2
done
deb=$(ls -t dist/mayfly_*"_${GOARCH}.deb" | head -1)
log "built $deb"

# --- Check the package ---
command -v dpkg-deb >/dev/null || fail "dpkg-deb is needed to check the package"
# Outputs are read whole before grep looks at them: with pipefail, grep -q
# leaving early would fail the writer of a pipe on SIGPIPE.
info=$(dpkg-deb --info "$deb")
grep -q "Package: mayfly" <<<"$info" || fail "no Package field"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
listing=$(dpkg-deb --contents "$deb")
for want in "-rwxr-xr-x root/root .* ./usr/bin/mayfly" \
            "-rw-r--r-- root/root .* ./lib/systemd/system/mayfly.service" \
            "-rw-r----- root/root .* ./etc/mayfly/mayfly.yaml" \
            "-rw-r----- root/root .* ./etc/mayfly/mayfly.env" \
            "./usr/share/man/man1/mayfly.1.gz" \
            "./usr/share/bash-completion/completions/mayfly"; do
  grep -Eq -- "$want" <<<"$listing" || fail "the package lacks $want"
done
ctrl=$(dpkg-deb --ctrl-tarfile "$deb" | tar -t)
grep -q conffiles <<<"$ctrl" || fail "no conffiles: an upgrade would overwrite the configuration"
dpkg-deb -e "$deb" "$root/DEBIAN"
grep -qx /etc/mayfly/mayfly.yaml "$root/DEBIAN/conffiles" || fail "mayfly.yaml is not a conffile"
for s in preinst postinst prerm; do [ -x "$root/DEBIAN/$s" ] || fail "no $s script"; done

ver=$("$root/usr/bin/mayfly" --version)
case "$ver" in *"$MAYFLY_VERSION"*"${commit:0:12}"*) ;; *) fail "mayfly --version says '$ver'; want $MAYFLY_VERSION and commit ${commit:0:12}" ;; esac
"$root/usr/bin/mayfly" policy check "$root/etc/mayfly/mayfly.yaml" >/dev/null || fail "the default configuration does not load"
if command -v man >/dev/null; then
  page=$(man -l "$root/usr/share/man/man1/mayfly.1.gz" 2>/dev/null)
  grep -q "mayfly doctor" <<<"$page" || fail "the man page does not list mayfly doctor"
fi
if command -v systemd-analyze >/dev/null; then
  # The unit as installed, its paths pointing into the scratch root.
  mkdir -p "$root/check"
  sed "s|/usr/bin/mayfly|$root/usr/bin/mayfly|g" "$root/lib/systemd/system/mayfly.service" > "$root/check/mayfly.service"
  MANPATH="$root/usr/share/man" systemd-analyze verify "$root/check/mayfly.service" || fail "systemd-analyze verify refused the unit"
  score=$(systemd-analyze security --offline=yes --root="$root" mayfly.service 2>/dev/null | sed -n 's/.*Overall exposure level for mayfly.service: \([0-9.]*\).*/\1/p')
  log "unit verified; systemd-analyze security exposure: ${score:-?} (0 = most hardened, 10 = least)"
  if [ -n "$score" ] && [ "$(echo "$score > 2.0" | bc 2>/dev/null || echo 0)" = 1 ]; then
    fail "the unit's exposure $score is above 2.0"
  fi
else
  log "systemd-analyze not found: the unit is not verified here"
fi
log "OK: $deb"
