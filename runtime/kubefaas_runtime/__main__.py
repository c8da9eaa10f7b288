"""``python -m kubefaas_runtime``: read the environment, then serve until drained.

The launch contract (variables and defaults) is documented in ``config.py``. A bad
value exits with status 2 and a one-line message naming the variable, before anything
is imported from the user's code.
"""

from __future__ import annotations

import os
import sys

from kubefaas_runtime.config import ConfigError, Settings
from kubefaas_runtime.logs import capture_std_streams, set_identity, setup_runtime_logging
from kubefaas_runtime.server import run

EXIT_BAD_CONFIG = 2


def main() -> int:
    """Entry point; returns the process exit status."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"kubefaas_runtime: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    set_identity(
        function=f"{settings.function_namespace}/{settings.function_name}",
        instance=settings.instance_id,
    )
    setup_runtime_logging()
    capture_std_streams()  # before the user module is imported: its prints are tagged too
    # Handlers find their scratch space through TMPDIR (tempfile) or context.tmp_dir;
    # make sure both name the same existing folder.
    os.environ["TMPDIR"] = settings.tmp_dir
    os.makedirs(settings.tmp_dir, exist_ok=True)
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
