"""Commands of one pipeline stage; see stitchc/cli/__init__.py."""

__all__ = ["COMMANDS"]

COMMANDS = []
