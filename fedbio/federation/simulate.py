"""``python -m fedbio.federation.simulate JOB -w WORKSPACE ...``: NVFlare's simulator, run so that
its temporary files stay in the run folder.

The command line is NVFlare's own (``nvflare.private.fed.app.simulator.simulator``), which this
runs unchanged. The watchdog (``fedbio.federation.watch``) sets ``TMPDIR`` to ``RUN/tmp``, so the
copies of the job NVFlare makes while deploying land there instead of ``/tmp``. A run folder's
path can be long, and the simulator's ``multiprocessing.Manager`` binds a Unix socket under
``TMPDIR``, whose path may not exceed about 100 bytes: on Linux the socket goes to the abstract
namespace instead (a name, no file anywhere), on other systems it keeps Python's default.
"""

from __future__ import annotations

import itertools
import os
import runpy
import sys

_count = itertools.count()


def _abstract_unix_addresses() -> None:
    import multiprocessing.connection as connection

    default = connection.arbitrary_address

    def arbitrary_address(family):
        if family == "AF_UNIX":
            return f"\0fedbio-{os.getpid()}-{next(_count)}-{os.urandom(4).hex()}"
        return default(family)

    connection.arbitrary_address = arbitrary_address


if __name__ == "__main__":
    if sys.platform.startswith("linux"):
        _abstract_unix_addresses()
    sys.argv[0] = "nvflare.private.fed.app.simulator.simulator"
    runpy.run_module("nvflare.private.fed.app.simulator.simulator", run_name="__main__", alter_sys=True)
