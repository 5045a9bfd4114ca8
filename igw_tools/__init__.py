"""The ``igw`` command and the tools around the processes: local stack, broker, simulate, check, replay."""
