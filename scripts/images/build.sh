#!/usr/bin/env bash
# Builds the images the integration tests run, from local files and Debian's packages only (no image
# registry is reachable where tests run). Usage: build.sh KIND... with KIND in systemd, nginx, app;
# prints one ensured tag per line on stdout (progress goes to stderr).
#
# Caching: each tag embeds a short hash of that kind's inputs (this script's text for the kind, the
# package list, the files copied in, the compiler version), so an unchanged kind costs one
# `docker image inspect`, and any change to an input builds a new tag. The Debian archive is not an
# input: IMAGES_REBUILD=1 builds anew under the same tag (e.g. for security updates).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${BUTLER_IMAGE_CACHE:-$REPO/.cache/images}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PREFIX=devops-butler-test

log() { echo "build.sh: $*" >&2; }

# Short hash of everything on stdin.
short_hash() { sha256sum | cut -c1-12; }

# The text of the named shell functions: a change to how a kind is built changes its tag, while an edit
# to another kind's function does not.
fn_text() { local f; for f in "$@"; do declare -f "$f"; done; }

# debootstrap a minbase root into $1 with the packages $2 (comma-separated). The .debs are kept in the
# cache so a rebuild after an input change does not download them again.
debootstrap_root() {
    local dir=$1 include=$2
    mkdir -p "$CACHE/debs" "$dir/etc/dpkg/dpkg.cfg.d"
    # dpkg's fsync per file is most of an install's time and buys nothing for a root that is
    # imported and thrown away (about a quarter off the build).
    echo force-unsafe-io >"$dir/etc/dpkg/dpkg.cfg.d/00-build-unsafe-io"
    debootstrap --variant=minbase --include="$include" --cache-dir="$CACHE/debs" \
        "$SUITE" "$dir" "$MIRROR" >"$dir.log" 2>&1 || {
        log "debootstrap failed, last lines of $dir.log:"; tail -n 30 "$dir.log" >&2; return 1; }
    # Nothing in an image needs the package lists or the downloaded archives.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb "$dir/etc/dpkg/dpkg.cfg.d/00-build-unsafe-io"
}

# Import root dir $1 as image $2 with the docker-import changes that follow.
import_root() {
    local dir=$1 tag=$2; shift 2
    local changes=() c
    for c in "$@"; do changes+=(-c "$c"); done
    tar --numeric-owner -C "$dir" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
}

# --- systemd: a real systemd as PID 1, the butler's test bed ---------------------------------------
SYSTEMD_PACKAGES=systemd,systemd-sysv,dbus,ca-certificates,curl,procps
# Units that have nothing to do in a container: no ttys, no udev, no kernel modules, no hardware clock;
# left on, they fail or wait, and `systemctl is-system-running` says degraded instead of running.
SYSTEMD_MASKED="getty@.service getty.target console-getty.service systemd-udevd.service
systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-udev-trigger.service
systemd-udev-settle.service systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount
sys-kernel-tracing.mount sys-fs-fuse-connections.mount systemd-remount-fs.service
systemd-firstboot.service systemd-hwdb-update.service systemd-random-seed.service
systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer
dpkg-db-backup.timer systemd-logind.service"
build_systemd() {
    local dir=$1 tag=$2 u
    debootstrap_root "$dir" "$SYSTEMD_PACKAGES"
    for u in $SYSTEMD_MASKED; do ln -sf /dev/null "$dir/etc/systemd/system/$u"; done
    # debootstrap copies the build host's hostname and leaves a machine-id to be made at first boot.
    rm -f "$dir/etc/hostname"
    : >"$dir/etc/machine-id"
    # (docker import takes no STOPSIGNAL, so `docker stop` would wait out its timeout: tests use rm -f.)
    import_root "$dir" "$tag" 'CMD ["/sbin/init"]' 'ENV container=docker'
}
inputs_systemd() { echo "$SYSTEMD_PACKAGES $SYSTEMD_MASKED $SUITE"; fn_text build_systemd debootstrap_root import_root; }

