"""Shared fixtures. Each group of fixtures lives in its own plugin module under tests/plugins/."""

pytest_plugins = [
    "tests.plugins.kafka",
    "tests.plugins.prometheus",
]
