r"""The documentation is executable: every ```python block of docs/*.md and README.md runs here.

Convention (stated for authors at the top of docs/index.md):

* Only fenced blocks whose info string is ``python`` (or ``py``) run; ```bash,
  ```text and every other language are shown, never executed.
* The blocks of one file run **in order, in one shared namespace**, with the
  working directory set to a fresh temporary directory for that file, so a
  later block may use the names an earlier one defined and files it wrote.
* A block is skipped when the nearest non-blank line above its opening fence is
  the HTML comment ``<!-- no-test -->`` or when its first line is the comment
  ``# doctest: skip``.  Either marker may carry a reason after it
  (``<!-- no-test: needs a GPU -->``, ``# doctest: skip  (the research record)``),
  and is matched case-insensitively with any spacing (``#doctest:SKIP``,
  ``# doctest: +SKIP``); the reason is shown in the skip message.  Skipped
  blocks keep their number, so test ids are stable.
* Each block is one test, with id ``<file>::block<k>`` (k counts the file's
  python blocks from 1), e.g. ``docs/math.md::block3``.  Running one block
  alone first runs the earlier blocks of its file.
* A block should take well under 2 s; one over :data:`BLOCK_HARD_LIMIT_S` fails.

Tracebacks point at the Markdown file and its line numbers (the code is
compiled with the file's path and padded to its line).

The second half of this module checks the collector itself on synthetic
Markdown (so a broken parser cannot silently run zero blocks) and that the
equation table of docs/math.md names functions and tests that exist.
"""

from __future__ import annotations

import importlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: A block running longer than this fails (the budget for authors is 2 s; the
#: margin absorbs a loaded CI machine).
BLOCK_HARD_LIMIT_S = 20.0

#: Info strings that mark an executable block.
RUN_LANGS = ("python", "py")

SKIP_COMMENT = "<!-- no-test -->"
SKIP_FIRST_LINE = "# doctest: skip"

#: ``<!-- no-test -->``, optionally with a reason: ``<!-- no-test: needs SB3 -->``.
_SKIP_COMMENT_RE = re.compile(r"^<!--\s*no-test\b[\s:\-–—]*(?P<reason>.*?)\s*-->$", re.I)
#: ``# doctest: skip`` (or ``+SKIP``), optionally followed by a reason.
_SKIP_FIRST_LINE_RE = re.compile(r"^#\s*doctest\s*:\s*\+?skip\b[\s:\-–—]*(?P<reason>.*)$", re.I)


def skip_reason(line_above: str, first_line: str) -> str | None:
    """Why a block is skipped (None: it runs), from the line above its fence and its first line."""
    for regex, line, marker in ((_SKIP_COMMENT_RE, line_above, SKIP_COMMENT), (_SKIP_FIRST_LINE_RE, first_line, SKIP_FIRST_LINE)):
        m = regex.match(line.strip())
        if m:
            why = m.group("reason").strip().strip("()").strip()
            return f"marked {marker}" + (f": {why}" if why else "")
    return None

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: Path
    index: int
    """1-based number among the file's python blocks."""
    line: int
    """1-based line of the first code line (the line after the opening fence)."""
    code: str
    skip_reason: str | None


def parse_blocks(text: str, path: Path = Path("<string>")) -> list[Block]:
    """The python blocks of a Markdown text, in order, with their skip status.

    Fences follow CommonMark: an opening run of at least three backticks or
    tildes (indented at most three spaces) is closed by a run of the same
    character at least as long with nothing after it.  Blocks of other
    languages are consumed whole, so a python fence shown inside them (e.g.
    inside a ````markdown example) is not collected.  An unclosed fence runs to
    the end of the file, as CommonMark says.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    last_nonblank = ""
    n_python = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                last_nonblank = lines[i].strip()
            i += 1
            continue
        fence, info = m.group("fence"), m.group("info").lower()
        close = re.compile(r"^ {0,3}" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}\s*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        body = lines[i + 1:j]
        if info in RUN_LANGS:
            n_python += 1
            indent = len(m.group("indent"))
            code = "\n".join(ln[indent:] if ln[:indent].strip() == "" else ln for ln in body) + "\n"
            reason = skip_reason(last_nonblank, body[0] if body else "")
            blocks.append(Block(path, n_python, i + 2, code, reason))
        last_nonblank = lines[j].strip() if j < len(lines) else ""
        i = j + 1
    return blocks


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md and every docs/*.md (found at collection time, so new files are picked up)."""
    files = sorted((root / "docs").glob("*.md")) if (root / "docs").is_dir() else []
    readme = root / "README.md"
    return ([readme] if readme.is_file() else []) + files


def _rel(path: Path) -> str:
    try:
        return path.relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _collect() -> list:
    params = []
    for path in doc_files():
        for block in parse_blocks(path.read_text(encoding="utf-8"), path):
            marks = [pytest.mark.skip(reason=block.skip_reason)] if block.skip_reason else []
            params.append(pytest.param(block, id=f"{_rel(path)}::block{block.index}", marks=marks))
    return params


@dataclass
class _FileState:
    """The shared namespace of one file and how far its blocks have run."""

    workdir: Path
    namespace: dict = field(default_factory=dict)
    done: set = field(default_factory=set)
    failed: dict = field(default_factory=dict)


_STATES: dict[Path, _FileState] = {}


def _exec_block(block: Block, state: _FileState) -> float:
    """Run one block in the file's namespace and directory; return its wall time."""
    code = compile("\n" * (block.line - 1) + block.code, str(block.path), "exec")
    old = os.getcwd()
    os.chdir(state.workdir)
    t0 = time.perf_counter()
    try:
        exec(code, state.namespace)  # noqa: S102 - running the docs is the point
    finally:
        os.chdir(old)
    return time.perf_counter() - t0


@pytest.mark.parametrize("block", _collect())
def test_doc_block_runs(block: Block, tmp_path_factory, monkeypatch):
    """Run the block after any earlier, not yet run, blocks of its file."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    state = _STATES.get(block.path)
    if state is None:
        state = _FileState(tmp_path_factory.mktemp(block.path.stem))
        state.namespace = {"__name__": f"docs_{block.path.stem}"}
        _STATES[block.path] = state
    earlier = [b for b in parse_blocks(block.path.read_text(encoding="utf-8"), block.path)
               if b.index < block.index and b.skip_reason is None]
    for prev in earlier:
        if prev.index in state.failed:
            pytest.fail(f"{_rel(block.path)}::block{block.index} depends on block{prev.index}, which failed: "
                        f"{state.failed[prev.index]}")
        if prev.index not in state.done:
            try:
                _exec_block(prev, state)
            except Exception as exc:  # record and report the earlier block as the cause
                state.failed[prev.index] = repr(exc)
                raise
            state.done.add(prev.index)
    try:
        elapsed = _exec_block(block, state)
    except Exception as exc:
        state.failed[block.index] = repr(exc)
        raise
    state.done.add(block.index)
    assert elapsed < BLOCK_HARD_LIMIT_S, (
        f"{_rel(block.path)}::block{block.index} took {elapsed:.1f} s; doc blocks must stay under 2 s")


# ---------------------------------------------------------- the collector itself
_SAMPLE = """\
# title

```python
x = 1
```

```bash
rm -rf /   # never run
```

Some prose.
<!-- no-test -->

```python
raise RuntimeError("skipped by comment")
```

```python
# doctest: skip
raise RuntimeError("skipped by first line")
```

````markdown
```python
raise RuntimeError("inside a markdown example: not a block")
```
````

~~~py
y = x + 1
~~~

   ```python
   z = y + 1
   ```
"""


def test_parse_blocks__finds_python_blocks_and_honours_skip_markers():
    blocks = parse_blocks(_SAMPLE)
    assert [b.index for b in blocks] == [1, 2, 3, 4, 5]
    assert [b.skip_reason is None for b in blocks] == [True, False, False, True, True]
    assert blocks[0].code == "x = 1\n" and blocks[0].line == 4
    assert blocks[3].code == "y = x + 1\n"
    assert blocks[4].code == "z = y + 1\n"  # indentation of an indented fence is removed
    assert not any("inside a markdown example" in b.code for b in blocks)
    assert not any("rm -rf" in b.code for b in blocks)


@pytest.mark.parametrize("above, first, expected", [
    ("<!-- no-test -->", "x = 1", "marked <!-- no-test -->"),
    ("<!--no-test-->", "x = 1", "marked <!-- no-test -->"),
    ("<!-- no-test: needs stable_baselines3 -->", "x = 1", "marked <!-- no-test -->: needs stable_baselines3"),
    ("<!-- NO-TEST (GPU only) -->", "x = 1", "marked <!-- no-test -->: GPU only"),
    ("prose", "# doctest: skip", "marked # doctest: skip"),
    ("prose", "# doctest: skip  (documentation only: the research record)",
     "marked # doctest: skip: documentation only: the research record"),
    ("prose", "#doctest:SKIP", "marked # doctest: skip"),
    ("prose", "# doctest: +SKIP", "marked # doctest: skip"),
    ("prose", "   # Doctest: skip - slow", "marked # doctest: skip: slow"),
    ("prose", "# doctest: skipped", None),            # another word, not the marker
    ("prose", "x = 1  # doctest: skip", None),        # the marker must open the block
    ("<!-- no-testing -->", "x = 1", None),
    ("<!-- no-test --> trailing prose", "x = 1", None),
])
def test_skip_reason__recognises_markers_with_reasons_and_nothing_else(above, first, expected):
    assert skip_reason(above, first) == expected
    text = f"{above}\n```python\n{first}\n```\n"
    (block,) = parse_blocks(text)
    assert block.skip_reason == expected


def test_parse_blocks__unclosed_fence_runs_to_end_and_skip_comment_must_be_adjacent():
    text = "<!-- no-test -->\n\nprose\n\n```python\na = 1\n"
    (block,) = parse_blocks(text)
    assert block.skip_reason is None and block.code == "a = 1\n"


def test_exec_block__shares_namespace_runs_in_workdir_and_reports_doc_lines(tmp_path):
    md = tmp_path / "page.md"
    md.write_text("```python\nimport os\nopen('f.txt', 'w').write('hi')\nn = 2\n```\n\n"
                  "```python\nassert open('f.txt').read() == 'hi'\nm = n * 3\n```\n\n"
                  "```python\n\n\nraise ValueError('boom')\n```\n", encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    state = _FileState(work)
    blocks = parse_blocks(md.read_text(), md)
    for b in blocks[:2]:
        _exec_block(b, state)
    assert state.namespace["m"] == 6 and (work / "f.txt").is_file()
    with pytest.raises(ValueError, match="boom") as err:
        _exec_block(blocks[2], state)
    frame = err.traceback[-1]
    assert Path(str(frame.path)) == md and frame.lineno + 1 == 15  # the raise is on line 15 of page.md


def test_docs__have_executable_blocks():
    """The collector finds the docs' examples (a parser regression would find none)."""
    counts = {_rel(p): sum(b.skip_reason is None for b in parse_blocks(p.read_text(encoding="utf-8"), p))
              for p in doc_files()}
    for name in ("docs/index.md", "docs/math.md", "docs/theory.md", "docs/architecture.md", "docs/derivations.md"):
        assert counts.get(name, 0) >= 1, f"{name} has no executable python block ({counts})"


# ------------------------------------------------- docs/math.md names real things
def _math_table_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "math.md").read_text(encoding="utf-8")
    rows, in_table = [], False
    for line in text.splitlines():
        if line.startswith("| equation"):
            in_table = True
            continue
        if in_table:
            if not line.startswith("|"):
                break
            if set(line.replace("|", "").strip()) <= set("-: "):
                continue
            cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])  # a cell may hold an escaped \|
            rows.append([c.strip() for c in cells])
    return rows


def _resolve(dotted: str):
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_math_table__functions_files_and_tests_exist():
    """Every `trpo_ref.…` name in the table imports, every file exists, every test is defined."""
    rows = _math_table_rows()
    assert len(rows) >= 20, f"docs/math.md's equation table has only {len(rows)} rows"
    n_names = n_tests = 0
    for row in rows:
        assert len(row) == 4, f"row does not have 4 columns (equation | function | file | test): {row}"
        _, func_cell, file_cell, test_cell = row
        for name in re.findall(r"`(trpo_ref\.[\w.]+)`", func_cell):
            _resolve(name)
            n_names += 1
        for fname in re.findall(r"`([\w/]+\.py)`", file_cell):
            assert (ROOT / fname).is_file(), f"{fname} named in docs/math.md does not exist"
        for fname, test in re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", test_cell):
            src = (ROOT / fname).read_text(encoding="utf-8")
            assert re.search(rf"^\s*def {test}\(", src, re.M), f"{fname}::{test} named in docs/math.md is not defined"
            n_tests += 1
        assert re.search(r"`trpo_ref\.", func_cell) and re.search(r"`tests/", test_cell), f"row names no function or test: {row}"
    assert n_names >= len(rows) and n_tests >= len(rows)
