#!/bin/sh
# The service's own system user and group.
set -e
if ! getent group mayfly >/dev/null; then
	addgroup --system mayfly >/dev/null 2>&1 || groupadd --system mayfly
fi
if ! getent passwd mayfly >/dev/null; then
	adduser --system --ingroup mayfly --home /var/lib/mayfly --no-create-home --shell /usr/sbin/nologin mayfly >/dev/null 2>&1 ||
		useradd --system --gid mayfly --home-dir /var/lib/mayfly --shell /usr/sbin/nologin mayfly
fi
