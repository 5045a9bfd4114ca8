"""docs/configuration.md documents exactly the environment variables the code reads."""

from __future__ import annotations

import re

from tests.plugins.sourcescan import ROOT, env_reads

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
