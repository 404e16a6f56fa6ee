"""Reading a configuration file as text (the settings, token and policy files).

One place for what every such file needs: the whole file read in one go
(blocking: at start-up or off the reactor thread), decoded as UTF-8 with an
optional byte-order mark, and a failure worded ``PATH: what went wrong``.
"""

from __future__ import annotations


class TextFileError(ValueError):
    """The file cannot be read as UTF-8 text; ``str()`` is the problem line."""


def read_text(path: str) -> str:
    """The text of ``path``; raises :class:`TextFileError`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TextFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise TextFileError(f"{path}: not UTF-8 text") from None
