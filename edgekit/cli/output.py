"""The CLI's consoles: text is printed as text, never as rich markup.

Messages carry what devices, files and other hosts said (an error's stderr tail, a model string, a farm
cell's reason), so a ``[/x]`` in them must not raise ``MarkupError`` and a ``[host]`` must not vanish.
Every console here has markup off; colour is given as a style on a ``Text`` (``styled``), never inside
the string.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text


def plain_console(*, stderr: bool = False) -> Console:
    """A console that prints strings as they are (no markup, no highlighting)."""
    return Console(stderr=stderr, markup=False, highlight=False)


def styled(text: str, style: str = "") -> Text:
    """``text`` in ``style`` (a colour name), whatever brackets it holds."""
    return Text(text, style=style)


def joined(*parts: str | tuple[str, str]) -> Text:
    """One line of plain and styled parts: ``joined(("error:", "red"), " ", message)``."""
    return Text.assemble(*parts)
