#!/bin/sh
# For the .tar.gz: register D&D Studio with your desktop (menu entry, icon, double-click on slide files), for
# this user only, pointing at this folder. Undo with: ./install-desktop-entry.sh --remove
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
if [ "${1:-}" = "--remove" ]; then
  what=removed
  rm -f "$data/applications/dnd-studio.desktop" "$data/mime/packages/dnd-studio.xml" \
        "$data/icons/hicolor/256x256/apps/dnd-studio.png"
else
  what=installed
  mkdir -p "$data/applications" "$data/mime/packages" "$data/icons/hicolor/256x256/apps"
  sed -e "s|^Exec=.*|Exec=\"$here/dnd-studio\" %F|" -e "s|^TryExec=.*|TryExec=$here/dnd-studio|" \
      "$here/share/dnd-studio.desktop" > "$data/applications/dnd-studio.desktop"
  cp "$here/share/dnd-studio-mime.xml" "$data/mime/packages/dnd-studio.xml"
  cp "$here/share/dnd-studio-256.png" "$data/icons/hicolor/256x256/apps/dnd-studio.png"
fi
command -v update-mime-database >/dev/null && update-mime-database "$data/mime" || true
command -v update-desktop-database >/dev/null && update-desktop-database "$data/applications" || true
echo "D&D Studio desktop entry $what ($data)"
