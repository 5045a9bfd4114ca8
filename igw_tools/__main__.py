"""``python -m igw_tools``: the same as the ``igw`` command."""

import sys

from igw_tools.cli import main

sys.exit(main())
