"""igw's kernel: what every igw process shares (settings, errors, logging, topics, the envelope).

Importing it has no side effects, and it imports neither ``gateway`` nor ``consumers``.
"""

__version__ = "0.1.0"
