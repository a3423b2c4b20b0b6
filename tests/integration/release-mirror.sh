#!/usr/bin/env bash
# Fills the release mirror directory ($MIRROR_DIR) with the tarballs and .sha1 files of
# the versions given, downloading from upstream only what the CI cache did not restore.
# The scenarios serve this directory themselves (lib.sh mirror_start).
# Usage: release-mirror.sh VERSION...
set -euo pipefail
SCENARIO=mirror
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"

(($# > 0)) || die "usage: $0 VERSION..."
mirror_fetch "$@"
ls -l "$MIRROR_DIR"
