"""fedbio.processes.wait_for_preload: a site waits for its simulator worker's import thread."""

from __future__ import annotations

import threading
import time

from fedbio.processes import PRELOAD_THREAD, wait_for_preload


def test_a_site_waits_for_the_preload_thread():
    done = threading.Event()

    def preload():
        time.sleep(0.5)
        done.set()

    threading.Thread(target=preload, name=PRELOAD_THREAD, daemon=True).start()
    wait_for_preload()
    assert done.is_set()


def test_without_a_preload_thread_nothing_waits():
    start = time.monotonic()
    wait_for_preload()
    assert time.monotonic() - start < 0.1


def test_the_simulator_worker_names_its_thread_so():
    from fedbio.federation.nvflare import simulate

    assert "name=PRELOAD_THREAD" in __import__("inspect").getsource(simulate.run_worker)
