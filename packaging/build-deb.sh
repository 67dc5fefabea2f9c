#!/usr/bin/env bash
# Build the Debian package (Debian 12):
#     bash packaging/build-deb.sh [--out DIR]
# writes DIR/trustmilter_VERSION_ARCH.deb (DIR: the top of this tree unless
# given; an older trustmilter_*.deb there is replaced), to be installed with
#     apt install ./trustmilter_*.deb
# The package is architecture-specific (amd64 here): pymilter is compiled
# against libmilter. packaging/debian/ says what it installs and why.
#
# Missing build dependencies are installed with apt-get when run as root,
# never asking (CI has no standard input); otherwise they are named and the
# build stops. The build runs in a temporary copy of the tree, never in the
# tree itself: the files git tracks or would track (uncommitted changes
# included; .venv and other ignored files not), with packaging/debian as
# debian/. pip fetches the pinned libraries from the configured index.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$PWD
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=$(cd "${2:?--out needs a directory}" && pwd); shift 2 ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-deb.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done

build_dependencies=(debhelper dh-virtualenv dpkg-dev build-essential libmilter-dev
                    python3.11 python3.11-dev python3.11-venv)
missing=()
for package in "${build_dependencies[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "build-deb.sh: missing build dependencies: ${missing[*]}" >&2
        echo "  as root: apt-get install --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/trustmilter-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
source_tree=$work/trustmilter
mkdir "$source_tree"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # --ignore-failed-read: a tracked file deleted in the work tree is simply left out.
    git ls-files -z --cached --others --exclude-standard \
        | tar --null --files-from=- --ignore-failed-read -cf - \
        | tar -xf - -C "$source_tree"
else
    tar --exclude=./.venv --exclude=./.git -cf - . | tar -xf - -C "$source_tree"
fi
cp -r packaging/debian "$source_tree/debian"

(cd "$source_tree" && dpkg-buildpackage --build=binary --no-sign)

built=("$work"/trustmilter_*.deb)
[ -f "${built[0]}" ] || { echo "build-deb.sh: dpkg-buildpackage made no .deb" >&2; exit 1; }
rm -f "$out"/trustmilter_*.deb
cp "${built[@]}" "$out"/
for deb in "${built[@]}"; do
    echo "built $out/$(basename "$deb")"
done
