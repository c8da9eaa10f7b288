#!/bin/sh
# Reproduce static/vendor/codemirror.js (and its licence file) from the pinned npm packages.
# Build time only; the console serves the committed bundle and never runs npm or esbuild.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../static/vendor"
cd "$here"
npm ci --no-audit --no-fund
npx esbuild entry.js --bundle --minify --format=iife --legal-comments=none \
  --target=es2020 --outfile="$out/codemirror.js"
node collect_licenses.js > "$out/codemirror.LICENSE.txt"
echo "wrote $out/codemirror.js"
