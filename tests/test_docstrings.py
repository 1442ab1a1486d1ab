r"""Every public object of ``trpo_ref`` has a docstring; math-core functions document their parameters.

The check is static (``ast``; nothing is imported) and lists every offender at
once.  The rules, for each ``trpo_ref/*.py``:

1. **Docstring required** on every *public* object:

   * module-level functions and classes whose name has no leading underscore;
   * methods and properties (plain, ``staticmethod``, ``classmethod``) without a
     leading underscore, of every public class **and** of every private class
     that a public class of the same module inherits from (its methods are
     public API through the subclass, e.g. ``heads._LogitsHead.log_prob``).

   Exempt: names with a leading underscore (private helpers and dunders such
   as ``__init__``/``__call__``), functions nested inside functions, and
   property ``setter``/``deleter`` functions (the getter carries the docstring).

2. **Parameters section required** in the math-core modules (:data:`CORE`) on
   every public function or method from rule 1 that takes at least one
   parameter besides a leading ``self``/``cls`` (``*args``/``**kwargs`` count).
   A section is the numpydoc header: a line ``Parameters`` followed by a line
   of dashes.  Each name listed in the section (``name : type``, or
   ``a, b : type`` for several) must be a real parameter, and every real
   parameter must be listed (``*args``/``**kwargs`` as ``args``/``*args`` etc.).

   The one exemption: a method whose docstring is a **single line** and that
   **overrides** a method of the same name in a base class defined in the same
   module, where the base method itself satisfies this rule — e.g.
   ``GaussianHead.kl`` with a one-line docstring documents only what differs
   and defers to ``Head.kl``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "trpo_ref"

#: Modules that implement the paper's equations; rule 2 applies to them.
CORE = ("mlp", "distributions", "heads", "policy", "cg", "linesearch", "advantages", "value", "trpo", "tabular")

_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SECTION = re.compile(r"^[ \t]*(?P<name>[A-Z][A-Za-z ]*)[ \t]*\n[ \t]*-{3,}[ \t]*$", re.M)


def _is_public(name: str) -> bool:
    return not name.startswith("_")


def _is_accessor(fn) -> bool:
    """A ``@x.setter`` / ``@x.deleter`` function (documented by its getter)."""
    return any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter") for d in fn.decorator_list)


def _params(fn) -> list[str]:
    """Parameter names of ``fn`` without a leading self/cls."""
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    names += [x.arg for x in a.kwonlyargs]
    names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
    return names


def _section(doc: str, title: str) -> str | None:
    """Body of the numpydoc section ``title`` (up to the next section), or None."""
    heads = list(_SECTION.finditer(doc))
    for i, m in enumerate(heads):
        if m.group("name").strip() == title:
            end = heads[i + 1].start() if i + 1 < len(heads) else len(doc)
            return doc[m.end():end]
    return None


def _documented_names(body: str) -> list[str]:
    """Names declared in a Parameters section body (its least-indented lines)."""
    lines = [ln for ln in body.split("\n") if ln.strip()]
    if not lines:
        return []
    indent = min(len(ln) - len(ln.lstrip()) for ln in lines)
    names = []
    for ln in lines:
        if len(ln) - len(ln.lstrip()) != indent:
            continue
        head = ln.split(" : ", 1)[0] if " : " in ln else ln
        names += [n.strip().lstrip("*").replace("\\", "") for n in head.split(",") if n.strip()]
    return names


def _public_classes(tree) -> list[ast.ClassDef]:
    """Public classes, plus private ones a public class of the module inherits from."""
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    out = {name: c for name, c in classes.items() if _is_public(name)}
    todo = list(out.values())
    while todo:
        for base in todo.pop().bases:
            if isinstance(base, ast.Name) and base.id in classes and base.id not in out:
                out[base.id] = classes[base.id]
                todo.append(classes[base.id])
    return list(out.values())


def _params_problem(fn, doc: str) -> str | None:
    params = _params(fn)
    if not params:
        return None
    body = _section(doc, "Parameters")
    if body is None:
        return "no numpydoc 'Parameters' section"
    listed = _documented_names(body)
    missing = [p for p in params if p not in listed]
    unknown = [n for n in listed if n not in params]
    if missing or unknown:
        return f"Parameters section does not match the signature (missing {missing}, unknown {unknown})"
    return None


def check_source(source: str, module: str, core: bool) -> list[str]:
    """Every rule violation in one module's source, as ``module:line qualname: problem``."""
    tree = ast.parse(source)
    problems = []

    def report(node, qual, what):
        problems.append(f"{module}:{node.lineno} {qual}: {what}")

    for node in tree.body:
        if isinstance(node, (*_FUNCS, ast.ClassDef)) and _is_public(node.name):
            doc = ast.get_docstring(node)
            if not doc:
                report(node, node.name, "missing docstring")
            elif core and isinstance(node, _FUNCS) and (why := _params_problem(node, doc)):
                report(node, node.name, why)

    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for cls in _public_classes(tree):
        for fn in cls.body:
            if not (isinstance(fn, _FUNCS) and _is_public(fn.name)) or _is_accessor(fn):
                continue
            qual = f"{cls.name}.{fn.name}"
            doc = ast.get_docstring(fn)
            if not doc:
                report(fn, qual, "missing docstring")
                continue
            if not core or not (why := _params_problem(fn, doc)):
                continue
            if "\n" not in doc.strip() and _overrides_documented(cls, fn.name, classes):
                continue  # one-line override of a documented base method
            report(fn, qual, why)
    return problems


