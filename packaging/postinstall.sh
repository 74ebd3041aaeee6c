#!/bin/sh
set -e
install -d -o mayfly -g mayfly -m 0750 /var/lib/mayfly
chown root:mayfly /etc/mayfly/mayfly.yaml /etc/mayfly/mayfly.env
chmod 0640 /etc/mayfly/mayfly.yaml /etc/mayfly/mayfly.env
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
	echo "mayfly: installed; edit /etc/mayfly/mayfly.yaml, run 'mayfly doctor', then 'systemctl enable --now mayfly'"
fi
