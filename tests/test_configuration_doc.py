"""docs/configuration.md documents exactly the environment variables the code reads."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from tests.plugins.sourcescan import ROOT, SOURCE_DIRS, env_reads

DOC = ROOT / "docs" / "configuration.md"


def documented() -> dict[str, str]:
    """Variable -> its table row, from the first cell of each row of the doc's table."""
    rows: dict[str, str] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", first_cell):
            rows[name] = line
    return rows


def test_the_scan_finds_known_reads() -> None:
    """The source scan sees Env reads spread over several lines, os.environ reads, and secrets' _FILE twins."""
    found = env_reads()
    for name in ("KAFKA_COMPRESSION", "INSTAGRAM_APP_SECRET", "INSTAGRAM_APP_SECRET_FILE", "IGW_PORT", "IGW_TANSU_BIN"):
        assert name in found, name


def test_every_variable_read_is_documented(code_env_vars: dict[str, set[str]]) -> None:
    """No variable read by gateway/ or consumers/ is missing from docs/configuration.md."""
    missing = {name: sorted(files) for name, files in code_env_vars.items() if name not in documented()}
    assert not missing, f"add these to docs/configuration.md: {missing}"


def test_every_documented_variable_is_read(code_env_vars: dict[str, set[str]]) -> None:
    """No row in docs/configuration.md names a variable the code does not read."""
    unknown = sorted(set(documented()) - set(code_env_vars))
    assert not unknown, f"documented but never read: {unknown}"


def test_rows_are_complete() -> None:
    """Each row has a default, a meaning and the processes that read it; secrets list their _FILE twin."""
    rows = documented()
    for name, line in rows.items():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == 4, line
        assert all(cells), line
        if f"`{name}_FILE`" in line:
            assert f"`{name}`" in cells[0]


def _environ_reads(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, name) of each ``os.environ.get("NAME")``, ``environ.get("NAME")``, ``os.getenv("NAME")``
    and ``os.environ["NAME"]`` in ``tree``."""
    for node in ast.walk(tree):
        target: ast.AST | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            owner = node.func.value
            named_environ = (isinstance(owner, ast.Attribute) and owner.attr == "environ") or (
                isinstance(owner, ast.Name) and owner.id == "environ"
            )
            if (node.func.attr == "get" and named_environ) or node.func.attr == "getenv":
                target = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "environ":
            target = node.slice
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            yield node.lineno, target.value


def test_documented_variables_are_read_through_env() -> None:
    """No documented variable is read past igw.config.Env, which reports a bad value naming it."""
    names = set(documented())
    bypasses = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for root in SOURCE_DIRS
        for path in sorted((ROOT / root).rglob("*.py"))
        if path != ROOT / "igw" / "config.py"
        for line, name in _environ_reads(ast.parse(path.read_text(encoding="utf-8")))
        if name in names
    ]
    assert not bypasses, f"read these through igw.config.Env: {bypasses}"
