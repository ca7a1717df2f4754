"""D&D Studio desktop app: a PySide6 front end over :mod:`dnd_engine`.

All slide reading and computation lives in the engine; this package only shows results and keeps the window
responsive by running engine calls on worker threads.
"""
