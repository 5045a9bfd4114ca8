"""What the code reads from the environment, collected from the source itself (for the doc and deploy checks).

Finds ``env.<reader>("NAME", ...)`` (the ``gateway.config.Env`` readers), ``os.environ.get``,
``os.environ[...]`` and ``os.getenv``, with the name given literally, as a module constant, or
passed through a small helper (``_base_url(env, "NAME", ...)``). Secrets add their ``_FILE`` twin.
"""

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


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ"


def _reader(call: ast.Call) -> tuple[ast.AST, bool] | None:
    """(the name argument, is it a secret) when ``call`` reads the environment."""
    func = call.func
    if not isinstance(func, ast.Attribute) or not call.args:
        return None
    if func.attr in _ENV_METHODS and not _is_os_environ(func.value):
        return call.args[0], func.attr in _SECRET_METHODS
    if (func.attr == "get" and _is_os_environ(func.value)) or func.attr == "getenv":
        return call.args[0], False
    return None


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def env_reads(roots: tuple[str, ...] = SOURCE_DIRS) -> dict[str, set[str]]:
    """Variable name -> the files (relative paths) that read it."""
    trees = {
        str(path.relative_to(ROOT)): ast.parse(path.read_text(encoding="utf-8"), str(path))
        for root in roots
        for path in sorted((ROOT / root).rglob("*.py"))
    }
    # Helpers that pass one of their parameters on as the variable name: name -> (index, secret).
    forwarders: dict[str, tuple[int, bool]] = {}
    for tree in trees.values():
        for func in ast.walk(tree):
            # Env's own readers forward to each other; only plain helper functions count here.
            if not isinstance(func, ast.FunctionDef) or func.name in _ENV_METHODS:
                continue
            params = [a.arg for a in func.args.args]
            if params[:1] in (["self"], ["cls"]):
                continue
            for node in ast.walk(func):
                found = _reader(node) if isinstance(node, ast.Call) else None
                if found and isinstance(found[0], ast.Name) and found[0].id in params:
                    forwarders[func.name] = (params.index(found[0].id), found[1])

    result: dict[str, set[str]] = {}
    for rel, tree in trees.items():
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            for target in node.targets
            if isinstance(target, ast.Name)
        }

        def literal(arg: ast.AST, constants: dict[str, str] = constants) -> str | None:
            value = arg.value if isinstance(arg, ast.Constant) else None
            if isinstance(arg, ast.Name):
                value = constants.get(arg.id)
            return value if isinstance(value, str) and _NAME.match(value) else None

        for node in ast.walk(tree):
            names: list[tuple[str | None, bool]] = []
            if isinstance(node, ast.Call):
                found = _reader(node)
                if found is not None:
                    names.append((literal(found[0]), found[1]))
                forward = forwarders.get(_called_name(node) or "")
                if forward is not None and forward[0] < len(node.args):
                    names.append((literal(node.args[forward[0]]), forward[1]))
            elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
                names.append((literal(node.slice), False))
            for name, secret in names:
                if name is None:
                    continue
                result.setdefault(name, set()).add(rel)
                if secret:
                    result.setdefault(f"{name}_FILE", set()).add(rel)
    return result


@pytest.fixture(scope="session")
def code_env_vars() -> dict[str, set[str]]:
    """Every environment variable gateway/ and consumers/ read, with the files that read it."""
    return env_reads()
