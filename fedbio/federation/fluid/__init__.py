"""Federated distillation (FLuID, Hanser et al. 2025): sites share predictions on a public set, never weights.

    fedbio split ... --public-fraction 0.2 --out runs/split
    fedbio run --mode fluid --split runs/split --out runs/fluid [--fluid-hybrid] [--fluid-studies]

Each site trains a private teacher and annotates the public set; the server combines the
annotations (weighted by each teacher's applicability domain), trains a student on them, and
optionally each site retrains on its data plus the student's labels (a hybrid). The pieces:
``weighting`` (the arithmetic), ``site`` (a site's steps), ``workflow`` (the server's), ``student``
(its training), ``run`` (what ``run_federated`` adds for FLuID), ``config`` and ``options``.
"""

from fedbio.federation.fluid.config import STEPS, FluidConfig

__all__ = ["STEPS", "FluidConfig"]
