#!/usr/bin/env bash
# Build D&D Studio for Linux: a PyInstaller one-folder bundle, then a .deb and a .tar.gz of it.
#
#   packaging/build_linux.sh [cpu|gpu|all]      (default: cpu)
#
# Outputs (git-ignored):
#   dist/pyinstaller-<variant>/dnd-studio/                the bundle (run ./dnd-studio; --selftest checks it)
#   dist/dnd-studio[-gpu]_<version>_amd64.deb             installs /opt/dnd-studio, /usr/bin/dnd-studio, the
#                                                         desktop entry, icons and slide MIME types
#   dist/dnd-studio-<version>-linux-x86_64-<variant>.tar.gz
# Work files: build/venv-cpu (the CPU build's venv), build/pyinstaller-<variant>, build/deb-<variant>.
#
# Variants:
#   cpu  built in build/venv-cpu with a CPU-only torch ($TORCH_CPU_REQ), no CUDA library: the small download.
#   gpu  built in the project's .venv (`make venv`) with PyPI's CUDA torch and its nvidia-* libraries.
#
# Environment:
#   PYTHON          interpreter for build/venv-cpu (default: python3.11, else python3); it must be built with
#                   --enable-shared (PyInstaller needs libpython3.X.so)
#   TORCH_CPU_REQ   the CPU torch to install (default: "torch==2.13.0+cpu", the CPU wheel this machine has on
#                   disk). Where the PyTorch CPU index is reachable, match the project's torch instead:
#                     PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
#                     TORCH_CPU_REQ="torch==2.14.1+cpu torchvision==0.29.1+cpu" packaging/build_linux.sh cpu
#                   Without a CPU torchvision the bundle leaves out torchvision and timm, so the extractors built
#                   on them (resnet50_trunc, UNI, ...) are unavailable there; stain_stats and the demo model work.
#   DEB_COMPRESS    the .deb's compressor: zstd (default, level 9: the CPU .deb in about a minute), xz (a sixth
#                   smaller, but about 25 minutes on 2 cores: for a release), gzip or none
#   SKIP_SELFTEST=1 do not run the bundle's --selftest after building it
set -euo pipefail
shopt -s inherit_errexit  # errors inside $(...) stop the build too

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PKG="$ROOT/packaging"
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' dnd_engine/__init__.py)
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
NICE=(nice -n 10)   # PyInstaller and xz are CPU heavy: let everything else on the machine go first

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'build_linux.sh: %s\n' "$*" >&2; exit 1; }
now() { date +%s; }
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" || true; }  # a local index's noise

case "${1:-cpu}" in
  cpu) VARIANTS=(cpu) ;;
  gpu) VARIANTS=(gpu) ;;
  all) VARIANTS=(cpu gpu) ;;
  *) die "usage: packaging/build_linux.sh [cpu|gpu|all]" ;;
esac
command -v dpkg-deb >/dev/null || die "dpkg-deb not found (apt-get install dpkg)"

