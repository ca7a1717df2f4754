"""What a training run and a model loaded from it are called, so two runs of one method never share a name.

A project trains into ``<project>/runs/<run name>/<method>/`` and ``dnd bench`` into ``<out>/<method>/``: there
the folder's own name is only the method (two ABMIL runs would both be "abmil"), and the run's name is the folder
above. A run trained with ``dnd train --out NAME`` is called by its folder. A model file outside a run folder is
called by its file name. The same name is shown on the Results page, in the app's model box and predictions table,
and names the folder the app writes that model's predictions to (``predictions/<run>/<method>/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

MODEL_FILE = "model.safetensors"


def run_method(run_dir: str | Path) -> Optional[str]:
    """The MIL method a run folder's ``config.json`` names, or None when it cannot be read."""
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    dnd = config.get("dnd") if isinstance(config.get("dnd"), dict) else {}
    method = dnd.get("model") or config.get("model")
    return str(method) if method else None


def _nested(run_dir: Path, method: Optional[str]) -> bool:
    """True for ``<run name>/<method>/`` folders (project runs, ``dnd bench``): the folder is named after its
    method, so the name the user gave is one level up."""
    name = run_dir.name
    return bool(run_dir.parent.name) and (name == method or (method is None and name.lower() in _method_names()))


def _method_names() -> set:
    try:
        from .models import model_names
        return {m.lower() for m in model_names()}
    except Exception:  # the registry cannot load: fall back to config.json alone
        return set()


def run_name(run_dir: str | Path) -> str:
    """The name the user gave the run: the project's run name (the folder above ``<method>/``), else the folder."""
    p = Path(run_dir).resolve()
    return p.parent.name if _nested(p, run_method(p)) else p.name


def run_key(run_dir: str | Path) -> str:
    """A name unique to the run folder, usable as a relative path: ``<run name>/<method>`` for a project or bench
    run, else the folder's name. Two runs of one method get two keys."""
    p = Path(run_dir).resolve()
    return f"{p.parent.name}/{p.name}" if _nested(p, run_method(p)) else p.name


def model_key(model_path: str | Path) -> str:
    """A model's name: its run's key when it is a run's ``model.safetensors`` (or the run folder), else the
    file's stem."""
    p = Path(model_path)
    if p.is_dir():
        return run_key(p)
    if p.name == MODEL_FILE:
        return run_key(p.parent)
    return p.stem


__all__ = ["MODEL_FILE", "model_key", "run_key", "run_method", "run_name"]
