"""Subcommands of ``igw`` that belong to the gateway."""
