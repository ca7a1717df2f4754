"""Package names loaded on first use (PEP 562), so importing a light corner of the engine stays light.

The start screen lists recent projects by reading their manifests; importing ``dnd_engine.project`` or
``dnd_engine.bags`` must not pull in torch, cv2 and h5py, which only the runners, the bag store and the dataset
need. A package lists where each public name lives; ``from package import X`` then imports only X's module.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable, Dict, List, Tuple


def lazy_exports(package: str, where: Dict[str, str]) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` whose public names live in the submodules ``where`` maps
    them to (name -> submodule). A name is imported once, then kept in the package's namespace."""

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
