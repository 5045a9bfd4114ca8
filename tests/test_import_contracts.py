"""The layout's rules, checked on every import statement (function-level ones included).

- ``igw`` (the kernel) imports neither the processes nor the tools;
- ``gateway`` does not import ``consumers``, and ``consumers`` does not import ``gateway``;
- the processes (``gateway``, ``consumers``) do not import the tools (``igw_tools``);
- nothing loads a module by a name in a string (``importlib``), which would hide an arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "igw": ("gateway", "consumers", "igw_tools"),
    "gateway": ("consumers", "igw_tools"),
    "consumers": ("gateway", "igw_tools"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = {alias.name for alias in node.names}
            if "import_module" in names:
                found.append((node.lineno, "importlib"))
            else:
                found.extend((node.lineno, f"{node.module}.{name}") for name in sorted(names))
    return found


def violations(package: str) -> list[str]:
    banned = FORBIDDEN[package]
    bad: list[str] = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in banned or module == "importlib":
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_keeps_its_imports(package: str) -> None:
    """Each package imports only what its layer may."""
    assert violations(package) == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """A forbidden import inside a function is found (the scan is not vacuous)."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from gateway.app import create_app\n    import importlib\n", encoding="utf-8")
    assert imported_modules(source) == [(2, "gateway.app.create_app"), (3, "importlib")]


def test_importing_the_kernel_registers_no_metrics() -> None:
    """``import igw.*`` leaves Prometheus' default registry as it found it (no import-time side effects)."""
    import subprocess
    import sys

    code = (
        "import prometheus_client as p, pkgutil, importlib\n"
        "before = set(p.REGISTRY._names_to_collectors)\n"
        "import igw\n"
        "for m in pkgutil.walk_packages(igw.__path__, 'igw.'): importlib.import_module(m.name)\n"
        "after = set(p.REGISTRY._names_to_collectors)\n"
        "print(sorted(after - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
