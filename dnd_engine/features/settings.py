"""The settings a feature folder's files were extracted with, and the one rule for reusing them: never mix.

Every features file records, as attributes of the h5 file, the settings that decide its numbers
(:data:`SETTING_KEYS`: extractor, weights' sha256, precision, magnification, patch size, overlap, minimum tissue,
tissue preset and threshold); its ``coords`` attributes record the slide's level-0 magnification. A run compares
its own settings with every file already in the folder (:func:`claim_folder`):

- the same settings: finished slides are skipped;
- other settings: the run is refused with :class:`SettingsMismatch` naming the files and the settings that differ
  (``dnd extract``: exit 1, nothing written), or, with ``overwrite``, this run's slides are recomputed — but a file
  of a slide outside the run still refuses it, since it would stay behind with its old settings;
- a slide whose level-0 magnification changed (a user corrected its objective power) is re-extracted:
  :func:`same_slide_scale`; that is the slide's property, not a run setting.

Files written before these attributes existed are compared on what they record (extractor, weights, precision,
magnification, patch size); what they do not record is assumed equal, with a note in the log.

Two runs at once on one folder: ``extraction.json`` is the folder's claim, compared and written under an
exclusive lock (``.extraction.mutex``: a name without ``.lock``, since the file stays); a running extraction holds a shared lock on ``.extraction.active``, so a
second run with other settings finds the folder busy and is refused, and one with the same settings goes on. The
app and ``dnd predict``, which choose no folder themselves, extract into a sibling folder named after the
settings instead (:func:`settings_folder`). Locks are POSIX ``flock``; where there is none (Windows) the files
are still compared, but two simultaneous runs are not excluded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import h5py

from ..atomic import locked_file, write_text_atomic
from ..errors import DnDError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)

#: the settings that decide a features file's numbers, as the h5 file's attribute names
SETTING_KEYS = ("extractor", "weights_sha256", "precision", "magnification", "patch_size", "overlap", "min_tissue",
                "tissue_preset", "tissue_threshold")
#: ``tissue_threshold`` as recorded when the preset's own method chose it (h5 attributes hold no None)
PRESET_THRESHOLD = -1
#: where files written before SETTING_KEYS existed keep the scale: their ``coords`` attributes
_COORDS_FALLBACK = {"magnification": "target_magnification", "patch_size": "target_patch_size"}

EXTRACTION_JSON = "extraction.json"
LOCK_FILE = ".extraction.mutex"
ACTIVE_FILE = ".extraction.active"


class SettingsMismatch(DnDError):
    """A folder holds features extracted with other settings than a run asks for (or another run with other
    settings is writing there). ``body`` says which files and settings; ``hint`` what to do; ``wanted`` the
    run's settings (for a caller that extracts elsewhere instead, see :func:`settings_folder`)."""

    #: what to do, by kind of refusal: files with other settings; files of slides outside this run (which
    #: overwriting would leave behind); another run writing there now
    HINTS = {"files": "use another output folder, or overwrite to recompute",
             "outside": "move those files away or use another output folder",
             "busy": "wait for it to finish or use another output folder"}

    def __init__(self, body: str, wanted: dict, kind: str = "files", hint: Optional[str] = None):
        self.body, self.wanted, self.kind = body, dict(wanted), kind
        self.hint = hint or self.HINTS[kind]
        super().__init__(f"{body}: {self.hint}")

    @property
    def busy(self) -> bool:
        return self.kind == "busy"

    def with_hints(self, hints: Dict[str, str]) -> "SettingsMismatch":
        """The same refusal with a caller's advice for its kind (the CLI names its flags)."""
        return SettingsMismatch(self.body, self.wanted, self.kind, hints.get(self.kind))


def run_settings(config, extractor) -> dict:
    """The settings a run writes with: ``config`` (an ExtractConfig) and the built ``extractor`` (its precision
    once resolved, its weights' sha256)."""
    return {
        "extractor": str(extractor.name), "weights_sha256": extractor.weights_sha256() or "",
        "precision": str(extractor.precision), "magnification": float(config.magnification),
        "patch_size": int(config.patch_size), "overlap": float(config.overlap), "min_tissue": float(config.min_tissue),
        "tissue_preset": str(config.tissue_preset),
        "tissue_threshold": PRESET_THRESHOLD if config.tissue_threshold is None else int(config.tissue_threshold),
    }


def recorded_settings(h5_path: Path) -> Tuple[dict, List[str]]:
    """(the settings a features file records, the SETTING_KEYS it does not record). Raises OSError/KeyError for
    a file h5py cannot read."""
    with h5py.File(h5_path, "r") as f:
        attrs = dict(f.attrs)
        coords = dict(f["coords"].attrs) if "coords" in f else {}
    out, missing = {}, []
    for k in SETTING_KEYS:
        v = attrs.get(k, coords.get(_COORDS_FALLBACK.get(k, ""), None))
        if v is None:
            missing.append(k)
        else:
            out[k] = v.decode() if isinstance(v, bytes) else (v.item() if hasattr(v, "item") else v)
    return out, missing


