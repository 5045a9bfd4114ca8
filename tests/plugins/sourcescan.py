"""What the code reads from the environment, collected from the source itself (for the doc and deploy checks)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("gateway", "consumers")
_ENV_METHODS = {"raw", "str", "optional_str", "int", "float", "bool", "choice", "secret", "required_secret"}
_SECRET_METHODS = {"secret", "required_secret"}
_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


def _const(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _NAME.match(node.value):
        return node.value
    return None


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def env_reads(roots: tuple[str, ...] = SOURCE_DIRS) -> dict[str, set[str]]:
    """Variable name -> the files (relative paths) that read it; secrets add their ``_FILE`` twin."""
    found: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted((ROOT / root).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
                names: list[str] = []
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                    name = _const(node.args[0])
                    func = node.func
                    if name is None:
                        continue
                    if func.attr in _ENV_METHODS and not _is_os_environ(func.value):
                        names.append(name)
                        if func.attr in _SECRET_METHODS:
                            names.append(f"{name}_FILE")
                    elif (func.attr == "get" and _is_os_environ(func.value)) or func.attr == "getenv":
                        names.append(name)
                elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
                    name = _const(node.slice)
                    if name is not None:
                        names.append(name)
                for name in names:
                    found.setdefault(name, set()).add(rel)
    return found


@pytest.fixture(scope="session")
def code_env_vars() -> dict[str, set[str]]:
    """Every environment variable gateway/ and consumers/ read, with the files that read it."""
    return env_reads()
