#!/usr/bin/env bash
# Installs the Debian packages the project runs with, when missing and we are root; otherwise says how.
#   redis-server  the private Redis that `make run` and the tests start
#   chromium      the headless browser of the dashboard test
#   postgresql    PostgreSQL 15's initdb/postgres (off PATH, in /usr/lib/postgresql/15/bin): the tests' private server
#   prometheus    promtool, which the tests use to check and unit-test deploy/prometheus/alerts.yml
set -euo pipefail
missing=()
for pkg in "$@"; do
    case "$pkg" in
        redis-server) command -v redis-server >/dev/null || missing+=(redis-server) ;;
        chromium) command -v chromium >/dev/null || missing+=(chromium) ;;
        postgresql) [ -x /usr/lib/postgresql/15/bin/initdb ] || missing+=(postgresql-15) ;;
        prometheus) command -v promtool >/dev/null || missing+=(prometheus) ;;
        *) echo "unknown package $pkg" >&2; exit 2 ;;
    esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing ${missing[*]} (Debian) ..."
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian starts redis-server and PostgreSQL as system services on install; the project runs its own.
    if [[ " ${missing[*]} " == *" redis-server "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now redis-server >/dev/null 2>&1 || true
    fi
    if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now postgresql >/dev/null 2>&1 || true
    fi
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
    fi
else
    echo "error: missing ${missing[*]}. Install with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
