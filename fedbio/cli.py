"""The ``fedbio`` command line: ``fedbio split``, ``fedbio run``, ``fedbio predict``, ``fedbio demo``…

    fedbio --help
    fedbio split --fasta data/scl/deeploc_valtest.fasta --sites 3 --alpha 1.0 --out runs/split

Every known failure prints one line, ``fedbio: error: FILE[:LINE]: what is wrong; what to do``,
exit 2; anything unexpected one line too, exit 1 (``--debug`` or ``FEDBIO_DEBUG=1``: its traceback).
Ctrl-C, SIGTERM, SIGHUP: child processes stopped, output moved to ``OUT.failed/``, exit 130 / 143.
Heavy modules are imported inside each command so ``fedbio --help`` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from fedbio.backends.bionemo.backend import BACKENDS
from fedbio.config import TUNING_MODES
from fedbio.errors import FedbioError, Interrupted, Parser
from fedbio.federation.config import ALGORITHMS as FEDERATED
from fedbio.federation.config import DEFAULT_SERVER_LR, SERVER_OPTIMIZERS, FedConfig
from fedbio.federation.fluid.options import (
    add_fluid_arguments,
    fluid_announcement,
    fluid_config,
    fluid_rules,
)
from fedbio.privacy.options import add_privacy_arguments, announce_privacy, privacy_config
from fedbio.privacy.options import applicable as privacy_rules
from fedbio.training.options import add_device_arguments

ROUNDS = FedConfig.rounds  # --rounds when not given


def check_applicable(args) -> None:
    """Refuse options that would do nothing in this run (they used to be accepted silently, and
    some were even recorded in config.json as if they had been used)."""
    federated = args.mode in FEDERATED
    jobs = federated or args.mode == "fluid"   # an NVFlare job (FedAvg's, or FLuID's)
    antibody = args.task == "antibody" and not args.split
    rules = [("--rounds", args.rounds, federated, "federated runs (--mode fedavg, fedprox, fedopt)"),
             ("--min-sites", args.min_sites, jobs, "federated runs (--mode fedavg, fedprox, fedopt, fluid)"),
             ("--deployment", args.deployment, jobs, "federated runs (--mode fedavg, fedprox, fedopt, fluid)"),
             ("--he", args.he or None, args.deployment is not None, "runs on a deployment (--deployment W)"),
             ("--submitter", args.submitter, args.deployment is not None, "runs on a deployment (--deployment W)"),
             ("--mu", args.mu, args.mode == "fedprox", "--mode fedprox"),
             ("--server-optimizer", args.server_optimizer, args.mode == "fedopt", "--mode fedopt"),
             ("--server-lr", args.server_lr, args.mode == "fedopt", "--mode fedopt"),
             ("--shared-heads", args.shared_heads or None, federated and args.task == "antibody",
              "federated multi-task runs (--task antibody)"),
             ("--setup", args.setup, antibody, "--task antibody on the shipped data (a --split decides itself)"),
             ("--source", args.source, antibody, "--task antibody on the shipped data (a --split decides itself)"),
             ("--tuning", args.tuning, args.model != "composition", "encoder models (not composition)"),
             ("--trust-remote-code", args.trust_remote_code or None, args.model != "composition",
              "checkpoint folders and hub ids (not composition)")]
    rules += fluid_rules(args) + privacy_rules(args, federated)
    for option, value, applies, where in rules:
        if value is not None and not applies:
            raise FedbioError(f"{option} applies only to {where}; drop it, or change the run so it applies")


def _add_debug(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on every command and action (``fedbio run --debug`` and ``fedbio --debug run``)."""
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an unexpected error")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child)


