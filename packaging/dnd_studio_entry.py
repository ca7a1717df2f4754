"""Entry point of the frozen app (the PyInstaller bundles): the same ``dnd_gui.app.main`` as ``dnd-studio``.

``multiprocessing.freeze_support()`` comes first: where child processes are spawned (Windows, macOS; and any
``spawn``/``forkserver`` context on Linux) the frozen executable is started again as the child, and must run the
child's work instead of opening a second window. The feature extraction's DataLoader workers fork on Linux.

torch.compile is switched off (``TORCHDYNAMO_DISABLE``): it needs a C++ compiler and, on a GPU, Triton, which a
bundle does not carry; the engine then runs every network eagerly.
"""

import multiprocessing
import os
import sys


def _main() -> int:
    multiprocessing.freeze_support()
    os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    from dnd_gui.app import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