# --- the build interpreters --------------------------------------------------------------------------------------
cpu_python() {
  local venv="$ROOT/build/venv-cpu" py="${PYTHON:-}"
  local req="${TORCH_CPU_REQ:-torch==2.13.0+cpu}"
  if [[ -z "$py" ]]; then py=$(command -v python3.11 || command -v python3); fi
  # what the venv should hold: the project's dependencies, with a CPU torch instead of the CUDA one
  local reqs
  reqs=$("$py" - "$ROOT/pyproject.toml" "$req" <<'EOF'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
deps = project["dependencies"] + project["optional-dependencies"]["gui"]   # the app: the engine plus its [gui] extra
torch_req = sys.argv[2].split()
with_tv = any(re.match(r"torchvision\b", r) for r in torch_req)
skip = {"torch", "torchvision"} | (set() if with_tv else {"timm"})   # timm imports torchvision
keep = [d for d in deps if re.match(r"[A-Za-z0-9_.-]+", d).group(0).lower() not in skip]
print("\n".join(torch_req + keep + ["pyinstaller>=6.10"]))
EOF
)
  local stamp="$venv/.dnd-build-reqs"
  if [[ ! -x "$venv/bin/python" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$reqs" ]]; then
    say "cpu: making $venv ($req)" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet_pip >&2
    local cons=()
    if [[ -x "$ROOT/.venv/bin/pip" ]]; then
      # the versions the project's venv was tested with, less torch and its CUDA libraries
      "$ROOT/.venv/bin/pip" freeze --exclude-editable 2>/dev/null \
        | grep -viE '^(torch|torchvision|triton|nvidia-|cuda-|dnd-studio|pyinstaller|-e )' > "$ROOT/build/cpu-constraints.txt" || true
      cons=(-c "$ROOT/build/cpu-constraints.txt")
    fi
    printf '%s\n' "$reqs" > "$ROOT/build/cpu-requirements.txt"
    "${NICE[@]}" "$venv/bin/python" -m pip install -q "${cons[@]}" -r "$ROOT/build/cpu-requirements.txt" 2>&1 \
      | quiet_pip >&2
    [[ ${PIPESTATUS[0]} == 0 ]] || die "pip install failed (see above)"
    printf '%s' "$reqs" > "$stamp"
  fi
  "$venv/bin/python" -c "import torch, sys; sys.exit(torch.version.cuda is not None)" \
    || die "$venv has a CUDA torch; set TORCH_CPU_REQ to a CPU-only build"
  echo "$venv/bin/python"
}

gpu_python() {
  local py="$ROOT/.venv/bin/python"
  [[ -x "$py" ]] || die "the gpu variant is built in the project's venv: run 'make venv' first"
  "$py" -c "import PyInstaller" 2>/dev/null || "$py" -m pip install -q "pyinstaller>=6.10" 2>&1 | quiet_pip >&2
  "$py" -c "import torch, sys; sys.exit(torch.version.cuda is None)" \
    || die ".venv has a CPU-only torch; the gpu variant needs the CUDA build"
  echo "$py"
}

# --- one variant -------------------------------------------------------------------------------------------------
build_variant() {
  local variant=$1 py t0 t1
  mkdir -p "$ROOT/build" "$ROOT/dist"
  py=$("${variant}_python")
  local dist="$ROOT/dist/pyinstaller-$variant" bundle="$ROOT/dist/pyinstaller-$variant/dnd-studio"

  say "$variant: PyInstaller ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
  t0=$(now)
  DND_VARIANT=$variant "${NICE[@]}" "$py" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$dist" --workpath "$ROOT/build/pyinstaller-$variant" "$PKG/dnd-studio.spec"
  t1=$(now)
  echo "bundle: $bundle ($(du -sh "$bundle" | cut -f1), built in $((t1 - t0)) s)"

  if [[ "${SKIP_SELFTEST:-0}" != 1 ]]; then
    say "$variant: selftest of the bundle"
    QT_QPA_PLATFORM=offscreen timeout 300 "$bundle/dnd-studio" --selftest || die "the bundle's selftest failed"
  fi

  local pkgname=dnd-studio conflicts=dnd-studio-gpu desc_variant="CPU build (no CUDA)" comp=${DEB_COMPRESS:-zstd}
  if [[ $variant == gpu ]]; then
    pkgname=dnd-studio-gpu; conflicts=dnd-studio; desc_variant="GPU build (CUDA libraries included)"
  fi

  say "$variant: .deb"
  local stage="$ROOT/build/deb-$variant" root="$ROOT/build/deb-$variant/root"
  rm -rf "$stage"
  mkdir -p "$root/opt" "$root/usr/bin" "$root/usr/share/applications" "$root/usr/share/mime/packages" \
           "$root/usr/share/doc/$pkgname" "$root/DEBIAN"
  cp -al "$bundle" "$root/opt/dnd-studio" 2>/dev/null || cp -a "$bundle" "$root/opt/dnd-studio"  # hard links: GBs
  ln -s ../../opt/dnd-studio/dnd-studio "$root/usr/bin/dnd-studio"     # relative: works in any root
  install -m 644 "$PKG/linux/dnd-studio.desktop" "$root/usr/share/applications/dnd-studio.desktop"
  install -m 644 "$PKG/linux/dnd-studio-mime.xml" "$root/usr/share/mime/packages/dnd-studio.xml"
  for png in "$ROOT"/resources/icons/dnd-studio-*.png; do
    local n; n=$(basename "$png" .png); n=${n#dnd-studio-}
    install -D -m 644 "$png" "$root/usr/share/icons/hicolor/${n}x${n}/apps/dnd-studio.png"
  done
  install -D -m 644 "$ROOT/resources/icons/dnd-studio.svg" "$root/usr/share/icons/hicolor/scalable/apps/dnd-studio.svg"
  install -m 644 "$PKG/linux/copyright" "$root/usr/share/doc/$pkgname/copyright"
  chmod -R u+rwX,go+rX,go-w "$root"
  local size_kb; size_kb=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  sed -e "s/@PACKAGE@/$pkgname/" -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" \
      -e "s/@SIZE@/$size_kb/" -e "s/@CONFLICTS@/$conflicts/" -e "s/@VARIANT@/$desc_variant/" \
      "$PKG/linux/control.in" > "$root/DEBIAN/control"
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | xargs -0 md5sum > DEBIAN/md5sums)
  local deb="$ROOT/dist/${pkgname}_${VERSION}_${ARCH}.deb"
  t0=$(now)
  local level=(); [[ $comp == zstd ]] && level=(-z9)
  "${NICE[@]}" dpkg-deb --root-owner-group -Z"$comp" "${level[@]}" --build "$root" "$deb" >/dev/null
  t1=$(now)
  echo "deb: $deb ($(du -h "$deb" | cut -f1), $comp, $((t1 - t0)) s)"

  say "$variant: .tar.gz"
  local tarname="dnd-studio-$VERSION-linux-x86_64-$variant" tstage="$stage/tar"
  mkdir -p "$tstage/$tarname/share"
  cp "$PKG/linux/dnd-studio.desktop" "$PKG/linux/dnd-studio-mime.xml" "$ROOT/resources/icons/dnd-studio-256.png" \
     "$tstage/$tarname/share/"
  install -m 755 "$PKG/linux/install-desktop-entry.sh" "$tstage/$tarname/install-desktop-entry.sh"
  local tgz="$ROOT/dist/$tarname.tar.gz"
  t0=$(now)
  # the bundle goes in under the archive's top folder name, without a copy
  tar -cf - --owner=0 --group=0 -C "$dist" --transform "s,^dnd-studio/,$tarname/,;s,^dnd-studio\$,$tarname," \
      dnd-studio -C "$tstage" "$tarname/share" "$tarname/install-desktop-entry.sh" | "${NICE[@]}" gzip -6 > "$tgz"
  t1=$(now)
  rm -rf "$tstage"
  echo "tar.gz: $tgz ($(du -h "$tgz" | cut -f1), $((t1 - t0)) s)"
}

T_START=$(now)
for v in "${VARIANTS[@]}"; do build_variant "$v"; done
say "done in $(( $(now) - T_START )) s"
ls -la "$ROOT"/dist/*.deb "$ROOT"/dist/*.tar.gz 2>/dev/null || true