def _norm(key: str, value):
    if key == "precision":   # int8 is checked against fp32 as it runs and falls back to it: the same numbers
        return "fp32" if str(value) == "int8" else str(value)
    if key in ("magnification", "overlap", "min_tissue"):
        return round(float(value), 6)
    if key in ("patch_size", "tissue_threshold"):
        return int(value)
    return str(value)


def differences(recorded: dict, wanted: dict) -> List[str]:
    """The keys of ``recorded`` whose value is not ``wanted``'s (keys it lacks are assumed equal)."""
    return [k for k in SETTING_KEYS if k in recorded and k in wanted and _norm(k, recorded[k]) != _norm(k, wanted[k])]


def describe(settings: dict, keys: Iterable[str]) -> str:
    """``keys`` of ``settings`` as a user reads them: ``20x/256 px, overlap 0.5``."""
    keys = list(keys)
    parts = []
    if "magnification" in keys or "patch_size" in keys:
        parts.append(f"{float(settings['magnification']):g}x/{int(settings['patch_size'])} px")
    for k in keys:
        v = settings.get(k)
        if k in ("magnification", "patch_size"):
            continue
        if k == "weights_sha256":
            parts.append(f"weights sha256 {str(v)[:12]}" if v else "no weights file")
        elif k == "tissue_threshold":
            parts.append("the preset's tissue threshold" if int(v) == PRESET_THRESHOLD else f"tissue threshold {v}")
        elif k == "min_tissue":
            parts.append(f"min tissue {float(v):g}")
        elif k == "tissue_preset":
            parts.append(f"tissue preset {v}")
        else:
            parts.append(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}")
    return ", ".join(parts)


def _phrase(desc: str) -> str:
    return ("at " if desc[:1].isdigit() else "with ") + desc


def same_slide_scale(h5_path: Path, objective_power: Optional[float]) -> bool:
    """Whether features on disk were cut at the slide's current level-0 magnification: a user who corrects a
    slide's objective power must not get the old patches back (the slide is re-extracted). A file without the
    attribute, or one h5py cannot read (the caller's read then fails the slide), counts as the same."""
    try:
        with h5py.File(h5_path, "r") as f:
            old = f["coords"].attrs.get("level0_magnification") if "coords" in f else None
    except (OSError, KeyError):
        return True
    if old is None or objective_power is None:
        return True
    return abs(float(old) - float(objective_power)) < 1e-6


def settings_tag(settings: dict) -> str:
    """A folder-name tag for ``settings``: readable scale and a short hash of all of them."""
    blob = json.dumps({k: _norm(k, settings[k]) for k in SETTING_KEYS if k in settings}, sort_keys=True)
    return (f"{float(settings['magnification']):g}x-{int(settings['patch_size'])}px-"
            f"{hashlib.sha256(blob.encode()).hexdigest()[:8]}")


def settings_folder(base: Path, settings: dict) -> Path:
    """Where a caller that did not choose ``base``'s settings (``dnd predict``, the app's project) extracts when
    ``base`` holds other settings: a sibling named after these settings, e.g. ``extraction-20x-256px-1a2b3c4d``."""
    base = Path(base)
    return base.with_name(f"{base.name}-{settings_tag(settings)}")


def _mismatched(fdir: Path, wanted: dict) -> Tuple[Dict[str, List[str]], Dict[str, dict], List[str]]:
    """({slide id: differing keys}, {slide id: recorded settings}, [slide ids of files missing some keys])
    over the folder's finished features files."""
    diffs: Dict[str, List[str]] = {}
    recs: Dict[str, dict] = {}
    old: List[str] = []
    h5_dir = fdir / "h5_files"
    for p in sorted(h5_dir.glob("*.h5")) if h5_dir.is_dir() else []:
        if p.name.startswith("."):
            continue
        try:
            rec, missing = recorded_settings(p)
        except (OSError, KeyError):
            continue          # unreadable: the slide fails (or is recomputed) when a run reaches it
        d = differences(rec, wanted)
        if d:
            diffs[p.stem], recs[p.stem] = d, rec
        elif missing:
            old.append(p.stem)
    return diffs, recs, old


def _refusal(diffs: Dict[str, List[str]], recs: Dict[str, dict], wanted: dict, outside: bool) -> str:
    """One line: the files (a few named) and the settings that differ, e.g. ``h5_files/slide_3.h5 was extracted
    at 20x/256 px; this run asks for 10x/256 px``; ``outside``: the files are of slides not in this run."""
    groups: Dict[Tuple[str, str], List[str]] = {}
    for sid in sorted(diffs):
        keys = diffs[sid]
        groups.setdefault((describe(recs[sid], keys), describe(wanted, keys)), []).append(sid)
    (old, new), sids = max(groups.items(), key=lambda kv: len(kv[1]))
    names = f"h5_files/{sids[0]}.h5" + "".join(f", {s}.h5" for s in sids[1:3])
    names += f" and {len(sids) - 3} more" if len(sids) > 3 else ""
    verb = "were" if len(sids) > 1 else "was"
    where = " (slides not in this run: overwriting would leave them)" if outside else ""
    others = len(diffs) - len(sids)
    more = f" ({others} other file{'s' if others > 1 else ''} with other settings too)" if others else ""
    return f"{names}{where} {verb} extracted {_phrase(old)}; this run asks for {new}{more}"


