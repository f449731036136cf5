#!/usr/bin/env bash
# Build (once) or reuse the cosign binary the registry tests sign images with:
#   ${MLGATE_CACHE:-$HOME/.cache/mlgate}/cosign-<COSIGN_VERSION>/cosign
#
# Usage:
#   hack/cosign-assets.sh              build it if missing (a no-op when it is already there)
#   hack/cosign-assets.sh --print      print only the binary's path on stdout; exit 1 (with a
#                                      message on stderr) if it is not built yet. Never builds.
#
# If COSIGN points at an executable, it is used as is. cosign is compiled from source with the
# local Go toolchain through the Go module proxy (`go install github.com/sigstore/cosign/v2/
# cmd/cosign@<version>`, no prebuilt downloads); a cold build takes a few minutes on 2 cores.
# The build happens in a temporary directory next to the cache and is moved into place at the
# end, under a lock, so an interrupted or concurrent run never leaves a half-built binary.
set -euo pipefail

# Pinned: v2.6 signs in both the classic (.sig tag) and the sigstore bundle format
# (--new-bundle-format, stored as an OCI referrer or under the sha256-<hex> fallback tag).
COSIGN_VERSION=${COSIGN_VERSION:-v2.6.5}
COSIGN_MODULE=github.com/sigstore/cosign/v2

cache_root=${MLGATE_CACHE:-$HOME/.cache/mlgate}
dest=$cache_root/cosign-$COSIGN_VERSION
binary=$dest/cosign

die() {
    echo "cosign-assets: error: $*" >&2
    exit 1
}
info() { echo "cosign-assets: $*" >&2; }

works() { [[ -x $1 ]] && "$1" version >/dev/null 2>&1; }

mode=build
case ${1:-} in
"") ;;
--print) mode=print ;;
-h | --help)
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*) die "unknown argument '$1' (try --help)" ;;
esac

# 1. An externally provided binary wins.
if [[ -n ${COSIGN:-} ]]; then
    works "$COSIGN" || die "COSIGN=$COSIGN is not a working cosign binary"
    if [[ $mode == print ]]; then echo "$COSIGN"; else info "using COSIGN=$COSIGN"; fi
    exit 0
fi

if [[ $mode == print ]]; then
    works "$binary" || die "cosign $COSIGN_VERSION is not built in $dest; run 'make registry-assets'"
    echo "$binary"
    exit 0
fi

# 2. Already built: a fast no-op.
if works "$binary"; then
    info "reusing $binary"
    exit 0
fi

# 3. Build. Check the tools first so a failure is one clear line.
GO=${GO:-$(command -v go || true)}
[[ -z $GO && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
[[ -n $GO ]] || die "Go is not installed (need Go on PATH or in \$GO) to build cosign"
command -v flock >/dev/null || die "flock (util-linux) is required"

mkdir -p "$cache_root"
exec 9>"$cache_root/.cosign-$COSIGN_VERSION.lock"
if ! flock -n 9; then
    info "another build of $dest is running; waiting for its lock..."
    flock 9
fi
if works "$binary"; then # someone else finished while we waited
    info "reusing $binary"
    exit 0
fi

work=$(mktemp -d "$cache_root/.build-cosign-$COSIGN_VERSION.XXXXXX")
log=$cache_root/build-cosign-$COSIGN_VERSION.log
: >"$log"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# Never download another Go toolchain, never use cgo; keep the module cache removable.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS=-modcacherw

info "building cosign $COSIGN_VERSION with $("$GO" env GOVERSION) into $dest (a few minutes)"
info "full build log: $log"
ldflags="-s -w -X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION"
ldflags+=" -X sigs.k8s.io/release-utils/version.gitTreeState=clean"
if ! (cd "$work" && GOBIN="$work/bin" "$GO" install -trimpath -ldflags="$ldflags" \
    "$COSIGN_MODULE/cmd/cosign@$COSIGN_VERSION") >>"$log" 2>&1; then
    tail -n 25 "$log" >&2
    die "go install $COSIGN_MODULE/cmd/cosign@$COSIGN_VERSION failed (is the Go module proxy" \
        "$("$GO" env GOPROXY) reachable? full log: $log)"
fi
works "$work/bin/cosign" || die "the built cosign does not run (full log: $log)"
if [[ -e $dest ]]; then
    mv "$dest" "$work/old"
fi
mv "$work/bin" "$dest"
info "ready: $binary after ${SECONDS}s"
