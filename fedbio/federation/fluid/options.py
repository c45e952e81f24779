"""``fedbio run --mode fluid``'s options: the public set, the weighting, hybrids and studies.

    add_fluid_arguments(parser)   # --public, --fluid-weighting, --fluid-selection, --fluid-hybrid, --fluid-studies
    fluid = fluid_config(args)    # a FluidConfig, or None for other modes
"""

from __future__ import annotations

import argparse

from fedbio.data.public import DEFAULT_PUBLIC_FRACTION
from fedbio.federation.fluid.config import FluidConfig
from fedbio.federation.fluid.weighting import SELECTIONS, WEIGHTINGS
from fedbio.privacy.options import PRIVACY_OPTIONS

OPTIONS = ("public", "fluid_weighting", "fluid_selection", "fluid_hybrid", "fluid_studies")


def add_fluid_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("federated distillation (--mode fluid)")
    g.add_argument("--public", default=None, metavar="FILE",
                   help="the unlabelled public set teachers annotate (FASTA or CSV; labels ignored); "
                        f"default: the split's public.csv (a split made with --public-fraction "
                        f"{DEFAULT_PUBLIC_FRACTION:g} when no --split is given)")
    g.add_argument("--fluid-weighting", default=None, choices=WEIGHTINGS,
                   help="combine the teachers' labels weighted by each one's applicability domain "
                        "(default), or with a plain mean")
    g.add_argument("--fluid-selection", default=None, choices=SELECTIONS,
                   help="the student's rows: a class-balanced selection (default) or all")
    g.add_argument("--fluid-hybrid", action="store_true",
                   help="then each site retrains on its own records plus the student's labels")
    g.add_argument("--fluid-studies", action="store_true",
                   help="also train students from 1..K teachers, from parts of the public set, "
                        "with the other weighting and the other selection (same annotations)")


def fluid_rules(args) -> list[tuple[str, object, bool, str]]:
    """``check_applicable``'s rules: these options only for ``--mode fluid``."""
    fluid = args.mode == "fluid"
    given = {name: getattr(args, name) for name in OPTIONS}   # a flag not set is False; --public "" is given
    rules = [(f"--{name.replace('_', '-')}", None if value is False else value, fluid, "--mode fluid")
             for name, value in given.items()]
    # first of all privacy rules: FLuID sends no model update for DP or a filter to act on
    return rules + [(option, getattr(args, name) or None, not fluid,
                     "runs that share model updates or train with DP-SGD (--mode fluid shares predictions "
                     "on public records, which no DP option accounts for)") for option, name in PRIVACY_OPTIONS.items()]


def fluid_config(args) -> FluidConfig | None:
    if args.mode != "fluid":
        return None
    given = {"public": args.public, "weighting": args.fluid_weighting, "selection": args.fluid_selection}
    return FluidConfig(hybrid=bool(args.fluid_hybrid), studies=bool(args.fluid_studies),
                       **{k: v for k, v in given.items() if v is not None})


def fluid_announcement(fluid: FluidConfig, split: str | None) -> str:
    """What ``fedbio run`` says of a FLuID run once everything is checked."""
    public = (f"public set {fluid.public}" if fluid.public is not None else "public set: the split's public.csv" if split
              else f"public set: {DEFAULT_PUBLIC_FRACTION:g} of the shipped data's training pool (the "
                   f"default split, made with --public-fraction {DEFAULT_PUBLIC_FRACTION:g})")
    return (f"distillation: FLuID, {fluid.weighting} weighting, {fluid.selection} selection"
            + (", hybrids" if fluid.hybrid else "") + (", studies" if fluid.studies else "") + f"; {public}")