def _add_split_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """The split options; their defaults are ``SplitConfig``'s."""
    from fedbio.data.split import PARTITIONS, POOLS, SplitConfig

    d = SplitConfig()
    p.add_argument("--fasta", required=required, help="biotrainer FASTA (or CSV) to split")
    p.add_argument("--hard", help="a second, separate hard test set (setHARD)")
    p.add_argument("--sites", type=int, default=d.sites, help=f"default {d.sites}")
    p.add_argument("--alpha", type=float, default=d.alpha,
                   help=f"Dirichlet concentration (label skew; default {d.alpha:g})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    p.add_argument("--pool", choices=POOLS, default=d.pool,
                   help="original: keep the file's homology-separated SET labels (default); "
                        "random: pool and re-split every record")
    p.add_argument("--partition", choices=PARTITIONS, default=d.partition, help=f"default {d.partition}")
    p.add_argument("--valid-fraction", type=float, default=d.valid_fraction,
                   help=f"default {d.valid_fraction:g}")
    p.add_argument("--min-site-size", type=int, default=d.min_site_size, help=f"default {d.min_site_size}")
    p.add_argument("--public-fraction", type=float, default=d.public_fraction, metavar="P",
                   help="reserve a stratified, seeded fraction P of the training pool as unlabelled "
                        f"public.csv (federated distillation, --mode fluid); default {d.public_fraction:g}")


def _split_config(args):
    from fedbio.data.split import SplitConfig

    return SplitConfig(sites=args.sites, alpha=args.alpha, seed=args.seed, pool=args.pool,
                       partition=args.partition, valid_fraction=args.valid_fraction,
                       min_site_size=args.min_site_size, public_fraction=args.public_fraction)


def cmd_split(args) -> int:
    from fedbio.data.split import make_split, split_table, warn_random_pool, write_split

    cfg = _split_config(args)
    split = make_split(args.fasta, cfg, hard=args.hard)   # read and checked before anything is written
    warn_random_pool(cfg)
    out = write_split(split, args.out, overwrite=args.overwrite, inputs=[args.fasta, args.hard])
    print(split_table(split.summary()))
    print(f"wrote {out}/ (site-*/train.csv, site-*/valid.csv, test.csv, classes.json, "
          f"summary.json, split.png{', public.csv' * (split.public is not None)})")
    return 0


def cmd_data_download(args) -> int:
    from fedbio.data.download import download_flip_scl

    path = download_flip_scl(args.to, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def cmd_demo(args) -> int:
    from fedbio.demo import run_demo

    return run_demo(args.out, overwrite=args.overwrite, profile=args.profile)


def cmd_run(args) -> int:
    from fedbio.reporting.summary import print_metrics
    from fedbio.training.run import plan, run

    check_applicable(args)
    if args.deployment is not None:   # before its split is read: say what is wrong with it
        importlib.import_module("fedbio.deployment.processes").read_record(args.deployment)
    cfg = plan(task=args.task, mode=args.mode, profile=args.profile, seed=args.seed,
               split=args.split or (os.path.join(args.deployment, "split") if args.deployment else None), model=args.model, tuning=args.tuning, epochs=args.epochs,
               weights_dir=args.weights_dir, setup=args.setup, source=args.source,
               backend=args.backend, device=args.device, precision=args.precision,
               trust_remote_code=True if args.trust_remote_code else None)
    fed, fluid = None, fluid_config(args)
    if cfg.mode in FEDERATED or fluid:
        given = {"rounds": args.rounds, "mu": args.mu, "min_sites": args.min_sites,
                 "server_optimizer": args.server_optimizer, "server_lr": args.server_lr}
        fed = FedConfig(private_heads=False if args.shared_heads else None, he=bool(args.he),
                        **{k: v for k, v in given.items() if v is not None})
    privacy = privacy_config(args)

    def announce() -> None:  # once every option and input has been checked
        print(f"profile: {cfg.profile} ({cfg.profile_reason})")
        print(f"model: {cfg.model.name}" + ("" if cfg.model.is_composition else f", tuning {cfg.model.tuning}")
              + f"; {cfg.train.epochs:g} epochs; mode {cfg.mode}; seed {cfg.seed}")
        if fluid is not None:
            print(fluid_announcement(fluid, args.split or args.deployment), flush=True)
        elif fed is not None:
            print(f"federation: {cfg.mode}, {fed.rounds} rounds x {cfg.train.epochs / fed.rounds:g} "
                  f"local epochs, {'all sites' if not fed.min_sites else f'min {fed.min_sites} sites'}",
                  flush=True)
        if fed is not None and fed.he:
            print("encryption: CKKS (TenSEAL): the server averages ciphertexts it cannot decrypt; "
                  "the last round's model is delivered, decrypted at the sites", flush=True)
        announce_privacy(privacy, fed)

    if fed is not None:
        from fedbio.federation import run_federated

        metrics = run_federated(cfg, fed, out=args.out, overwrite=args.overwrite, progress=not args.quiet,
                                announce=announce, privacy=privacy, deployment=args.deployment,
                                submitter=args.submitter, fluid=fluid)
    else:
        metrics = run(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet,
                      announce=announce, privacy=privacy)
    print_metrics(metrics)
    wrote = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(args.out).iterdir()
                   if p.name in {"config.json", "manifest.json", "metrics.json", "model", "sites", "tb"})
    print(f"wrote {args.out}/ ({', '.join(wrote)})")
    return 0


