"""FLuID on a real deployment: the same job as in the simulator, run by NVFlare's server and sites
as separate processes, with the public set travelling in the job."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import deployment

from fedbio.federation import FedConfig, run_federated
from fedbio.federation.fluid import FluidConfig
from fedbio.training.run import plan

SITES = ["site-1", "site-2", "site-3"]


@pytest.fixture(scope="module")
def deployed_public(tmp_path_factory, public_split):
    yield from deployment(tmp_path_factory, public_split)


def test_a_fluid_job_on_a_deployment_gives_the_simulator_s_numbers(deployed_public, public_split, tmp_path):
    cfg = plan(mode="fluid", model="composition", split=str(deployed_public / "split"), epochs=3)
    fluid = FluidConfig(hybrid=True)
    deployed = run_federated(cfg, FedConfig(), out=tmp_path / "deployed", progress=False,
                             deployment=deployed_public, fluid=fluid)
    local = plan(mode="fluid", model="composition", split=str(public_split), epochs=3)
    loop = run_federated(local, FedConfig(), out=tmp_path / "loop", progress=False, engine="loop", fluid=fluid)
    assert deployed["federation"]["engine"] == "deployment"
    assert deployed["test"]["accuracy"] == pytest.approx(loop["test"]["accuracy"], abs=1e-9)
    assert deployed["fluid"]["student"]["label_counts"] == loop["fluid"]["student"]["label_counts"]
    for site in SITES:
        for part, scores in loop["fluid"]["teacher_scores"][site].items():
            assert deployed["fluid"]["teacher_scores"][site][part] == pytest.approx(scores)
        assert deployed["fluid"]["shapes_sent"]["annotate"][site] == {"probs": [60, len(deployed["classes"])]}
        assert deployed["fluid"]["shapes_sent"]["combine"][site] == {"weights": [60]}
    # each site kept its teacher's and hybrid's predictions in its own kit
    homes = deployed["deployment"]["site_records"]
    for site in SITES:
        for model in ("teacher", "hybrid"):
            assert (Path(homes[site]) / "sites" / site / model / "test_predictions.csv").is_file()
