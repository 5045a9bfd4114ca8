"""Shared fixtures. Each group of fixtures is a plugin module under tests/plugins/, loaded here.

Every module in tests/plugins/ is loaded, so adding fixtures never means editing this file.
"""

from pathlib import Path

pytest_plugins = sorted(
    f"tests.plugins.{path.stem}" for path in (Path(__file__).parent / "plugins").glob("*.py") if path.stem != "__init__"
)
