"""The ``fedbio`` command line: ``fedbio split``, ``fedbio run``, ``fedbio predict``, ``fedbio demo``…

    fedbio --help
    fedbio split --fasta data/scl/deeploc_valtest.fasta --sites 3 --alpha 1.0 --out runs/split

User mistakes (bad data, a refused option) print one ``fedbio: error: …`` line and exit 2.
Heavy modules are imported inside each command so ``fedbio --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from fedbio.errors import FedbioError

FEDERATED = ("fedavg", "fedprox", "fedopt")


def _add_split_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    from fedbio.split import PARTITIONS, POOLS

    p.add_argument("--fasta", required=required, help="biotrainer FASTA (or CSV) to split")
    p.add_argument("--hard", help="a second, separate hard test set (setHARD)")
    p.add_argument("--sites", type=int, default=3)
    p.add_argument("--alpha", type=float, default=1.0, help="Dirichlet concentration (label skew)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", choices=POOLS, default="original",
                   help="original: keep the file's homology-separated SET labels (default); "
                        "random: pool and re-split every record")
    p.add_argument("--partition", choices=PARTITIONS, default="dirichlet")
    p.add_argument("--valid-fraction", type=float, default=0.1)
    p.add_argument("--min-site-size", type=int, default=20)


def _split_config(args):
    from fedbio.split import SplitConfig

    return SplitConfig(sites=args.sites, alpha=args.alpha, seed=args.seed, pool=args.pool,
                       partition=args.partition, valid_fraction=args.valid_fraction,
                       min_site_size=args.min_site_size)


def _device_arguments(p: argparse.ArgumentParser, default: str | None) -> None:
    """--device, --precision and --trust-remote-code (fedbio.device, fedbio.models.backbone)."""
    keep = "the profile's: auto" if default is None else default
    p.add_argument("--device", default=default,
                   help=f"auto | cpu | cuda | cuda:N (default: {keep})")
    p.add_argument("--precision", default=default,
                   help=f"auto | 32 | bf16-mixed (CUDA only; default: {keep})")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow checkpoints whose config.json has an auto_map (e.g. NVIDIA's "
                        "TransformerEngine ESM-2): RUNS PYTHON CODE SHIPPED WITH THE CHECKPOINT")


def cmd_split(args) -> int:
    from fedbio.split import make_split, split_table, warn_random_pool, write_split

    cfg = _split_config(args)
    warn_random_pool(cfg)
    split = make_split(args.fasta, cfg, hard=args.hard)
    out = write_split(split, args.out, overwrite=args.overwrite)
    print(split_table(split.summary()))
    print(f"wrote {out}/ (site-*/train.csv, site-*/valid.csv, test.csv, classes.json, "
          "summary.json, split.png)")
    return 0


def cmd_data_download(args) -> int:
    from fedbio.download import download_flip_scl

    path = download_flip_scl(args.to, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0


def cmd_demo(args) -> int:
    from fedbio.demo import run_demo

    return run_demo(args.out, overwrite=args.overwrite, profile=args.profile)


def cmd_run(args) -> int:
    from fedbio.run import plan, run
    from fedbio.summary import print_metrics

    cfg = plan(task=args.task, mode=args.mode, profile=args.profile, seed=args.seed,
               split=args.split, model=args.model, tuning=args.tuning, epochs=args.epochs,
               weights_dir=args.weights_dir, setup=args.setup, source=args.source,
               backend=args.backend, device=args.device, precision=args.precision,
               trust_remote_code=True if args.trust_remote_code else None)
    print(f"profile: {cfg.profile} ({cfg.profile_reason})")
    print(f"model: {cfg.model.name}" + ("" if cfg.model.is_composition else f", tuning {cfg.model.tuning}")
          + f"; {cfg.train.epochs:g} epochs; mode {cfg.mode}; seed {cfg.seed}")
    if cfg.mode in FEDERATED:
        from fedbio.federation import FedConfig, run_federated

        fed = FedConfig(algorithm=cfg.mode, rounds=args.rounds, mu=args.mu,
                        server_optimizer=args.server_optimizer,
                        server_lr=args.server_lr if args.server_lr is not None else
                        (1.0 if args.server_optimizer == "sgd" else 0.01),
                        min_clients=args.min_clients,
                        private_heads=False if args.shared_heads else None)
        print(f"federation: {cfg.mode}, {fed.rounds} rounds x {cfg.train.epochs / fed.rounds:g} "
              f"local epochs, {'all sites' if not fed.min_clients else f'min {fed.min_clients} sites'}")
        metrics = run_federated(cfg, fed, out=args.out, overwrite=args.overwrite,
                                progress=not args.quiet)
    else:
        metrics = run(cfg, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print_metrics(metrics)
    wrote = sorted(p.name + ("/" if p.is_dir() else "") for p in Path(args.out).iterdir()
                   if p.name in {"config.json", "manifest.json", "metrics.json", "model", "sites", "tb"})
    print(f"wrote {args.out}/ ({', '.join(wrote)})")
    return 0


def cmd_predict(args) -> int:
    from fedbio.predict import predict_file

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedbio", description="Federated fine-tuning of protein language models.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("split", help="spread a data set over N sites (label skew, iid, quantity)")
    _add_split_args(p)
    p.add_argument("--out", required=True, help="folder to write (refused if non-empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
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

    p = sub.add_parser("run", help="train: local / central baselines, or federated (fedavg, fedprox, fedopt)")
    p.add_argument("--task", default="scl", help="scl (shipped) | classification | regression | "
                   "antibody (shipped multi-task regression)")
    p.add_argument("--setup", default=None, choices=("multitask", "alltasks"),
                   help="antibody: one task per site (default) or every task at every site")
    p.add_argument("--source", default=None, choices=("jain", "tap"), help="antibody: data table (default jain)")
    p.add_argument("--shared-heads", action="store_true",
                   help="federated multi-task: share the task heads too (default: they stay at their sites)")
    p.add_argument("--mode", default="central", choices=("local", "central", *FEDERATED),
                   help="local | central | fedavg | fedprox | fedopt")
    p.add_argument("--profile", default=None, help="quick | laptop | reference | auto "
                   "(default: $FEDBIO_PROFILE or auto)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default=None, help="a split folder (default: split the shipped data)")
    p.add_argument("--model", default=None, help="preset (esm2-8m…), a local folder, or composition")
    p.add_argument("--tuning", default=None, choices=("head", "lora", "full"))
    p.add_argument("--epochs", type=float, default=None, help="passes over each site's data")
    p.add_argument("--rounds", type=int, default=4, help="federated rounds (each E/R local epochs)")
    p.add_argument("--mu", type=float, default=0.01, help="FedProx proximal weight")
    p.add_argument("--server-optimizer", default="sgd", choices=("sgd", "adam"),
                   help="FedOpt server optimizer (sgd with momentum, or adam)")
    p.add_argument("--server-lr", type=float, default=None, help="FedOpt server step size")
    p.add_argument("--min-clients", type=int, default=0, help="sites a round needs (0 = all)")
    p.add_argument("--weights-dir", default=None, help="folder of pretrained weights (else $FEDBIO_WEIGHTS)")
    p.add_argument("--backend", default=None, choices=("auto", "hf", "bionemo"),
                   help="model backend (default: the profile's, hf)")
    _device_arguments(p, default=None)
    p.add_argument("--out", required=True, help="run folder (refused if non-empty)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("predict", help="predict every record of a FASTA/CSV with a saved model")
    p.add_argument("--model", required=True, help="a model folder, e.g. RUN/model")
    p.add_argument("--fasta", required=True, help="FASTA or CSV of sequences (labels optional)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--overwrite", action="store_true")
    _device_arguments(p, default="auto")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("weights", help="fetch pretrained weights for offline use")
    wsub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    w = wsub.add_parser("download", help="download a preset's checkpoint from the Hugging Face hub")
    w.add_argument("name", help="preset name, e.g. esm2-8m")
    w.add_argument("--to", default=None, help="folder (default: the Hugging Face cache)")
    w.set_defaults(func=cmd_weights_download)

    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


def _version() -> str:
    from fedbio import __version__

    return f"fedbio {__version__}"


def _register_bench(sub) -> None:
    from fedbio.bench import register

    register(sub)


def _register_report(sub) -> None:
    p = sub.add_parser("report", help="results table (mean ± sd over seeds, bootstrap CIs) and plots")
    p.add_argument("runs", nargs="+", help="run folders (several seeds of the same run group together)")
    p.add_argument("--out", required=True, help="folder for results.md, results.csv and PNGs")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the test set")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from fedbio.report import write_report

    out = write_report(args.runs, args.out, n_boot=args.n_boot)
    print(f"wrote {out}/ (results.md, results.csv, curves.png, confusion.png, per_class.png)")
    return 0


# Commands defined in their own modules (imported lazily so `fedbio --help` stays instant).
_EXTRA_COMMANDS: list = [_register_report, _register_bench]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except FedbioError as err:
        print(f"fedbio: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedbio: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
