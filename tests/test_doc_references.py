"""The documentation only points at files that are in the repository."""

from __future__ import annotations

import os
import re
import subprocess
from functools import cache
from pathlib import PurePosixPath

import pytest

from tests.plugins.sourcescan import ROOT

# Top-level directories: a backticked path starting with one of them names a file of this repository.
_REPO_DIRS = ("igw/", "gateway/", "consumers/", "igw_tools/", "deploy/", "docs/", "tests/", "scripts/", "bench/")
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
_CODE_PATH = re.compile(r"`([A-Za-z0-9_.\-/]+)`")


@cache
def tracked() -> frozenset[str]:
    """Every tracked file and every directory holding one."""
    files = subprocess.run(
        ["git", "ls-files"],  # noqa: S607
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    names = set(files)
    for name in files:
        names.update(str(parent) for parent in PurePosixPath(name).parents if str(parent) != ".")
    return frozenset(names)


def markdown_files() -> list[str]:
    return sorted(name for name in tracked() if name.endswith(".md"))


@pytest.mark.parametrize("doc", markdown_files())
def test_links_and_paths_resolve(doc: str) -> None:
    """Relative links resolve to tracked files; backticked repository paths exist; nothing outside the repo."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    assert "../shared" not in text, "the documentation stands alone: no notes outside the repository"
    assert "perf-notes" not in text, "the documentation stands alone: no notes outside the repository"
    base = PurePosixPath(doc).parent
    for target in _LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = os.path.normpath(str(base / target))
        assert not resolved.startswith(".."), f"{doc} links outside the repository: {target}"
        assert resolved in tracked(), f"{doc} links to {target}, which is not in the repository"
    if doc == "CHANGELOG.md":
        return  # history: it names files as they were
    for path in _CODE_PATH.findall(text):
        if path.startswith(_REPO_DIRS) and "*" not in path:
            name = path.rstrip("/")
            # A path may be written relative to a directory the text is about (`tests/alerts_test.yml`
            # of deploy/prometheus), or name what a run creates (git-ignored).
            known = name in tracked() or any(t.endswith("/" + name) for t in tracked()) or ignored(name)
            assert known, f"{doc} names {path}, which is not in the repository"


def ignored(path: str) -> bool:
    """True when git ignores ``path``: something a run creates, such as bench/results/."""
    return (
        subprocess.run(
            ["git", "check-ignore", "--quiet", "--no-index", path],  # noqa: S607
            cwd=ROOT,
            check=False,
            timeout=30,
        ).returncode
        == 0
    )
