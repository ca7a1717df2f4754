"""D&D Studio desktop app: a PySide6 front end over :mod:`dnd_engine`.

All slide reading and computation lives in the engine; this package only shows results and keeps the window
responsive by running engine calls on worker threads.
"""

try:  # the engine installs alone (servers); say how to add the app rather than fail deep inside an import
    import PySide6  # noqa: F401
except ImportError as exc:
    raise ImportError('D&D Studio (the app) needs Qt, which the engine-only install leaves out: '
                      'pip install "dnd-studio[gui]"') from exc