def cmd_predict(args) -> int:
    from fedbio.training.predict import predict_file

    n = predict_file(args.model, args.fasta, args.out, overwrite=args.overwrite,
                     device=args.device, precision=args.precision,
                     trust_remote_code=args.trust_remote_code)
    print(f"wrote {n} predictions to {args.out}")
    return 0


def cmd_weights_download(args) -> int:
    from fedbio.models import download_weights

    path = download_weights(args.name, args.to)
    print(f"weights for {args.name} in {path}")
    return 0


def _add_run_parser(sub) -> None:
    """``fedbio run``: its options, defaults and choices read from the configuration classes."""
    p = sub.add_parser("run", help="train: local / central baselines, or federated (fedavg, fedprox, fedopt)")
    p.add_argument("--task", default="scl", help="scl (shipped) | classification | regression | "
                   "antibody (shipped multi-task regression)")
    p.add_argument("--setup", default=None, choices=("multitask", "alltasks"),
                   help="antibody: one task per site (default) or every task at every site")
    p.add_argument("--source", default=None, choices=("jain", "tap"), help="antibody: data table (default jain)")
    p.add_argument("--shared-heads", action="store_true",
                   help="federated multi-task: share the task heads too (default: they stay at their sites)")
    p.add_argument("--mode", default="central", choices=("local", "central", *FEDERATED, "fluid"),
                   help="local | central | fedavg | fedprox | fedopt | fluid (federated distillation)")
    p.add_argument("--profile", default=None, help="quick | laptop | reference | auto "
                   "(default: $FEDBIO_PROFILE or auto)")
    p.add_argument("--seed", type=int, default=0, help="0 to 2**32 - 1: every random choice")
    p.add_argument("--split", default=None, help="a split folder (default: split the shipped data)")
    p.add_argument("--model", default=None, help="preset (esm2-8m…), a local folder, or composition")
    p.add_argument("--tuning", default=None, choices=TUNING_MODES)
    p.add_argument("--epochs", type=float, default=None, help="passes over each site's data")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"federated rounds, each E/R local epochs (default {ROUNDS})")
    p.add_argument("--mu", type=float, default=None,
                   help=f"FedProx proximal weight (default {FedConfig.mu:g})")
    p.add_argument("--server-optimizer", default=None, choices=SERVER_OPTIMIZERS,
                   help="FedOpt server optimizer (sgd with momentum, or adam)")
    p.add_argument("--server-lr", type=float, default=None,
                   help="FedOpt server step size (default " + ", ".join(
                       f"{lr:g} for {name}" for name, lr in DEFAULT_SERVER_LR.items()) + ")")
    p.add_argument("--min-sites", "--min-clients", dest="min_sites", type=int, default=None,
                   help="sites a round needs (default 0: all; --min-clients is the old spelling)")
    add_privacy_arguments(p)
    add_fluid_arguments(p)
    p.add_argument("--deployment", default=None, metavar="W", help="federated: run as a job on the "
                   "deployment in W (fedbio deploy up), on its split unless --split")
    p.add_argument("--he", action="store_true", help="with --deployment: sites send CKKS ciphertexts, "
                   "the server averages them unable to decrypt; the last round is delivered")
    p.add_argument("--submitter", default=None, metavar="USER", help="with --deployment: submit the job as "
                   "USER, with its kit in W/kits (default admin@consortium.org)")
    p.add_argument("--weights-dir", default=None, help="folder of pretrained weights (else $FEDBIO_WEIGHTS)")
    p.add_argument("--backend", default=None, choices=BACKENDS,
                   help="model backend (default: the profile's, hf)")
    add_device_arguments(p, default=None)
    p.add_argument("--out", required=True, help="run folder (refused if non-empty); while the run "
                   "goes it is OUT.running/, a failed run is moved to OUT.failed/")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder once the new run is complete")
    p.add_argument("--quiet", action="store_true", help="no progress bars or progress lines")
    p.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fedbio", description="Federated fine-tuning of protein language models.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("split", help="spread a data set over N sites (label skew, iid, quantity)")
    _add_split_args(p)
    p.add_argument("--out", required=True, help="folder to write (refused if non-empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out split folder once the new one is complete")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("data", help="fetch optional larger data sets (needs the network)")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    d = dsub.add_parser("download", help="download FLIP's full mixed_soft.fasta (DeepLoc, ~13k records)")
    d.add_argument("--to", required=True, help="folder to write mixed_soft.fasta into")
    d.add_argument("--overwrite", action="store_true")
    d.set_defaults(func=cmd_data_download)

    p = sub.add_parser("demo", help="the whole story on the shipped data: split, then a results table")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--profile", default=None, help="quick | laptop | reference | auto")
    p.set_defaults(func=cmd_demo)

    _add_run_parser(sub)

    p = sub.add_parser("predict", help="predict every record of a FASTA/CSV with a saved model")
    p.add_argument("--model", required=True, help="a model folder, e.g. RUN/model")
    p.add_argument("--fasta", required=True, help="FASTA or CSV of sequences (labels optional)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--overwrite", action="store_true")
    add_device_arguments(p, default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("weights", help="fetch pretrained weights for offline use")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    w = wsub.add_parser("download", help="download a preset's checkpoint from the Hugging Face hub")
    w.add_argument("name", help="preset name, e.g. esm2-8m")
    w.add_argument("--to", default=None, help="folder (default: the Hugging Face cache)")
    w.set_defaults(func=cmd_weights_download)

    for register in _EXTRA_COMMANDS:
        register(sub)
    _add_debug(parser)
    return parser


def _version() -> str:
    return f"fedbio {importlib.import_module('fedbio').__version__}"


def _register_report(sub) -> None:
    p = sub.add_parser("report", help="results table (mean ± sd over seeds, bootstrap CIs) and plots")
    p.add_argument("runs", nargs="+", help="run folders (several seeds of the same run group together)")
    p.add_argument("--out", required=True, help="folder for results.md, results.csv and PNGs "
                   "(refused if non-empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing report folder once the new one is complete")
    p.add_argument("--allow-mixed", action="store_true",
                   help="table runs made on different splits or class lists side by side")
    p.add_argument("--n-boot", type=int, default=1000,
                   help="bootstrap resamples of the test set (100 to 100000)")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from fedbio.reporting.report import write_report

    out, files = write_report(args.runs, args.out, n_boot=args.n_boot, overwrite=args.overwrite,
                              allow_mixed=args.allow_mixed)
    print(f"wrote {out}/ ({', '.join(files)})")
    return 0


def _registered_in(module: str):
    """A command whose parser lives in ``module`` (its ``register(sub)``), imported only then."""
    return lambda sub: importlib.import_module(module).register(sub)


# Commands defined in their own modules (imported lazily so `fedbio --help` stays instant).
_EXTRA_COMMANDS: list = [_register_report, *map(_registered_in, ("fedbio.bench.cli", "fedbio.privacy.cli",
                                                                 "fedbio.deployment.cli"))]


def _on_signal(signum, frame):
    raise Interrupted(signum)


def _first_line(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _kept(err: BaseException) -> str:
    kept = getattr(err, "kept", None)
    return f"; what it wrote, with its logs and error.txt, is in {kept}/" if kept else ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a usage error (already one line)
        return int(stop.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    debug = getattr(args, "debug", False) or os.environ.get("FEDBIO_DEBUG") == "1"
    for name in ("SIGTERM", "SIGHUP"):  # end like Ctrl-C: children stopped, output kept
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _on_signal)
    try:
        return int(args.func(args) or 0)
    except FedbioError as err:
        print(f"fedbio: error: {_first_line(err)}{_kept(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        print(f"fedbio: interrupted ({name}){_kept(err)}", file=sys.stderr)
        return 128 + int(signum)
    except BrokenPipeError:   # `fedbio ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if debug:
            raise
        print(f"fedbio: error: unexpected {type(err).__name__}: {_first_line(err)}{_kept(err)}; "
              "run with --debug for the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
