"""Deployment benchmark: ``fedbio bench deploy [--full]``, one run, every ratio measured in it.

    fedbio bench deploy                 # about a minute and a half on 2 cores
    fedbio bench deploy --full          # the default split, 3 rounds of 10 local epochs

1. ``deploy up`` (provision, start the server and 3 sites, wait until connected) and ``deploy
   down`` (every process ended), wall seconds.
2. the same seeded composition FedAvg job (3 sites) on the deployment, in the NVFlare simulator
   and in the plain loop: wall seconds of each ``run_federated``, and whether the three gave the
   same test accuracy (they must).
3. the job on the deployment with ``--he`` (CKKS): seconds per round (the server's record: from
   sending the model to the aggregate) and bytes a site sends per round, against the clear run
   of step 2. (``--he`` scales the composition features without the stats step, so its accuracy
   is its own.)

Everything runs in a scratch folder (``--workdir``, removed afterwards), on 127.0.0.1 ports that
were free when it started.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from fedbio.bench.common import add_options, finish, run_and_print, setup, timed


@dataclass(frozen=True)
class DeploySizes:
    name: str
    rounds: int
    epochs: int


SMALL = DeploySizes("small", rounds=2, epochs=4)
FULL = DeploySizes("full", rounds=3, epochs=30)


def run_bench_deploy(work: Path, sizes: DeploySizes = SMALL, threads: int | None = None, log=None) -> dict:
    """Up, the job three ways, down; ``work``: an empty scratch folder."""
    import sys

    from fedbio.deployment.deploy import deploy_down, deploy_up
    from fedbio.deployment.kits import free_ports
    from fedbio.federation import FedConfig, run_federated
    from fedbio.training.run import plan

    say = log or (lambda msg: print(f"bench deploy: {msg}", file=sys.stderr, flush=True))
    start = time.perf_counter()
    n = setup(threads)
    workspace = work / "W"
    say(f"{sizes.name}: deploy up (3 sites)")
    up_s, _ = timed(lambda: deploy_up(workspace, 3, port=free_ports(), say=lambda *a: None))
    result: dict = {"size": sizes.name, "threads": n, "up_s": up_s, "runs": {}}
    try:
        cfg = plan(mode="fedavg", model="composition", split=str(workspace / "split"), epochs=sizes.epochs)
        for name, kwargs in (("deployment", {"deployment": workspace}), ("simulator", {}),
                             ("loop", {"engine": "loop"}), ("he", {"deployment": workspace})):
            say(f"the job, {name}")
            seconds, metrics = timed(lambda kw=kwargs, nm=name: run_federated(
                cfg, FedConfig(rounds=sizes.rounds, he=nm == "he"), work / nm, progress=False, **kw))
            result["runs"][name] = {"seconds": seconds, "accuracy": metrics["test"]["accuracy"],
                                    **per_round(work / name / "federation" / "server" / "history.json")}
    finally:
        say("deploy down")
        down_s, _ = timed(lambda: deploy_down(workspace))
        result["down_s"] = down_s
    runs = {k: v for k, v in result["runs"].items() if k != "he"}
    result["same_numbers"] = len({r["accuracy"] for r in runs.values()}) == 1
    result["checks"] = checks(result, sizes)
    result["wall_seconds"] = time.perf_counter() - start
    return result


def per_round(history: Path) -> dict:
    import json

    from fedbio.federation.results import round_costs

    return round_costs(json.loads(history.read_text()))


def checks(result: dict, sizes: DeploySizes) -> list[dict]:
    r = result["runs"]
    job = f"composition FedAvg, 3 sites x {sizes.rounds} rounds of {sizes.epochs / sizes.rounds:g} epochs"
    return [
        {"measure": "deploy up (provision, start, 3 sites connected) / deploy down",
         "value": f"{result['up_s']:.1f} s / {result['down_s']:.1f} s", "goal": "-", "ok": None},
        {"measure": f"{job}: deployment / simulator",
         "value": f"{r['deployment']['seconds']:.1f} s / {r['simulator']['seconds']:.1f} s = "
                  f"{r['deployment']['seconds'] / r['simulator']['seconds']:.2f}x", "goal": "-", "ok": None},
        {"measure": f"{job}: deployment / plain loop",
         "value": f"{r['deployment']['seconds']:.1f} s / {r['loop']['seconds']:.1f} s = "
                  f"{r['deployment']['seconds'] / r['loop']['seconds']:.2f}x", "goal": "-", "ok": None},
        {"measure": "same test accuracy on all three",
         "value": f"{100 * r['deployment']['accuracy']:.2f} %", "goal": "equal",
         "ok": result["same_numbers"]},
        {"measure": f"{job}, on the deployment: seconds per round, --he / clear",
         "value": f"{r['he']['round_s']:.2f} s / {r['deployment']['round_s']:.2f} s = "
                  f"{r['he']['round_s'] / r['deployment']['round_s']:.2f}x", "goal": "-", "ok": None},
        {"measure": "bytes a site sends per round, --he / clear",
         "value": f"{r['he']['bytes_up'] / 1e3:,.0f} kB / {r['deployment']['bytes_up'] / 1e3:,.1f} kB = "
                  f"{r['he']['bytes_up'] / r['deployment']['bytes_up']:.1f}x", "goal": "-", "ok": None},
        {"measure": "test accuracy, --he / clear", "value": f"{100 * r['he']['accuracy']:.2f} % / "
                    f"{100 * r['deployment']['accuracy']:.2f} %", "goal": "-", "ok": None},
    ]


def cmd_bench_deploy(args: argparse.Namespace) -> int:
    result = run_and_print(args, run_bench_deploy, FULL, SMALL)
    return finish(result, args.out, "deployment benchmark")


def register(actions) -> None:
    d = actions.add_parser("deploy", help="a real deployment: up and down times, the same job there, "
                                          "in the simulator and in a plain loop")
    add_options(d, "the default split, 3 rounds of 10 local epochs")
    d.set_defaults(func=cmd_bench_deploy)
