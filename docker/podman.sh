#!/usr/bin/env bash
# Build and run vidal's CPU image with rootful podman on a machine that reaches package
# registries but no container registry (`make image` runs `docker/podman.sh build`).
#   docker/podman.sh check          exit 0 when podman can run containers here
#   docker/podman.sh base           make the local base image (when missing): Debian bookworm
#                                   + Python 3.11 in /opt/venv, by mmdebstrap from Debian's mirror
#   docker/podman.sh build          the base, then docker/Dockerfile.cpu -> $IMAGE
#   docker/podman.sh podman ARGS    podman with this script's engine settings (run, images, ...)
# Needs root, podman, runc and mmdebstrap (Debian: apt-get install podman runc conmon
# slirp4netns uidmap fuse-overlayfs catatonit golang-github-containers-common mmdebstrap).
# Settings (environment):
#   IMAGE         the tag built (default vidal:<version>-ray<ray>-cpu, as docker/ray-cluster.yaml)
#   BASE_IMAGE    the image to build from (default: the local base this script makes)
#   TORCH_WHEELS  a folder holding the torch wheel to install (default: the wheel pip finds on
#                 this machine's disk without an index, if any)
#   TORCH_INDEX   where torch comes from otherwise (default: the PyTorch CPU index)
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
RAY=$(sed -n 's/.*"ray\[[a-z,]*\]==\([0-9.]*\)".*/\1/p' pyproject.toml)
TORCH=$(sed -n 's/.*"torch==\([0-9.]*\)".*/\1/p' pyproject.toml)
IMAGE=${IMAGE:-vidal:$VERSION-ray$RAY-cpu}
LOCAL_BASE=localhost/vidal-base:3.11-bookworm
WORK=${VIDAL_PODMAN_DIR:-/tmp/vidal-podman}
PY=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

# Engine settings these machines need: runc (crun refuses hybrid cgroups), cgroupfs, and
# ulimits within the machine's hard limits (podman's defaults are refused).
engine_conf() {
    mkdir -p "$WORK"
    export CONTAINERS_CONF="$WORK/containers.conf"
    cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF
}

check() {
    command -v podman >/dev/null || { echo "podman is not installed" >&2; return 1; }
    command -v mmdebstrap >/dev/null || { echo "mmdebstrap is not installed" >&2; return 1; }
    [ "$(id -u)" -eq 0 ] || { echo "podman builds here need root" >&2; return 1; }
    podman info >/dev/null || { echo "podman cannot run here" >&2; return 1; }
}

base() {
    podman image exists "$LOCAL_BASE" && return 0
    local tmp
    tmp=$(mktemp -d "$WORK/base.XXXXXX")
    # passwd: useradd for the image's non-root user (not in minbase)
    mmdebstrap --mode=root --variant=minbase \
        --include=python3,python3-venv,ca-certificates,passwd \
        bookworm "$tmp/bookworm.tar" "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    podman import "$tmp/bookworm.tar" localhost/debian:bookworm-local
    rm "$tmp/bookworm.tar"
    # this machine's extra CA certificates: pip over HTTPS inside a build needs them
    mkdir -p "$tmp/certs"
    cp /usr/local/share/ca-certificates/*.crt "$tmp/certs/" 2>/dev/null || true
    cat >"$tmp/Dockerfile" <<'EOF'
FROM localhost/debian:bookworm-local
COPY certs/ /usr/local/share/ca-certificates/
RUN update-ca-certificates && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt LANG=C.UTF-8
EOF
    podman build -t "$LOCAL_BASE" "$tmp"
    rm -rf "$tmp"
}

# docker/wheels/ is the build context's wheel folder (its *.whl are git-ignored); the
# Dockerfile bind-mounts it, so a wheel there never becomes a layer of the image.
torch_wheels() {
    rm -f docker/wheels/*.whl
    if [ -n "${TORCH_WHEELS:-}" ]; then
        cp "$TORCH_WHEELS"/torch-"$TORCH"*.whl docker/wheels/
    else
        # --no-index: only wheels on this machine's disk (pip's find-links), never a download
        "$PY" -m pip download --quiet --no-index --no-deps --only-binary=:all: \
            --python-version 3.11 --implementation cp --platform manylinux_2_28_x86_64 \
            -d docker/wheels "torch==$TORCH" 2>/dev/null || true
    fi
}

build() {
    base_image=${BASE_IMAGE:-$LOCAL_BASE}
    [ -n "${BASE_IMAGE:-}" ] || base
    torch_wheels
    local index=${TORCH_INDEX:-}
    if [ -z "$index" ] && ls docker/wheels/torch-*.whl >/dev/null 2>&1; then
        index=https://pypi.org/simple  # torch's own dependencies; torch is the local wheel
    fi
    podman build --build-arg BASE_IMAGE="$base_image" \
        ${index:+--build-arg TORCH_INDEX="$index"} \
        -f docker/Dockerfile.cpu -t "$IMAGE" .
    echo "built $IMAGE"
}

engine_conf
case "${1:-}" in
check) check ;;
base) check && base ;;
build) check && build ;;
podman) shift && exec podman "$@" ;;
*) sed -n '2,16p' "$0" >&2 && exit 2 ;;
esac
