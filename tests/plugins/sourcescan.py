"""What the code reads from the environment, collected from the source itself (for the doc and deploy checks).

Finds ``env.<reader>("NAME", ...)`` (the ``igw.config.Env`` readers), ``os.environ.get``,
``os.environ[...]`` and ``os.getenv``, with the name given literally, as a module constant, or
passed through a small helper (``_base_url(env, "NAME", ...)``). Secrets add their ``_FILE`` twin.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("igw", "igw_tools", "gateway", "consumers")
_ENV_METHODS = {
    "raw",
    "str",
    "optional_str",
    "int",
    "port",
    "host",
    "url",
    "float",
    "bool",
    "choice",
    "file",
    "directory",
    "secret",
    "required_secret",
    "secrets",
}
_SECRET_METHODS = {"secret", "required_secret", "secrets"}
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
    # Functions that pass one of their parameters on as the variable name:
    # name -> (parameter name, its position at call sites, secret).
    forwarders: dict[str, tuple[str, int, bool]] = {}
    for tree in trees.values():
        for func in ast.walk(tree):
            # Env's own readers forward to each other; they are handled as readers above.
            if not isinstance(func, ast.FunctionDef) or func.name in _ENV_METHODS:
                continue
            positional = [a.arg for a in func.args.args]
            if positional[:1] in (["self"], ["cls"]):
                positional = positional[1:]  # bound at call sites
            params = set(positional) | {a.arg for a in func.args.kwonlyargs}
            for node in ast.walk(func):
                found = _reader(node) if isinstance(node, ast.Call) else None
                if found and isinstance(found[0], ast.Name) and found[0].id in params:
                    name = found[0].id
                    index = positional.index(name) if name in positional else -1
                    forwarders[func.name] = (name, index, found[1])

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
                if forward is not None:
                    param, index, secret = forward
                    given = [k.value for k in node.keywords if k.arg == param]
                    if 0 <= index < len(node.args):
                        given.append(node.args[index])
                    names.extend((literal(arg), secret) for arg in given)
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
