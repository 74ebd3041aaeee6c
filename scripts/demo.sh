#!/usr/bin/env bash
# End-to-end demo on a fresh Debian machine: installs/starts PostgreSQL if
# missing, builds mayfly, runs `mayfly dev`, and walks through
# request → approval → login → expiry → login refused → audit verified.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Making sure PostgreSQL runs and checks passwords"
bash scripts/services.sh postgres

step "Building mayfly (static, CGO_ENABLED=0)"
CGO_ENABLED=0 go build -o bin/mayfly ./cmd/mayfly
M=$PWD/bin/mayfly

work=$(mktemp -d)
port=${MAYFLY_DEMO_PORT:-18765}
"$M" dev --listen "127.0.0.1:$port" --dir "$work" --env-file "$work/env" >"$work/dev.out" 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  [ -s "$work/env" ] && curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
# shellcheck disable=SC1091
. "$work/env"
echo "mayfly dev is running on $MAYFLY_ADDR (users alice, bob, carol; store in $work)"

as() { local who=$1; shift; local var="MAYFLY_TOKEN_${who^^}"; MAYFLY_TOKEN=${!var} "$M" "$@"; }
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1" 2>/dev/null || sed -n "s/.*\"$1\": *\"\{0,1\}\([^\",]*\)\"\{0,1\}.*/\1/p" | head -1; }

step "alice asks for write access for 20 seconds (policy: one approval from dba)"
echo '$ mayfly request local-pg/readwrite --for 20s --reason "INC-1234 fix a stuck job"'
req=$(as alice request local-pg/readwrite --for 20s --reason "INC-1234 fix a stuck job" -o json)
id=$(printf '%s' "$req" | json id)
echo "request $id is $(printf '%s' "$req" | json state)"

step "bob, an approver, sees it and approves"
as bob requests --pending
as bob approve "$id"

step "alice takes her credentials: the account is created now"
eval "$(as alice creds "$id" -o env)"
echo "username $MAYFLY_USERNAME, expires $MAYFLY_EXPIRES_AT (the password is shown once)"

step "alice logs in with psql"
PGPASSWORD=$MAYFLY_PASSWORD psql "host=$MAYFLY_HOST port=$MAYFLY_PORT dbname=$MAYFLY_DATABASE user=$MAYFLY_USERNAME sslmode=disable" \
  -Atc "select 'logged in as ' || current_user || ', valid until ' || (select rolvaliduntil from pg_roles where rolname = current_user)"
if PGPASSWORD=wrong-password psql "host=$MAYFLY_HOST port=$MAYFLY_PORT dbname=$MAYFLY_DATABASE user=$MAYFLY_USERNAME sslmode=disable" -Atc 'select 1' >/dev/null 2>&1; then
  echo "DEMO FAILED: a wrong password was accepted"; exit 1
fi
echo "a wrong password is refused"

step "waiting for the lease to expire"
while :; do
  state=$(as carol leases -o json | python3 -c "import json,sys; print([l['state'] for l in json.load(sys.stdin) if l['id']=='$MAYFLY_LEASE_ID'][0])")
  [ "$state" = revoked ] && break
  sleep 1
done
as carol leases

step "the same credential is now refused"
if PGPASSWORD=$MAYFLY_PASSWORD psql "host=$MAYFLY_HOST port=$MAYFLY_PORT dbname=$MAYFLY_DATABASE user=$MAYFLY_USERNAME sslmode=disable" -Atc 'select 1' 2>&1; then
  echo "DEMO FAILED: login still works after expiry"; exit 1
fi
n=$(psql -h 127.0.0.1 -U postgres -Atc "select count(*) from pg_roles where rolname = '$MAYFLY_USERNAME'")
echo "roles named $MAYFLY_USERNAME left on the server: $n"
[ "$n" = 0 ]

step "the audit trail, and its verification"
as carol audit
as carol audit verify
echo
echo "Demo complete."
