"""Exceptions the engine raises for bad input: each carries a one-line message meant for the user."""


class DnDError(Exception):
    """Base class: the CLI prints ``str(err)`` on one line, without a traceback."""


class SlideError(DnDError):
    """A slide file is missing, empty, truncated, of an unsupported format or otherwise unreadable."""


class NoTissueError(DnDError):
    """Segmentation found no tissue (or no patch met the tissue threshold) on a slide."""


class WeightsMissingError(DnDError):
    """An extractor's weights are not on this machine; the message says exactly where to put them."""


class OutputError(DnDError):
    """An output folder or file cannot be created or written."""


class Cancelled(DnDError):
    """The caller's ``cancelled()`` check returned True; the operation stopped and wrote nothing partial."""
