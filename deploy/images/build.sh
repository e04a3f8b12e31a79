#!/usr/bin/env bash
# Builds the container images herd needs, locally, with no registry:
#
#   deploy/images/build.sh base            herd/base:bookworm  Debian 12 minbase (debootstrap → docker import)
#   deploy/images/build.sh ray [VERSION]   herd/ray:VERSION    base + Python 3 + Ray in /opt/ray (pip)
#   deploy/images/build.sh herd [BINARY]   herd/herd:dev       base + the herd binary (default: target/release/herd)
#   deploy/images/build.sh save IMAGE FILE an archive any worker loads with `herd worker start --load-image FILE`
#
# An image that already exists is kept (HERD_REBUILD=1 builds the named one again; herd/herd
# is always rebuilt, the binary being the point). Concurrent runs
# (parallel tests) wait for each other. Needs root for debootstrap; installs debootstrap with
# apt-get if it is missing. The Debian mirror is the one apt uses (override: HERD_DEBIAN_MIRROR).
set -euo pipefail
cd "$(dirname "$0")/../.."

BASE=herd/base:bookworm
SUITE=bookworm
RAY_VERSION_DEFAULT=2.40.0

say() { echo "build.sh: $*" >&2; }

# Whether IMAGE is there and need not be rebuilt: HERD_REBUILD=1 rebuilds only the image
# named on the command line, never the base image under it.
exists() { docker image inspect "$1" >/dev/null 2>&1 && ! { [ "${HERD_REBUILD:-0}" = 1 ] && [ "$2" = "$TARGET" ]; }; }

mirror() {
    if [ -n "${HERD_DEBIAN_MIRROR:-}" ]; then echo "$HERD_DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
        | head -1 | grep -oE 'https?://[^ ]+' || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

build_base() {
    if exists "$BASE" base; then say "$BASE is there"; return; fi
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        apt-get -o DPkg::Lock::Timeout=600 update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq debootstrap >/dev/null
    fi
    local root
    root=$(mktemp -d /tmp/herd-rootfs.XXXXXX)
    trap 'rm -rf "$root"' RETURN
    say "debootstrap $SUITE from $(mirror) (about a minute)"
    debootstrap --variant=minbase --include=ca-certificates,procps "$SUITE" "$root" "$(mirror)" >"$root.log" 2>&1 \
        || { tail -20 "$root.log" >&2; rm -f "$root.log"; return 1; }
    rm -f "$root.log"
    # Smaller and reproducible enough: no package lists, caches, docs or logs in the image.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/var/log/* "$root"/tmp/*
    say "docker import → $BASE"
    tar -C "$root" --numeric-owner -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        --message "herd base image: Debian $SUITE minbase" - "$BASE" >/dev/null
}

build_ray() {
    local version=${1:-$RAY_VERSION_DEFAULT}
    local image=herd/ray:$version
    if exists "$image" ray; then say "$image is there"; return; fi
    build_base
    local context
    context=$(mktemp -d /tmp/herd-image.XXXXXX)
    trap 'rm -rf "$context"' RETURN
    cp deploy/images/ray/Dockerfile "$context/"
    # pip inside the build trusts what the host trusts (a proxy's CA included), for the
    # download only: the bundle is not installed in the image's trust store.
    cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$context/host-ca.crt"
    say "docker build → $image (downloads Ray from PyPI)"
    # Host networking: the build reaches the same mirrors the host does.
    docker build --network host --build-arg "RAY_VERSION=$version" --build-arg "DEBIAN_MIRROR=$(mirror)" \
        -t "$image" "$context"
}

build_herd() {
    local binary=${1:-target/release/herd}
    if [ ! -x "$binary" ]; then
        say "building $binary"
        cargo build --release -p herd-cli
    fi
    build_base
    local context
    context=$(mktemp -d /tmp/herd-image.XXXXXX)
    trap 'rm -rf "$context"' RETURN
    cp deploy/Dockerfile "$context/Dockerfile"
    cp "$binary" "$context/herd"
    say "docker build → herd/herd:dev from $binary"
    local old
    old=$(docker image inspect -f '{{.Id}}' herd/herd:dev 2>/dev/null || true)
    docker build -q -t herd/herd:dev "$context" >/dev/null
    # The previous build is dangling now; drop it unless a container still uses it.
    if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' herd/herd:dev)" ]; then
        docker rmi "$old" >/dev/null 2>&1 || true
    fi
}

save() {
    local image=${1:?usage: build.sh save IMAGE FILE} file=${2:?usage: build.sh save IMAGE FILE}
    docker save -o "$file" "$image"
    say "saved $image to $file ($(du -h "$file" | cut -f1))"
}

command -v docker >/dev/null || { say "docker is not installed"; exit 1; }
what=${1:-base}
TARGET=$what
shift || true
# Nothing to do (checked before waiting for another build's lock).
case "$what" in
    base) exists "$BASE" base && { say "$BASE is there"; exit 0; } ;;
    ray) exists "herd/ray:${1:-$RAY_VERSION_DEFAULT}" ray && { say "herd/ray:${1:-$RAY_VERSION_DEFAULT} is there"; exit 0; } ;;
esac
# One installer at a time on this machine: tests build images and install packages in
# parallel, and two apt-get runs at once fail on dpkg's lock. The test suite's apt installs
# take this same lock (crates/cli/tests/common/install.rs).
exec 9>/tmp/herd-install.lock
flock 9
case "$what" in
    base) build_base ;;
    ray) build_ray "$@" ;;
    herd) build_herd "$@" ;;
    save) save "$@" ;;
    *) say "unknown image $what: use base, ray, herd or save"; exit 2 ;;
esac
