#!/usr/bin/env bash
# Starts the local PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) that the tests talk to, when
# they are installed but down. Where one is not installed its tests skip and say so.
set -u
if command -v pg_isready >/dev/null && ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || echo "PostgreSQL did not start"
  fi
fi
if command -v redis-server >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no || echo "Redis did not start"
fi
exit 0
