"""``FluidConfig``: how a FLuID run distils (public set, weighting, selection, hybrids, studies).

Plain data, written into ``RUN/config.json`` (key ``fluid``) beside the ``RunConfig`` and the
``FedConfig`` it goes with. The teachers, the student and the hybrids train with the run's
``TrainConfig`` (epochs, batch, learning rate, seed); nothing here repeats it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedbio.errors import FedbioError
from fedbio.federation.fluid.weighting import DOMAIN_FRACTION, NEIGHBOURS, SELECTIONS, WEIGHTINGS

STEPS = ("teachers", "annotate", "combine", "hybrid", "evaluate")   # what sites are asked, in order


@dataclass
class FluidConfig:
    public: str | None = None      # --public FILE (FASTA/CSV, labels ignored); None: SPLIT/public.csv
    weighting: str = "domain"      # domain: applicability-domain weights | uniform: a plain mean
    selection: str = "balanced"    # the student's rows: balanced (an equal share per class) | all
    hybrid: bool = False           # --fluid-hybrid: each site retrains on its data + the student's labels
    studies: bool = False          # --fluid-studies: students from 1..K teachers, smaller public
                                   # sets, the other weighting and selection, from the same annotations
    neighbours: int = NEIGHBOURS   # k of the domain's k nearest neighbours
    domain_fraction: float = DOMAIN_FRACTION   # the share of a site's training records it is measured against

    def validate(self) -> FluidConfig:
        from fedbio.config import check_number

        if self.public is not None and not str(self.public).strip():
            raise FedbioError("--public is empty; give a FASTA or CSV file of public sequences, or "
                              "drop it to use the split's public.csv")
        if self.weighting not in WEIGHTINGS:
            raise FedbioError(f"--fluid-weighting must be one of {', '.join(WEIGHTINGS)}, not {self.weighting!r}")
        if self.selection not in SELECTIONS:
            raise FedbioError(f"--fluid-selection must be one of {', '.join(SELECTIONS)}, not {self.selection!r}")
        check_number("neighbours", self.neighbours, low=1, integer=True)
        check_number("domain fraction", self.domain_fraction, low=0, high=1, strict=True)
        return self
