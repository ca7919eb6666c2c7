"""``python -m kamid`` and the ``kamid`` command."""

import sys

from kamid.tuning import reexec_tuned


def run() -> int:
    # Before importing the daemon: restarting costs only Python's own start-up here.
    reexec_tuned()
    from kamid.daemon import main

    return main()


if __name__ == "__main__":
    sys.exit(run())
