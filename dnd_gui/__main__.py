"""``python -m dnd_gui`` starts the desktop app, same as the ``dnd-studio`` entry point."""

from .app import main

if __name__ == "__main__":
    raise SystemExit(main())
