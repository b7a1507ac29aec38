#!/bin/bash
# Build dist/claudeclaw_<version>_<arch>.deb (and a wheel) from this source tree.
#
#   packaging/build-deb.sh            # run from anywhere inside the source tree
#
# The package bundles claudeclaw and its Python dependencies (cp311 wheels from PyPI, or
# pip's cache) in /opt/claudeclaw/lib and runs them with Debian's /usr/bin/python3 (3.11),
# isolated from any other site-packages. No debhelper: a staging tree + dpkg-deb.
# Env: PYTHON (the pip that builds; default python3, must be a 3.11), DIST (output dir),
#      PIP_ARGS (extra pip options, e.g. --no-index --find-links DIR for offline builds),
#      CLAUDECLAW_DEB_CONSTRAINTS (a pip constraints file; default: none).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
PYTHON=${PYTHON:-python3}
DIST=${DIST:-$SRC/dist}
PKG=claudeclaw
LIB=/opt/claudeclaw/lib

cd "$SRC"
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$pyver" != 3.11 ]; then
    echo "build-deb: $PYTHON is Python $pyver; the package targets Debian 12's python3 (3.11)" >&2
    exit 1
fi
version=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')
arch=$(dpkg --print-architecture)
case $arch in
    amd64) plat=x86_64 ;;
    arm64) plat=aarch64 ;;
    *) echo "build-deb: unsupported architecture $arch" >&2; exit 1 ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/claudeclaw-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
mkdir -p "$DIST" "$ROOT/DEBIAN" "$ROOT$LIB" "$ROOT/opt/claudeclaw/bin" "$ROOT/usr/bin" \
         "$ROOT/lib/systemd/system" "$ROOT/usr/lib/systemd/user" "$ROOT/usr/share/doc/$PKG"

# 1. The wheel (also shipped in dist/ as the second format), built from a clean copy so
#    that setuptools' build/ and *.egg-info never land in the source tree.
mkdir -p "$WORK/src"
cp -r pyproject.toml claudeclaw "$WORK/src/"
for f in README.md LICENSE setup.cfg MANIFEST.in; do [ -f "$f" ] && cp "$f" "$WORK/src/"; done
find "$WORK/src" -name __pycache__ -type d -prune -exec rm -rf {} +
rm -f "$DIST/$PKG"-*.whl
# shellcheck disable=SC2086
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps ${PIP_ARGS:-} \
    --wheel-dir "$DIST" "$WORK/src"
wheel=$(ls "$DIST/$PKG-$version"-*.whl)

# 2. The wheel and its dependencies for CPython 3.11 on manylinux (glibc <= 2.36, Debian 12).
constraints=()
[ -n "${CLAUDECLAW_DEB_CONSTRAINTS:-}" ] && constraints=(--constraint "$CLAUDECLAW_DEB_CONSTRAINTS")
platforms=()
for p in manylinux_2_36 manylinux_2_34 manylinux_2_28 manylinux_2_17 manylinux2014 \
         manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1; do
    platforms+=(--platform "${p}_$plat")
done
# shellcheck disable=SC2086
"$PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-compile \
    --target "$ROOT$LIB" --only-binary=:all: --implementation cp --python-version 3.11 \
    --abi cp311 --abi abi3 --abi none "${platforms[@]}" --platform any \
    "${constraints[@]}" ${PIP_ARGS:-} "$wheel"
rm -rf "$ROOT$LIB/bin"
find "$ROOT$LIB" -name __pycache__ -type d -prune -exec rm -rf {} +

# 3. Entry point: Debian's python3, isolated (-I: no user site-packages, no PYTHON* env,
#    no current directory on sys.path), with only the bundled libraries added.
cat >"$ROOT/opt/claudeclaw/bin/claudeclaw" <<'PY'
import sys

sys.path.insert(0, "/opt/claudeclaw/lib")
from claudeclaw.cli import main  # noqa: E402

sys.exit(main())
PY
cat >"$ROOT/usr/bin/claudeclaw" <<'SH'
#!/bin/sh
# claudeclaw (Debian package): bundled libraries only, never the user's site-packages.
# The exported variables let the daemon's worker processes (started with the same
# interpreter) find the same libraries; -I makes this process ignore them.
PYTHONPATH=/opt/claudeclaw/lib
PYTHONNOUSERSITE=1
export PYTHONPATH PYTHONNOUSERSITE
exec /usr/bin/python3 -I /opt/claudeclaw/bin/claudeclaw "$@"
SH
chmod 0755 "$ROOT/usr/bin/claudeclaw"

# 4. Units, docs, maintainer scripts.
install -m 0644 systemd/claudeclaw.service systemd/claudeclaw@.service "$ROOT/lib/systemd/system/"
install -m 0644 systemd/user/claudeclaw.service "$ROOT/usr/lib/systemd/user/"
for doc in README.md docs/OPERATIONS.md docs/ARCHITECTURE.md; do
    [ -f "$doc" ] && install -m 0644 "$doc" "$ROOT/usr/share/doc/$PKG/"
done
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm \
    "$ROOT/DEBIAN/"

size=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat >"$ROOT/DEBIAN/control" <<CTRL
Package: $PKG
Version: $version
Architecture: $arch
Maintainer: claudeclaw maintainers <root@localhost>
Installed-Size: $size
Depends: python3 (>= 3.11), python3 (<< 3.12), adduser | passwd, util-linux
Recommends: nodejs
Section: net
Priority: optional
Homepage: https://github.com/claudeclaw/claudeclaw
Description: Claude Code from Discord, one session per thread
 claudeclaw runs the claude CLI (Claude Code) for messages sent on Discord: one
 Claude session and one worker process per Discord thread, supervised by a
 systemd service (claudeclaw.service; claudeclaw@.service for several projects).
 The claude CLI itself is not included (npm install -g @anthropic-ai/claude-code).
CTRL

# Deterministic-ish tree: sane modes, no stray write bits.
find "$ROOT" -type d -exec chmod 0755 {} +
find "$ROOT$LIB" -type f -exec chmod 0644 {} +
chmod 0644 "$ROOT/opt/claudeclaw/bin/claudeclaw"
chmod 0755 "$ROOT/DEBIAN/postinst" "$ROOT/DEBIAN/prerm" "$ROOT/DEBIAN/postrm"
find "$ROOT$LIB" -name '*.so' -exec chmod 0644 {} +

out="$DIST/${PKG}_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$out" >/dev/null
echo "$out"
echo "$wheel"
