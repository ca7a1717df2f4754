"""The `dnd` command line: each command a thin wrapper over engine functions."""
