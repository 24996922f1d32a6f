"""Layers run one way: rbee ← accounts ← catalog ← provisioner; vendors know no models.

Every import counts, also one inside a function: a lower module that needs a higher
one is code in the wrong place, not a place for a late import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Which packages each package may not import. rbee/asgi.py, rbee/urls.py and rbee/api.py
# (the NinjaAPI the routers are mounted on) are the composition root: they wire the
# apps together and may name them all.
FORBIDDEN = {
    "rbee": ("accounts", "catalog", "provisioner"),
    "accounts": ("catalog", "provisioner"),
    "catalog": ("provisioner",),
    "provisioner/vendors": ("catalog", "provisioner.models", "django.db", "accounts"),
}
COMPOSITION_ROOT = {"rbee/asgi.py", "rbee/urls.py", "rbee/api.py", "rbee/settings.py"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def _sources(package: str) -> list[Path]:
    return [p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts]


def _violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    problems = []
    for path in _sources(package):
        relative = path.relative_to(ROOT).as_posix()
        if relative in COMPOSITION_ROOT:
            continue
        for line, module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                problems.append(f"{relative}:{line} imports {module}")
    return problems


@pytest.mark.parametrize(("package", "forbidden"), FORBIDDEN.items())
def test_it_keeps_the_layers_one_way(package, forbidden):
    assert _violations(package, forbidden) == []


def test_the_consumers_do_not_import_views():
    imports = [m for _line, m in imported_modules(ROOT / "provisioner" / "consumers.py")]
    assert not [m for m in imports if m.endswith(".views") or ".views." in m]


def test_catalog_templates_use_no_provisioner_template_library():
    for template in (ROOT / "templates" / "catalog").rglob("*.html"):
        text = template.read_text()
        assert "provisioner" not in "".join(line for line in text.splitlines() if "{% load" in line)


def test_the_walk_sees_a_late_import(tmp_path):
    """The rule cannot be dodged by importing inside a function."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from provisioner.models import DownloadJob\n    return DownloadJob\n")
    assert (2, "provisioner.models") in imported_modules(module)
