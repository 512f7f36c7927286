#!/usr/bin/env bash
# Refreshes the Usage page's vendored browser libraries (api/static/usage/vendor/) from the npm
# registry: each package at the pinned version (or the one given), its built browser file and
# its licence, and VERSIONS.md with the version, licence and npm integrity of each.
# Usage: scripts/refresh_usage_vendor.sh [GRAPHQL_WS_VERSION [UPLOT_VERSION]]
set -euo pipefail
cd "$(dirname "$0")/.."
GRAPHQL_WS_VERSION=${1:-6.4.2}
UPLOT_VERSION=${2:-1.6.32}
VENDOR=api/static/usage/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Unpacks `npm pack NAME@VERSION` into $work/NAME and prints its integrity.
unpack() {
  local name=$1 version=$2
  (cd "$work" && npm pack --silent --json "$name@$version" >"$name.json")
  mkdir -p "$work/$name"
  tar -xzf "$work/$name-$version.tgz" -C "$work/$name"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["integrity"])' "$work/$name.json"
}

ws_integrity=$(unpack graphql-ws "$GRAPHQL_WS_VERSION")
uplot_integrity=$(unpack uplot "$UPLOT_VERSION")

rm -rf "$VENDOR/graphql-ws" "$VENDOR/uplot"
mkdir -p "$VENDOR/graphql-ws" "$VENDOR/uplot"
cp "$work/graphql-ws/package/umd/graphql-ws.min.js" "$work/graphql-ws/package/LICENSE.md" \
  "$VENDOR/graphql-ws/"
cp "$work/uplot/package/dist/uPlot.iife.min.js" "$work/uplot/package/dist/uPlot.min.css" \
  "$work/uplot/package/LICENSE" "$VENDOR/uplot/"

licence() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["license"])' "$1"; }
cat >"$VENDOR/VERSIONS.md" <<MD
# Vendored browser libraries of the Usage page

Written by \`scripts/refresh_usage_vendor.sh\` from the npm registry; do not edit by hand.
Each folder holds the package's built browser file, unchanged, and its licence.

| Package | Version | Licence | Files | npm integrity |
| --- | --- | --- | --- | --- |
| graphql-ws | $GRAPHQL_WS_VERSION | $(licence "$work/graphql-ws/package/package.json") | graphql-ws/graphql-ws.min.js (UMD, global \`graphqlWs\`), graphql-ws/LICENSE.md | $ws_integrity |
| uplot | $UPLOT_VERSION | $(licence "$work/uplot/package/package.json") | uplot/uPlot.iife.min.js (global \`uPlot\`), uplot/uPlot.min.css, uplot/LICENSE | $uplot_integrity |
MD
echo "vendored graphql-ws $GRAPHQL_WS_VERSION and uplot $UPLOT_VERSION into $VENDOR"
