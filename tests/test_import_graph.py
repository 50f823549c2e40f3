"""Each package reads top-down: no import circle inside a package, and io never imports bo.

The checker is ``scripts/check_imports.py`` (run it for the report); every import counts, at the
top of a module, inside a function (lazy) or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _checker():
    spec = importlib.util.spec_from_file_location("check_imports", REPO / "scripts" / "check_imports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_package_imports_in_a_circle():
    assert _checker().package_cycles() == []


def test_the_file_readers_import_nothing_of_the_acquisition_framework():
    assert _checker().forbidden_imports() == []


def test_the_checker_sees_lazy_and_type_checking_imports(tmp_path):
    check = _checker()
    pkg = tmp_path / "demo" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "demo" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from demo.sub import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from demo.sub.a import X\n")
    (pkg / "d.py").write_text("import demo.sub.a\n")
    assert check.import_graph(tmp_path, "demo")["demo.sub.b"] == {"demo.sub.c"}
    assert check.package_cycles(tmp_path, "demo") == [["demo.sub.a", "demo.sub.b", "demo.sub.c"]]