# --- nginx: Debian's nginx, the proxy the butler drives ----------------------------------------------
NGINX_PACKAGES=nginx-light,libnginx-mod-http-lua
NGINX_STABLE_TAG=devops-butler/nginx:bookworm
build_nginx() {
    local dir=$1 tag=$2
    debootstrap_root "$dir" "$NGINX_PACKAGES"
    rm -f "$dir/etc/hostname"
    # As the official image does: logs to the container's stdout/stderr, nginx in the foreground.
    ln -sf /dev/stdout "$dir/var/log/nginx/access.log"
    ln -sf /dev/stderr "$dir/var/log/nginx/error.log"
    import_root "$dir" "$tag" 'CMD ["nginx", "-g", "daemon off;"]' 'EXPOSE 80'
    docker run --rm "$tag" nginx -v >&2
}
inputs_nginx() { echo "$NGINX_PACKAGES $SUITE"; fn_text build_nginx debootstrap_root import_root; }
after_nginx() { docker tag "$1" "$NGINX_STABLE_TAG"; }

# --- app: the test app (examples/testapp.rs), one static binary and nothing else --------------------
APP_SOURCES="examples/testapp.rs testkit/src/ws_codec.rs"
RUSTC_FLAGS="-C opt-level=2 -C target-feature=+crt-static -C panic=abort -C strip=symbols"
build_app() {
    local dir=$1 tag=$2
    # Compiled on its own with rustc, not through cargo: the app is std-only, and a static binary needs
    # flags that must not leak into the crate's own build (~3 s, independent of the cargo profile).
    mkdir -p "$dir/bin" "$dir/tmp"
    # shellcheck disable=SC2086
    rustc --edition 2024 $RUSTC_FLAGS -o "$dir/bin/testapp" "$REPO/examples/testapp.rs"
    if ! ldd "$dir/bin/testapp" 2>&1 | grep -qE 'statically linked|not a dynamic'; then
        log "testapp is not static: $(ldd "$dir/bin/testapp" 2>&1)"; return 1
    fi
    import_root "$dir" "$tag" 'ENTRYPOINT ["/bin/testapp"]'
}
inputs_app() {
    echo "$RUSTC_FLAGS"; rustc -vV
    (cd "$REPO" && cat $APP_SOURCES)
    fn_text build_app import_root
}

ensure() {
    local kind=$1 hash tag dir start
    case $kind in systemd|nginx|app) ;; *) log "unknown kind '$kind' (systemd, nginx, app)"; return 2;; esac
    hash=$("inputs_$kind" | short_hash)
    tag="$PREFIX/$kind:$hash"
    if [ "${IMAGES_REBUILD:-0}" = 1 ] || ! docker image inspect "$tag" >/dev/null 2>&1; then
        mkdir -p "$CACHE"
        # Two test processes asking for the same kind at once build it once.
        exec 9>"$CACHE/$kind.lock"
        flock 9
        if [ "${IMAGES_REBUILD:-0}" = 1 ] || ! docker image inspect "$tag" >/dev/null 2>&1; then
            log "building $tag"
            start=$SECONDS
            dir=$(mktemp -d "$CACHE/$kind-root.XXXXXX")
            # shellcheck disable=SC2064
            trap "rm -rf '$dir' '$dir.log'" EXIT
            "build_$kind" "$dir" "$tag"
            rm -rf "$dir" "$dir.log"
            trap - EXIT
            log "built $tag in $((SECONDS - start)) s"
        fi
        flock -u 9
    fi
    if declare -F "after_$kind" >/dev/null; then "after_$kind" "$tag"; fi
    echo "$tag"
}

[ $# -gt 0 ] || { log "usage: build.sh KIND... (systemd, nginx, app)"; exit 2; }
for kind in "$@"; do ensure "$kind"; done
