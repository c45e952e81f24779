"""``FedConfig``: how sites federate (rounds, FedProx mu, server optimizer, tolerance of failures).

The algorithm is the run's ``--mode`` (``RunConfig.mode``: fedavg | fedprox | fedopt), nothing here.

Plain data, importable without NVFlare, written into ``RUN/config.json`` (key ``federation``)
beside the ``RunConfig`` it goes with. The training budget is the ``TrainConfig``'s: ``rounds``
rounds of ``epochs / rounds`` local epochs each, so a federated run does the same work as a
local one.

Failures. A site whose local work raises sends back a flagged, empty reply (only the
exception's type leaves the site; the traceback stays in its log); the round goes on with the
others while at least ``min_sites`` answered, and ``metrics.json`` names the failed site per
round. A site whose process dies gives no answer at all: the server waits for it up to
``task_timeout`` seconds (0 = forever), then goes on without it and asks it nothing more. In the
simulator that timeout is the only way a crashed site is noticed (a crashed simulated client is
not dropped on missed heartbeats). On a real deployment (POC or provisioned) the server also
drops a client that sent no heartbeat for ``heart_beat_timeout`` seconds (600 by default, in
``servers[0]`` of the server's ``fed_server.json``); ``heartbeat_timeout`` here writes that value
into the job's server configuration.

Stalls. The simulator itself runs as a watched child process (``fedbio.federation.nvflare.watch``).
``sim_timeout`` (or ``$FEDBIO_SIM_TIMEOUT``) is a limit on *silence*, not on the run's length:
after that many seconds without progress (a site finishing a local epoch, the server finishing a
round) the simulator is stopped, with stack dumps and log tails kept, and started again up to
``sim_retries`` times; ``make test`` sets 600 s. The end of the job is ``done.json``, which the
server writes last, after the delivered model; ``sim_grace`` seconds later whatever is left of
NVFlare's shutdown is ended, every process of the run with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedbio.config import check_number
from fedbio.errors import FedbioError

ALGORITHMS = ("fedavg", "fedprox", "fedopt")
SERVER_OPTIMIZERS = ("sgd", "adam")
DEFAULT_SERVER_LR = {"sgd": 1.0, "adam": 0.01}


@dataclass
class FedConfig:
    rounds: int = 4                # R rounds; each site trains E/R epochs per round
    mu: float = 0.01               # FedProx: mu/2 * ||w - w_global||^2 added to the local loss
    server_optimizer: str = "sgd"  # FedOpt: sgd (FedAvgM with momentum) | adam (FedAdam)
    server_lr: float | None = None  # FedOpt: step size on the averaged update; None: 1.0 for sgd
                                    # (1.0 + no momentum = FedAvg), 0.01 for adam
    server_momentum: float = 0.6   # FedOpt sgd (NVFlare's FedOpt default)
    server_betas: tuple[float, float] = (0.9, 0.99)  # FedOpt adam
    server_eps: float = 1e-3       # FedOpt adam: tau of Reddi et al. (2021), controls adaptivity
    min_sites: int = 0           # results a round needs to go on; 0 = every site
    weighted: bool = True          # FedAvg weights each site by its training records; False: plain mean
    task_timeout: int = 0          # seconds a round waits for a site before going on without it; 0 = forever
    heartbeat_timeout: int = 0     # seconds without a heartbeat before the server drops a site; 0 = NVFlare's
    private_heads: bool | None = None  # task heads stay at their sites; None = yes for multi-task data
    stream_metrics: bool | None = None  # sites stream their curves to the live TensorBoard
                                   # (RUN/tb/); None: yes, except under DP; False: only task results
    sim_timeout: int = 0           # seconds without progress before the simulator counts as stalled;
                                   # 0 = $FEDBIO_SIM_TIMEOUT, else no limit
    he: bool = False               # deployment only: sites send CKKS ciphertexts, the server
                                   # averages them without a secret key (fedbio.federation.encrypted)
    sim_retries: int = 1           # a stalled simulator is started again this many times
    sim_grace: float = 0.5         # seconds NVFlare may take to exit after the job's end (done.json)
    # Fault injection, for tests: sites that raise in local training, sleep ``slow_seconds`` in
    # every round, or whose process exits during its first training round.
    fail_sites: tuple[str, ...] = ()
    slow_sites: tuple[str, ...] = ()
    slow_seconds: float = 0.0
    die_sites: tuple[str, ...] = ()

    def __post_init__(self):
        if self.server_lr is None:
            self.server_lr = DEFAULT_SERVER_LR.get(self.server_optimizer, 1.0)
        self.server_betas = tuple(self.server_betas)
        for name in ("fail_sites", "slow_sites", "die_sites"):
            setattr(self, name, tuple(getattr(self, name)))

    def validate(self, n_sites: int) -> FedConfig:
        """Raise a FedbioError for settings that cannot work with ``n_sites`` sites."""
        if self.server_optimizer not in SERVER_OPTIMIZERS:
            raise FedbioError(f"unknown server optimizer {self.server_optimizer!r}; "
                              f"choose {', '.join(SERVER_OPTIMIZERS)}")
        check_number("--rounds", self.rounds, low=1, integer=True)
        check_number("--mu", self.mu, low=0)
        check_number("--server-lr", self.server_lr, low=0, strict=True)
        check_number("server momentum", self.server_momentum, low=0, high=0.999)
        for beta in self.server_betas:
            check_number("server betas", beta, low=0, high=0.999999)
        check_number("server eps", self.server_eps, low=0, strict=True)
        check_number("--min-sites", self.min_sites, low=0, integer=True)
        if self.min_sites > n_sites:
            raise FedbioError(f"--min-sites {self.min_sites} must lie between 0 (all) and the "
                              f"number of sites ({n_sites})")
        for name in ("task_timeout", "heartbeat_timeout", "sim_timeout", "sim_grace", "slow_seconds"):
            check_number(name, getattr(self, name), low=0)
        check_number("sim_retries", self.sim_retries, low=0, integer=True)
        return self

    def needed(self, n_sites: int) -> int:
        """How many sites must answer a round for it to count."""
        return self.min_sites or n_sites
