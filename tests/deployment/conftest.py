"""One real deployment per test module: 3 sites on loopback, the small split, heartbeat 12 s."""

from __future__ import annotations

import pytest

from fedbio.deployment.deploy import deploy_down, deploy_up
from fedbio.deployment.kits import free_ports
from fedbio.deployment.processes import participant_processes


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, small_split):
    """The deployment's workspace; ``down`` at the module's end must leave no process behind."""
    workspace = tmp_path_factory.mktemp("deploy") / "W"
    deploy_up(workspace, 3, split=str(small_split), port=free_ports(), heartbeat_timeout=12, say=lambda *a: None)
    try:
        yield workspace
    finally:
        deploy_down(workspace)
        assert participant_processes(workspace) == []
