#!/usr/bin/env bash
# Builds the .deb and the .rpm from this checkout: the release binary, the man pages and shell
# completions generated from the CLI definition (`butler generate`), then cargo-deb and
# cargo-generate-rpm with the metadata in Cargo.toml. Prints the two package paths.
#   packaging/build.sh [OUT_DIR]        default OUT_DIR: target/packages
#   DEB_VERSION=0.1.1-1 packaging/build.sh   the .deb under another version (the upgrade test)
#   SKIP_RPM=1 packaging/build.sh            the .deb only
#   PROFILE=package-test packaging/build.sh  another cargo profile (the tests' quicker one; default release)
# Needs: cargo-deb, cargo-generate-rpm (cargo install --locked cargo-deb cargo-generate-rpm),
# dpkg-dev (dpkg-shlibdeps finds the libc the binary needs), binutils (strip).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/packages}
target=${CARGO_TARGET_DIR:-target}
profile=${PROFILE:-release}
gen=target/packaging   # where Cargo.toml's package metadata takes the generated files from

for tool in cargo-deb cargo-generate-rpm dpkg-shlibdeps strip; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: $tool is missing: cargo install --locked cargo-deb cargo-generate-rpm; apt-get install dpkg-dev binutils" >&2
        exit 1
    }
done

mkdir -p "$gen" "$out"
# Two builds at once (parallel tests) must not regenerate the files under each other.
exec 9>"$gen.lock"
flock 9

cargo build --profile "$profile" --locked --bin butler
bin=$target/$profile/butler

rm -rf "$gen/man" "$gen/completions"
"$bin" generate man "$gen/man"
# Man pages are gzipped for both packages (cargo-deb would gzip them for the .deb only); -n keeps
# the build reproducible (no name or time in the header).
gzip -9nf "$gen"/man/*.1
for shell in bash zsh fish; do
    "$bin" generate completions "$shell" "$gen/completions" >/dev/null
done
# cargo-deb strips its own copy; cargo-generate-rpm packages what it is given.
strip --strip-unneeded --remove-section=.comment -o "$gen/butler" "$bin"

cargo deb --no-build --profile "$profile" --output "$out/" ${DEB_VERSION:+--deb-version "$DEB_VERSION"} >&2
deb=$(ls -t "$out"/devops-butler_*.deb | head -n 1)
echo "$deb"
if [ "${SKIP_RPM:-0}" != 1 ]; then
    # ldd-based requirements only: rpm's own generator would also require user(butler) and
    # group(docker) from the sysusers file, which no engine package provides (the file creates them).
    cargo generate-rpm --auto-req builtin --output "$out/" >&2
    ls -t "$out"/devops-butler-*.rpm | head -n 1
fi
