"""Replace a generated block of a Markdown file, keeping the hand-written text around it.

The benchmark scripts write their tables between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``; everything outside the markers is left as it is.
"""

from __future__ import annotations

from pathlib import Path


def write_marked_block(path, name: str, body: str, heading: str) -> None:
    """Write ``body`` between the ``name`` markers of ``path``.

    Parameters
    ----------
    path : path-like
        The Markdown file; created (starting with ``heading``) when missing.
    name : str
        Marker name: the block is ``<!-- name:begin -->`` ... ``<!-- name:end -->``.
    body : str
        The generated text, without the markers.
    heading : str
        Markdown put before the markers when the file or the markers are missing.
    """
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else ""
    if begin not in text or end not in text:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + f"{heading}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{body}\n{end}{tail}")
