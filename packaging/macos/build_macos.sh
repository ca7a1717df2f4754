#!/usr/bin/env bash
# Build D&D Studio for macOS: "D&D Studio.app" (PyInstaller) and a drag-to-Applications .dmg.
# Not run on the Linux build machine (see packaging/README.md). Needs macOS 12+, Python 3.11 from python.org
# or Homebrew, Xcode command line tools (iconutil, codesign, hdiutil are part of macOS). From the repo root:
#
#   packaging/macos/build_macos.sh
#
# Outputs: dist/pyinstaller-cpu/D&D Studio.app and dist/dnd-studio-<version>-macos-<arch>.dmg.
# PyPI's macOS torch has no CUDA (it uses the CPU, and Apple GPUs through MPS), so there is one variant.
# Signing: ad hoc by default (runs on the Mac that built it; elsewhere Gatekeeper asks: right-click > Open).
# For distribution set CODESIGN_IDENTITY="Developer ID Application: ..." and notarize the .dmg afterwards:
#   xcrun notarytool submit dist/<name>.dmg --keychain-profile <profile> --wait && xcrun stapler staple dist/<name>.dmg
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' dnd_engine/__init__.py)
ARCH=$(uname -m)
PY=${PYTHON:-python3.11}
VENV=build/venv-macos
APP="dist/pyinstaller-cpu/D&D Studio.app"

mkdir -p build dist
if [[ ! -x $VENV/bin/python ]]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --upgrade pip
  "$VENV/bin/python" -m pip install ".[gui]" "pyinstaller>=6.10"
fi

# the app icon: .icns from the committed PNGs (the spec picks up build/dnd-studio.icns)
ICONSET=build/dnd-studio.iconset
rm -rf "$ICONSET"; mkdir -p "$ICONSET"
for s in 16 32 128 256 512; do
  cp "resources/icons/dnd-studio-$s.png" "$ICONSET/icon_${s}x${s}.png"
  d=$((s * 2)); [[ -f resources/icons/dnd-studio-$d.png ]] && cp "resources/icons/dnd-studio-$d.png" "$ICONSET/icon_${s}x${s}@2x.png"
done
iconutil -c icns "$ICONSET" -o build/dnd-studio.icns

DND_VARIANT=cpu "$VENV/bin/python" -m PyInstaller --noconfirm --log-level WARN \
  --distpath dist/pyinstaller-cpu --workpath build/pyinstaller-macos packaging/dnd-studio.spec

if [[ ${CODESIGN_IDENTITY:-} ]]; then   # hardened runtime, as notarization requires
  codesign --force --deep --options runtime --entitlements packaging/macos/entitlements.plist \
    --sign "$CODESIGN_IDENTITY" "$APP"
else
  codesign --force --deep --sign - "$APP"
fi
QT_QPA_PLATFORM=offscreen "$APP/Contents/MacOS/dnd-studio" --selftest

# the disk image: the app and a link to /Applications, to drag it onto
STAGE=build/dmg
rm -rf "$STAGE"; mkdir -p "$STAGE"
cp -R "$APP" "$STAGE/"
ln -s /Applications "$STAGE/Applications"
DMG="dist/dnd-studio-$VERSION-macos-$ARCH.dmg"
rm -f "$DMG"
hdiutil create -volname "D&D Studio $VERSION" -srcfolder "$STAGE" -fs HFS+ -format UDZO -ov "$DMG"
[[ ${CODESIGN_IDENTITY:-} ]] && codesign --sign "$CODESIGN_IDENTITY" "$DMG"
ls -lh "$DMG"
