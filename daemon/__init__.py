"""kernelwatch's daemon: config, scheduler, runner, bus, sinks, recovery, state and CLI.

Importing this package must never import ``mlx``: checks run in child processes.
"""

from __future__ import annotations

__version__ = "0.1.0"
