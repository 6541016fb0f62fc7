"""The API reference of gtn_py, built from its docstrings by pdoc (what ``make docs`` runs).

    python tools/api_docs.py [--out out/docs]

Writes HTML into ``--out`` and exits with status 1, listing the problems, if pdoc warns (an
annotation it cannot resolve, say) or a public name has no docstring of its own. Public names:
what ``import gtn_py as gtn`` gives (``gtn.*``), and the names of ``gtn_py.losses``,
``gtn_py.io`` and ``gtn_py.k2`` (see README.md's table).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import types
import warnings
from pathlib import Path

MODULES = ["gtn_py"]  # with its submodules


def public_names() -> dict[str, object]:
    """Every public function and class, by its dotted name where users reach it."""
    import importlib

    found: dict[str, object] = {}
    for name in ("gtn_py", "gtn_py.losses", "gtn_py.io", "gtn_py.k2"):
        module = importlib.import_module(name)
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for attr in names:
            obj = getattr(module, attr)
            home = getattr(obj, "__module__", "") or ""
            if isinstance(obj, types.ModuleType) or not home.startswith("gtn_py") or \
                    (name != "gtn_py" and home != name):
                continue  # submodules, what a module imported from torch or typing or from gtn_py's others
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found[f"{name}.{attr}"] = obj
    return found


def undocumented() -> list[str]:
    """Public names without a docstring of their own (a NamedTuple's generated one does not count)."""
    missing = []
    for name, obj in public_names().items():
        doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not doc or not doc.strip() or doc.startswith(f"{obj.__name__}("):
            missing.append(name)
    return sorted(missing)


def _constructors_resolvable() -> None:
    """A NamedTuple's generated ``__new__`` claims a synthetic module (``namedtuple_Name``), so
    pdoc cannot resolve its postponed annotations; give it the module of its class."""
    for obj in public_names().values():
        if inspect.isclass(obj) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
            obj.__new__.__module__ = obj.__module__


def build(out: Path) -> list[str]:
    """Write the HTML reference into ``out``; the problems found (empty: none)."""
    import pdoc

    _constructors_resolvable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pdoc.pdoc(*MODULES, output_directory=out)
    problems = [f"pdoc: {w.message}" for w in caught]
    problems += [f"no docstring: {name}" for name in undocumented()]
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out") / "docs", help="HTML folder (default: out/docs)")
    args = parser.parse_args()
    problems = build(args.out)
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"API reference: {args.out / 'index.html'}" + (f" ({len(problems)} problems)" if problems else ""))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
