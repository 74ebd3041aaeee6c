#!/usr/bin/env bash
# Makes sure the servers the tests and the demo need are installed, running on
# loopback, and set up: PostgreSQL (checking passwords for every role but the
# admin), MariaDB, Redis. Safe to run again. Needs root on Debian.
set -euo pipefail

log() { echo "services: $*" >&2; }

# Which services: all by default, or those named (postgres, mariadb, redis).
want() { [ $# -eq 0 ] && return 0; for s in $SERVICES; do [ "$s" = "$1" ] && return 0; done; return 1; }
SERVICES="${*:-postgres mariadb redis}"

need_pkgs=()
want postgres && { command -v pg_ctlcluster >/dev/null 2>&1 || need_pkgs+=(postgresql postgresql-client); }
want mariadb && { [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server mariadb-client); }
want redis && { command -v redis-server >/dev/null 2>&1 || need_pkgs+=(redis-server); }
want postgres && { command -v psql >/dev/null 2>&1 || need_pkgs+=(postgresql-client); }
# pgbench (docs/benchmarks.md, PostgreSQL gateway) comes with the client packages.
want postgres && { command -v pgbench >/dev/null 2>&1 || need_pkgs+=(postgresql-client postgresql-contrib); }
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)
# Apache's htpasswd checks the htpasswd example target's file as a web server would.
command -v htpasswd >/dev/null 2>&1 || need_pkgs+=(apache2-utils)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

wait_for() { # name, command...
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$name did not come up"; return 1
}

# PostgreSQL
if want postgres; then
if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  log "starting PostgreSQL"
  ver=$(ls /etc/postgresql | sort -V | tail -1)
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
fi
wait_for PostgreSQL pg_isready -h 127.0.0.1 -p 5432

# Make PostgreSQL check passwords over loopback TCP for every role but the
# admin: trust auth would let any password in and prove nothing.
ver=$(ls /etc/postgresql | sort -V | tail -1)
hba=$(psql -h 127.0.0.1 -U postgres -Atc 'show hba_file' 2>/dev/null || ls /etc/postgresql/"$ver"/main/pg_hba.conf)
if ! grep -q '^# mayfly-test-begin' "$hba"; then
  log "making PostgreSQL check passwords on 127.0.0.1 ($hba)"
  tmp=$(mktemp)
  {
    echo '# mayfly-test-begin: only the admin is trusted; every other role must present its password'
    echo 'host all postgres 127.0.0.1/32 trust'
    echo 'host all postgres ::1/128 trust'
    echo 'host all all 127.0.0.1/32 scram-sha-256'
    echo 'host all all ::1/128 scram-sha-256'
    echo '# mayfly-test-end'
    cat "$hba"
  } >"$tmp"
  cat "$tmp" >"$hba"
  rm -f "$tmp"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main reload 2>/dev/null \
    || psql -h 127.0.0.1 -U postgres -Atc 'select pg_reload_conf()' >/dev/null
  sleep 0.5
fi
psql -h 127.0.0.1 -U postgres -Atc "select 1 from pg_database where datname='test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c 'create database test' >/dev/null
# TLS, as Debian's package sets it up (the tests of the connection pools
# run over it too): turned on with the system's snake-oil certificate
# where a server was set up without it.
if [ "$(psql -h 127.0.0.1 -U postgres -Atc 'show ssl')" != on ]; then
  if [ ! -f /etc/ssl/private/ssl-cert-snakeoil.key ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q ssl-cert >/dev/null
  fi
  log "turning on TLS in PostgreSQL (the snake-oil certificate)"
  psql -h 127.0.0.1 -U postgres -q \
    -c "alter system set ssl_cert_file = '/etc/ssl/certs/ssl-cert-snakeoil.pem'" \
    -c "alter system set ssl_key_file = '/etc/ssl/private/ssl-cert-snakeoil.key'" \
    -c "alter system set ssl = on" -c "select pg_reload_conf()" >/dev/null
  sleep 0.5
  [ "$(psql -h 127.0.0.1 -U postgres -Atc 'show ssl')" = on ] || log "warning: PostgreSQL did not turn TLS on"
fi
fi

# MariaDB
if want mariadb; then
if ! mariadb -h 127.0.0.1 -uroot -e 'select 1' >/dev/null 2>&1; then
  log "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql || true
fi
wait_for MariaDB mariadb -h 127.0.0.1 -uroot -e 'select 1'
mariadb -h 127.0.0.1 -uroot -e 'create database if not exists test'
# The expiry events (defense in depth) need the event scheduler; the tests
# expect it on and never switch it themselves.
if [ "$(mariadb -h 127.0.0.1 -uroot -Nse 'select @@global.event_scheduler')" != "ON" ]; then
  log "turning MariaDB's event scheduler on"
  mariadb -h 127.0.0.1 -uroot -e 'SET GLOBAL event_scheduler = ON'
fi
fi

# Redis
if want redis; then
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
wait_for Redis redis-cli -h 127.0.0.1 -p 6379 ping
fi
log "ready"
