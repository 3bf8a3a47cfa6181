#!/usr/bin/env bash
# Record the tiny DAG's workflow histories with the workflows of HEAD into
# test/fixtures/histories/<short commit>/ (a new directory; existing recordings are never
# overwritten: they are what runs of older releases look like, and CI replays them all).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "$(git status --porcelain -- workflows activities/types.ts)" ]; then
  echo "record-histories: commit the workflow changes first (the directory is named after HEAD)" >&2; exit 1
fi
dest="test/fixtures/histories/$(git rev-parse --short HEAD)"
if [ -e "$dest" ]; then echo "record-histories: $dest exists; recordings are never replaced" >&2; exit 1; fi
npx tsx test/integration/run.ts pipeline
mkdir -p "$dest"
cp .e3/test/histories/*.json "$dest/"
echo "recorded $(ls "$dest" | wc -l) histories into $dest"
