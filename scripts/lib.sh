# Shared by scripts/run and scripts/test (sourced, not run): set-up steps that install what is
# missing and start what must run, each quick when there is nothing to do, each announced with one
# line so a first run of several minutes is never silent.

step() { echo "==> $* [$(date +%T), ${SECONDS}s]" >&2; }

# Installs the Debian packages named that are not installed yet (as root: apt-get update first,
# then install without recommends). Maintainer scripts may not start services meanwhile: dockerd
# is started by ensure_docker the same way whether or not this machine has an init that could.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages: ${missing[*]}; run this as root once, or: sudo apt-get install ${missing[*]}" >&2
        return 1
    fi
    step "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    local own_policy=false
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=true
    fi
    local rc=0
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || rc=$?
    if $own_policy; then rm -f /usr/sbin/policy-rc.d; fi
    return $rc
}

# Makes sure a Docker engine answers: starts dockerd in the background when none does (these
# machines have the client but no running engine), then waits for it.
ensure_docker() {
    docker info >/dev/null 2>&1 && return 0
    local log=${DOCKERD_LOG:-/var/log/dockerd-butler.log}
    step "starting dockerd (log: $log)"
    nohup dockerd >"$log" 2>&1 &
    local _
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    echo "dockerd did not answer within 60 s; its log:" >&2
    tail -n 50 "$log" >&2
    return 1
}

ensure_cargo() {
    command -v cargo >/dev/null || {
        echo "cargo is not installed: install a Rust toolchain (https://rustup.rs), then run this again" >&2
        return 1
    }
}
