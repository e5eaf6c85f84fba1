#!/usr/bin/env bash
# Installs what the end-to-end tests drive: HAProxy, nginx and Chromium
# (headless), all from the Debian archive. Idempotent: does nothing when all
# three are present.
#
#   bash .ci/install-e2e.sh
#
# tests/e2e_haproxy.rs, tests/e2e_haproxy_crash.rs, tests/e2e_nginx.rs,
# tests/e2e_nginx_node_tags.rs, tests/e2e_browser.rs and
# tests/e2e_browser_h2.rs fail under CI=true when a tool is missing, and skip
# loudly otherwise.
set -euo pipefail

# haproxy and nginx live in /usr/sbin, which is not on every user's PATH.
find_haproxy() {
    command -v haproxy 2>/dev/null || { [ -x /usr/sbin/haproxy ] && echo /usr/sbin/haproxy; }
}
find_nginx() {
    command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }
}
find_chromium() {
    command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null
}

if find_haproxy >/dev/null && find_nginx >/dev/null && find_chromium >/dev/null; then
    echo "install-e2e: haproxy, nginx and chromium already installed"
else
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "install-e2e: need root or sudo to apt-get install haproxy nginx chromium" >&2
        exit 1
    fi
    echo "install-e2e: installing haproxy, nginx and chromium with apt-get"
    ${as_root[@]+"${as_root[@]}"} apt-get update
    ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy nginx chromium
fi

haproxy="$(find_haproxy)" || { echo "install-e2e: haproxy still missing" >&2; exit 1; }
nginx="$(find_nginx)" || { echo "install-e2e: nginx still missing" >&2; exit 1; }
chromium="$(find_chromium)" || { echo "install-e2e: chromium still missing" >&2; exit 1; }
echo "install-e2e: $haproxy: $("$haproxy" -v | head -n 1)"
# nginx prints its version on stderr.
echo "install-e2e: $nginx: $("$nginx" -v 2>&1)"
# Debian's chromium wrapper script prints shell noise on stderr; only the version matters.
echo "install-e2e: $chromium: $("$chromium" --version 2>/dev/null)"
