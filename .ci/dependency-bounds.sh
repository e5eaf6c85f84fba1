#!/usr/bin/env bash
# Checks both ends of the version ranges in Cargo.toml's [dependencies], on the
# package without its dev-dependencies (they bind only this repository, not a
# user's build):
#
# 1. The newest releases a user on the crate's `rust-version` gets: resolved
#    with cargo's MSRV-aware fallback, every normal dependency (all features,
#    this target) must have a release that declares that Rust version or
#    older, and the library must compile with that Rust, with all features,
#    none and the defaults (the toolchain is installed with rustup if it is
#    missing; if that fails, the compile is skipped with a banner saying so,
#    and CI goes on: a network hiccup should not hold a change). Clippy's
#    `incompatible_msrv` lint in the clippy steps also looks for newer std API.
# 2. The oldest releases a user's lockfile may hold: with every direct
#    dependency at the lowest release its requirement allows (nightly cargo's
#    `-Z direct-minimal-versions`; their own dependencies at the newest), the
#    library must compile with all features, none and the defaults. A
#    requirement older than an API the crate uses fails here rather than in a
#    user's build. Without a nightly toolchain this part is skipped, with a
#    banner saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

# A SKIPPED banner: its title, then one line per further argument.
skipped() {
    printf '\n######## SKIPPED: %s ########\n' "$1"
    shift
    printf '%s\n' "$@"
}

# Runs `cargo ARGS --quiet --lib` with all features, none and the defaults.
check_feature_sets() {
    for features in --all-features --no-default-features ""; do
        cargo "$@" --quiet --lib $features
    done
}

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The package without its dev-dependencies.
cp -r src README.md "$work/"
python3 - "$work/Cargo.toml" <<'PY'
import sys
s = open("Cargo.toml").read()
s = s[: s.index("[dev-dependencies]")] + s[s.index("[package.metadata.docs.rs]") :]
s = "\n".join(l for l in s.splitlines() if not l.startswith("exclude"))
open(sys.argv[1], "w").write(s + "\n")
PY

cd "$work"
CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS=fallback cargo generate-lockfile --quiet
target=$(rustc -vV | sed -n 's/^host: //p')
cargo tree --all-features -e normal --target "$target" --prefix none --format '{p}' \
    | awk '{print $1"@"$2}' | sed 's/@v/@/' | sort -u > deps.txt
cargo metadata --format-version 1 --all-features | python3 -c '
import json, sys
msrv, deps = sys.argv[1], set(open("deps.txt").read().split())
key = lambda v: tuple(int(x) for x in v.split("."))
bad = []
for p in json.load(sys.stdin)["packages"]:
    rv = p.get("rust_version")
    if p["name"] + "@" + p["version"] in deps and rv and key(rv) > key(msrv):
        bad.append(p["name"] + " " + p["version"] + " needs Rust " + rv)
print("msrv: %d dependencies resolved for Rust %s" % (len(deps), msrv))
if bad:
    sys.exit("msrv: over the MSRV:\n  " + "\n  ".join(bad))
' "$msrv"

# The library compiled by the toolchain its rust-version names, against the
# releases resolved above (a lockfile cargo that old can read: cargo writes
# version 3 for a rust-version below 1.78).
if ! cargo +"$msrv" --version >/dev/null 2>&1; then
    echo "msrv: installing Rust $msrv with rustup (bounded at 300 s)"
    timeout 300 rustup toolchain install "$msrv" --profile minimal >"$work/rustup.log" 2>&1 || true
fi
if cargo +"$msrv" --version >/dev/null 2>&1; then
    CARGO_TARGET_DIR="$work/target-msrv" check_feature_sets +"$msrv" check --locked
    echo "msrv: the library compiles with $(rustc +"$msrv" --version)" \
        "(all features, none, and the defaults)"
else
    skipped "the MSRV build" \
        "Rust $msrv could not be installed: the library was not compiled with its rust-version." \
        "Install it (rustup toolchain install $msrv --profile minimal) to run this check. rustup said:"
    tail -n 5 "$work/rustup.log" 2>/dev/null || true
    echo
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    skipped "minimal versions" \
        "No nightly toolchain: the lowest allowed dependency releases were not checked." \
        "Install one (rustup toolchain install nightly --profile minimal) to run this check." ""
    exit 0
fi
cargo +nightly update --quiet -Z direct-minimal-versions
# Built apart from the repository's target directory: these are other releases.
CARGO_TARGET_DIR="$work/target" check_feature_sets check
cargo tree --all-features -e normal --depth 1 --prefix none --format '{p}' | tail -n +2 \
    | sort -u | tr '\n' ' ' | sed 's/^/minimal versions: the library builds with /; s/ $/\n/'
