"""What every benchmark records about the machine it ran on, and a free loopback port.

These machines are shared and noisy: each result says the CPU, the core count and the load
average it ran under, so a figure is never read without its circumstances.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """CPU count and model, Python version and the 1-minute load average right now."""
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        # Other work on the machine skews wall-clock figures: say how much there was.
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (bind to 0 and ask)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
