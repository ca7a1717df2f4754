"""D&D Studio engine: slides, tissue, patches, features, MIL models and Divide-and-Distill.

The engine never imports Qt: the CLI, the desktop app and the tests drive the same functions, each of which
takes a ``progress(done, total, message)`` callback and a ``cancelled()`` check where it runs long.
"""

__version__ = "0.1.0"
