#!/usr/bin/env bash
# Checks the dependency side of the crate's `rust-version`: resolved with
# cargo's MSRV-aware fallback, every normal dependency (all features, this
# target) must have a release that declares that Rust version or older. The
# crate's own std API use is checked by clippy's `incompatible_msrv` lint in
# the clippy steps. (No older toolchain can be installed on this project's
# machines, so nothing here compiles with the MSRV itself.)
set -euo pipefail
cd "$(dirname "$0")/.."

msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The package without its dev-dependencies, which need not meet the MSRV.
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
print("msrv-deps: %d dependencies resolved for Rust %s" % (len(deps), msrv))
if bad:
    sys.exit("msrv-deps: over the MSRV:\n  " + "\n  ".join(bad))
' "$msrv"
