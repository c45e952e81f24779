"""``FedConfig``: how sites federate (algorithm, rounds, server optimizer, tolerance of failures).

Plain data, importable without NVFlare, written into ``RUN/config.json`` (key ``federation``)
beside the ``RunConfig`` it goes with. The training budget is the ``TrainConfig``'s: ``rounds``
rounds of ``epochs / rounds`` local epochs each, so a federated run does the same work as a
local one.

Failures. A site whose local work raises sends back a flagged, empty reply (only the
exception's type leaves the site; the traceback stays in its log); the round goes on with the
others while at least ``min_clients`` answered, and ``metrics.json`` names the failed site per
round. A site whose process dies gives no answer at all: the server waits for it up to
``task_timeout`` seconds (0 = forever), then goes on without it and asks it nothing more. In the
simulator that timeout is the only way a crashed site is noticed (a crashed simulated client is
not dropped on missed heartbeats). On a real deployment (POC or provisioned) the server also
drops a client that sent no heartbeat for ``heart_beat_timeout`` seconds (600 by default, in
``servers[0]`` of the server's ``fed_server.json``); ``heartbeat_timeout`` here writes that value
into the job's server configuration.

Stalls. The simulator itself runs as a watched child process (``fedbio.federation.watch``):
after ``sim_timeout`` seconds without a result it is stopped, with stack dumps and log tails
kept, and started again up to ``sim_retries`` times; CI sets ``FEDBIO_SIM_TIMEOUT``.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedbio.errors import FedbioError

ALGORITHMS = ("fedavg", "fedprox", "fedopt")
SERVER_OPTIMIZERS = ("sgd", "adam")


@dataclass
class FedConfig:
    algorithm: str = "fedavg"      # fedavg | fedprox (proximal term mu) | fedopt (server optimizer)
    rounds: int = 3                # R rounds; each site trains E/R epochs per round
    mu: float = 0.01               # FedProx: mu/2 * ||w - w_global||^2 added to the local loss
    server_optimizer: str = "sgd"  # FedOpt: sgd (FedAvgM with momentum) | adam (FedAdam)
    server_lr: float = 1.0         # FedOpt: step size on the averaged update (1.0 + no momentum = FedAvg)
    server_momentum: float = 0.6   # FedOpt sgd (NVFlare's FedOpt default)
    server_betas: tuple[float, float] = (0.9, 0.99)  # FedOpt adam
    server_eps: float = 1e-3       # FedOpt adam: tau of Reddi et al. (2021), controls adaptivity
    min_clients: int = 0           # results a round needs to go on; 0 = every site
    task_timeout: int = 0          # seconds a round waits for a site before going on without it; 0 = forever
    heartbeat_timeout: int = 0     # seconds without a heartbeat before the server drops a site; 0 = NVFlare's
    private_heads: bool | None = None  # task heads stay at their sites; None = yes for multi-task data
    sim_timeout: int = 0           # seconds the NVFlare simulator may run; 0 = $FEDBIO_SIM_TIMEOUT or no limit
    sim_retries: int = 1           # a simulator that ran out of time is started again this many times
    fail_sites: tuple[str, ...] = ()  # tests only: these sites raise during local training

    def __post_init__(self):
        self.server_betas = tuple(self.server_betas)
        self.fail_sites = tuple(self.fail_sites)

    def validate(self, n_sites: int) -> FedConfig:
        """Raise a FedbioError for settings that cannot work with ``n_sites`` sites."""
        if self.algorithm not in ALGORITHMS:
            raise FedbioError(f"unknown federated algorithm {self.algorithm!r}; choose {', '.join(ALGORITHMS)}")
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise FedbioError(f"unknown server optimizer {self.server_optimizer!r}; "
                              f"choose {', '.join(SERVER_OPTIMIZERS)}")
        if self.rounds < 1:
            raise FedbioError(f"--rounds must be at least 1, got {self.rounds}")
        if self.mu < 0:
            raise FedbioError(f"--mu must be >= 0, got {self.mu}")
        if not 0 <= self.min_clients <= n_sites:
            raise FedbioError(f"min_clients {self.min_clients} must lie between 0 (all) and the "
                              f"number of sites ({n_sites})")
        if self.task_timeout < 0 or self.heartbeat_timeout < 0 or self.sim_timeout < 0:
            raise FedbioError("task_timeout, heartbeat_timeout and sim_timeout must be >= 0 seconds")
        if self.sim_retries < 0:
            raise FedbioError(f"sim_retries must be >= 0, got {self.sim_retries}")
        return self

    def needed(self, n_sites: int) -> int:
        """How many sites must answer a round for it to count."""
        return self.min_clients or n_sites
