"""Two docutils-compatibility fixes applied to docstrings as autodoc reads them.

The package's docstrings are written for a reader of the source first, so two
habits of theirs are valid numpydoc but not valid reStructuredText as
docutils parses it.  Rather than bending the source, the site rewrites them
on the fly (the source files are not changed):

1. **Simple tables whose first column overflows.**  A module's equation table
   puts a long :math:`...` in the first column and the function on the next
   line (a continuation row).  docutils rejects text that runs into the column
   margin; :func:`widen_simple_tables` widens the first column to its longest
   entry and shifts the second column right.
2. **Section headers in module docstrings.**  numpydoc turns ``References``
   and ``Notes`` headers of functions into rubrics but leaves module
   docstrings alone, where docutils makes them sections whose labels collide
   across modules; :func:`module_sections_to_rubrics` makes them rubrics too.
"""

from __future__ import annotations

import re

_BORDER = re.compile(r"^(?P<indent>\s*)(?P<c1>=+)(?P<gap>\s+)(?P<c2>=+)\s*$")
_GAP = re.compile(r"\S(\s{2,})(?=\S)")


def _split_row(line: str, c1_end: int, c2: int) -> tuple[str, str]:
    """(first column text, second column text) of one row line of a two-column table."""
    if len(line) <= c1_end or not line[c1_end:c2].strip():
        return line[:c2].rstrip(), line[c2:].strip()
    # the first column overflows: the second column, if any, follows the last
    # run of two or more spaces that starts at or after the second column
    second_starts = [m.end(1) for m in _GAP.finditer(line) if m.end(1) >= c2]
    if not second_starts:
        return line.rstrip(), ""
    k = second_starts[-1]
    return line[:k].rstrip(), line[k:].strip()


def widen_simple_tables(lines: list[str]) -> list[str]:
    """Rewrite every two-column simple table so that no first-column text overflows."""
    out = list(lines)
    i = 0
    while i < len(out):
        m = _BORDER.match(out[i])
        if not m:
            i += 1
            continue
        indent = m.group("indent")
        c1_end = len(indent) + len(m.group("c1"))
        c2 = c1_end + len(m.group("gap"))
        borders = [i]
        j = i + 1
        while j < len(out) and len(borders) < 3:   # a header adds a third border
            if _BORDER.match(out[j]):
                borders.append(j)
                if j + 1 >= len(out) or not out[j + 1].strip():
                    break                          # a border followed by a blank line ends the table
            j += 1
        if len(borders) < 2:
            i += 1
            continue
        first, last = borders[0], borders[-1]
        rows = {k: _split_row(out[k], c1_end, c2) for k in range(first + 1, last) if k not in borders}
        width1 = max([len(a) - len(indent) for a, _ in rows.values()] + [len(m.group("c1"))])
        width2 = max([len(b) for _, b in rows.values()] + [len(m.group("c2"))])
        for k in borders:
            out[k] = indent + "=" * width1 + "  " + "=" * width2
        for k, (a, b) in rows.items():
            out[k] = (a.ljust(len(indent) + width1) + "  " + b).rstrip() if b else a
        i = last + 1
    return out


_HEADER_NAMES = ("References", "Notes", "Examples", "See Also", "Attributes", "Functions", "Classes")


def module_sections_to_rubrics(lines: list[str]) -> list[str]:
    """Turn numpydoc section headers (``Title`` over a line of dashes) into rubrics."""
    out: list[str] = []
    k = 0
    while k < len(lines):
        if (k + 1 < len(lines) and lines[k].strip() in _HEADER_NAMES
                and re.fullmatch(r"\s*-{3,}\s*", lines[k + 1])):
            out.append(".. rubric:: " + lines[k].strip())
            out.append("")
            k += 2
            continue
        out.append(lines[k])
        k += 1
    return out


def _process(app, what, name, obj, options, lines):
    fixed = widen_simple_tables(lines)
    if what == "module":
        fixed = module_sections_to_rubrics(fixed)
    lines[:] = fixed


def setup(app):
    # priority below numpydoc's default (500) so that tables are fixed first
    app.connect("autodoc-process-docstring", _process, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