class FolderClaim:
    """A run's hold on a feature folder (see :func:`claim_folder`); :meth:`release` when the run ends."""

    def __init__(self, fdir: Path, wanted: dict, payload: dict, pending: List[str], active):
        self.fdir, self.wanted, self.payload, self.pending, self._active = fdir, wanted, payload, pending, active

    def release(self, finished: bool = False) -> None:
        """Let go of the folder; if this run (an overwrite) left slides with other settings, ``finished``: remove
        those files (slides that failed: their old features must not pass for this run's), else (cancelled, or an
        error) record them in ``extraction.json``. Safe to call twice."""
        if self._active is None:
            return
        try:
            if self.pending:
                with locked_file(self.fdir / LOCK_FILE):
                    diffs, recs, _ = _mismatched(self.fdir, self.wanted)
                    if finished:
                        for sid in [s for s in diffs if s in self.pending]:
                            log.warning("%s: removing its features of other settings (%s): the slide failed "
                                        "in this overwriting run", sid, describe(recs[sid], diffs[sid]))
                            for p in (self.fdir / "h5_files" / f"{sid}.h5", self.fdir / "pt_files" / f"{sid}.pt"):
                                with contextlib.suppress(OSError):
                                    p.unlink()
                            del diffs[sid]
                    _write_claim(self.fdir, self.wanted, self.payload, {s: describe(recs[s], diffs[s]) for s in diffs})
        finally:
            self._active.close()
            self._active = None


def _write_claim(fdir: Path, wanted: dict, payload: dict, other: Dict[str, str]) -> None:
    """``extraction.json``: the settings the folder's files have, and the slides that still have others."""
    doc = {"settings": wanted, **payload}
    if other:
        doc["slides_with_other_settings"] = other
    write_text_atomic(fdir / EXTRACTION_JSON, json.dumps(doc, indent=2))


def _claimed(fdir: Path) -> Optional[dict]:
    try:
        doc = json.loads((fdir / EXTRACTION_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    s = doc.get("settings") if isinstance(doc, dict) else None
    return s if isinstance(s, dict) else None


def check_folder(fdir: Path, wanted: dict, slide_ids: Iterable[str], overwrite: bool):
    """The file comparison of :func:`claim_folder` alone (no lock, nothing written), so that a run refuses
    before slow set-up such as compiling the encoder. Raises :class:`SettingsMismatch`; returns
    :func:`_mismatched`'s answer (files an overwrite will replace)."""
    diffs, recs, old = _mismatched(Path(fdir), wanted)
    ids = set(slide_ids)
    outside = {s: d for s, d in diffs.items() if s not in ids}
    if outside and overwrite:
        raise SettingsMismatch(_refusal(outside, recs, wanted, True), wanted, "outside")
    if diffs and not overwrite:
        raise SettingsMismatch(_refusal(diffs, recs, wanted, False), wanted)
    return diffs, recs, old


def claim_folder(fdir: Path, wanted: dict, slide_ids: Iterable[str], overwrite: bool, payload: dict) -> FolderClaim:
    """Compare ``wanted`` with the folder's files and any run writing there now, then write ``extraction.json``
    (``payload`` plus the settings) — all under the folder's lock, so two runs cannot both pass the comparison.

    Raises :class:`SettingsMismatch` (nothing written) when a file has other settings (unless ``overwrite`` and
    it is one of ``slide_ids``), or another run with other settings holds the folder."""
    fdir = Path(fdir)
    slide_ids = list(slide_ids)
    with locked_file(fdir / LOCK_FILE):
        active = open(fdir / ACTIVE_FILE, "a+")
        try:
            claimed = _claimed(fdir)
            if fcntl is not None and (claimed is None or differences(claimed, wanted)):
                try:                                  # an extraction holds it (shared) while it runs
                    fcntl.flock(active, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    d = differences(claimed, wanted) if claimed else []
                    what = f" ({describe(claimed, d)})" if d else ""
                    raise SettingsMismatch(f"another extraction with other settings{what} is writing to {fdir}",
                                           wanted, "busy") from None
            diffs, recs, old = check_folder(fdir, wanted, slide_ids, overwrite)
            if old:
                log.info("%s: %d features file(s) (e.g. %s) predate the settings record; what they record matches "
                         "and the rest (overlap, min tissue, tissue preset/threshold) is assumed equal", fdir,
                         len(old), old[0])
            if fcntl is not None:
                fcntl.flock(active, fcntl.LOCK_SH)
            pending = sorted(diffs)
            _write_claim(fdir, wanted, payload, {s: describe(recs[s], diffs[s]) for s in pending})
        except BaseException:
            active.close()
            raise
    return FolderClaim(fdir, wanted, payload, pending, active)


__all__ = ["SETTING_KEYS", "SettingsMismatch", "FolderClaim", "check_folder", "claim_folder", "describe",
           "differences", "recorded_settings", "run_settings", "same_slide_scale", "settings_folder", "settings_tag"]
