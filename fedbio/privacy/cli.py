"""``fedbio attack membership RUN``: the command line of ``fedbio.privacy.attack``.

    fedbio attack membership runs/fedavg --attack all --n-boot 1000
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("attack", help="measure what a run's model leaks: membership inference")
    asub = p.add_subparsers(dest="attack_command", metavar="ATTACK", required=True)
    a = asub.add_parser("membership", help="tell the records a run's model trained on from "
                        "records it never saw (its sites' validation records): ROC AUC, TPR at 1%% FPR")
    a.add_argument("run", help="a run folder (fedbio run --out); results go to RUN/attack/ and "
                   "RUN/metrics.json (privacy.membership_auc, privacy.tpr_at_1pct_fpr)")
    a.add_argument("--attack", default="all",
                   help="loss | calibrated | all (default; comma-separated list also works)")
    a.add_argument("--references", type=int, default=1,
                   help="reference models the calibrated attack trains on the public test set (default 1)")
    a.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (100 to 100000)")
    a.add_argument("--seed", type=int, default=0, help="bootstrap and reference-model seed")
    a.add_argument("--overwrite", action="store_true", help="replace an earlier attack's results")
    a.add_argument("--quiet", action="store_true", help="no progress lines")
    a.set_defaults(func=cmd_attack_membership)


def cmd_attack_membership(args) -> int:
    from fedbio.privacy.attack import ATTACKS, AttackConfig, attack_run, summary_lines

    attacks = ATTACKS if args.attack == "all" else tuple(a.strip() for a in args.attack.split(",") if a.strip())
    config = AttackConfig(attacks=attacks, references=args.references, n_boot=args.n_boot,
                          seed=args.seed)
    result = attack_run(args.run, config, overwrite=args.overwrite, progress=not args.quiet)
    for line in summary_lines(result):
        print(line)
    print(f"wrote {args.run}/attack/ (membership.json, scores.csv, roc.png) and "
          "privacy.membership_auc in metrics.json")
    return 0