def _overrides_documented(cls: ast.ClassDef, name: str, classes: dict) -> bool:
    """Does a base class (same module) define ``name`` with a docstring that passes rule 2?"""
    for base in cls.bases:
        if not (isinstance(base, ast.Name) and base.id in classes):
            continue
        parent = classes[base.id]
        for fn in parent.body:
            if isinstance(fn, _FUNCS) and fn.name == name:
                doc = ast.get_docstring(fn)
                return bool(doc) and _params_problem(fn, doc) is None
        if _overrides_documented(parent, name, classes):
            return True
    return False


def _modules():
    return sorted(PKG.glob("*.py"))


def test_core_modules_exist():
    names = {p.stem for p in _modules()}
    assert set(CORE) <= names, f"CORE names modules that are gone: {sorted(set(CORE) - names)}"


def test_public_docstrings():
    problems = []
    for path in _modules():
        problems += check_source(path.read_text(), f"trpo_ref/{path.name}", path.stem in CORE)
    assert not problems, "docstring rules (see tests/test_docstrings.py) broken:\n" + "\n".join(problems)


# ----------------------------------------------------------- the checker itself
_GOOD = '''
def f(x, *, y=1):
    """F.

    Parameters
    ----------
    x, y : int
    """

class _Base:
    def g(self, a):
        """G.

        Parameters
        ----------
        a : array (N,)
            Described.
        """

class Pub(_Base):
    """Pub."""
    def g(self, a):
        """Override in one line."""
    @property
    def p(self):
        """A property."""
    @p.setter
    def p(self, v):
        pass
    def _private(self, z):
        pass

def _helper(q):
    pass
'''


def test_checker_accepts_good_source():
    assert check_source(_GOOD, "m", core=True) == []


@pytest.mark.parametrize("old, new, expect", [
    ('"""A property."""', "pass", "Pub.p: missing docstring"),
    ('"""Pub."""', "x = 1", "Pub: missing docstring"),
    ('"""G.\n\n        Parameters', '"""G.\n\n        Params', "_Base.g: no numpydoc"),
    ("x, y : int", "x : int", "f: Parameters section does not match"),
    ("a : array (N,)", "b : array (N,)", "_Base.g: Parameters section does not match"),
])
def test_checker_flags(old, new, expect):
    src = _GOOD.replace(old, new, 1)
    assert src != _GOOD
    problems = check_source(src, "m", core=True)
    assert any(expect in p for p in problems), problems


def test_override_exemption_needs_a_documented_base():
    src = _GOOD.replace('"""G.\n\n        Parameters', '"""G.\n\n        Params', 1)
    problems = check_source(src, "m", core=True)
    assert any("Pub.g" in p for p in problems), problems
    assert check_source(src, "m", core=False) == []  # rule 2 is for CORE modules only
