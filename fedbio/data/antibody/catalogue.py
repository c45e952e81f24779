"""The antibody catalogue: which assay is which task, where its file is, how an antibody is named.

    from fedbio.data.antibody.catalogue import TASKS, join_chains, antibody_id, tasks_for
    TASKS["expression"].unit                      # 'mg/L'
    join_chains(vh, vl)                           # the one input string a model reads

Everything else in :mod:`fedbio.data.antibody` reads these names; nothing here touches a file
except :func:`antibody_dir`, which says where the shipped ones are.

Tasks (``TASKS``; the files are in ``data/antibody/``, see its README for provenance and licences):

=================  ======================================  ================================  ==========
task               file                                    column                            unit
=================  ======================================  ================================  ==========
thermostability    wittrup2017.csv (Jain et al. 2017)      Fab Tm by DSF (°C)                °C
expression         wittrup2017.csv                         HEK Titer (mg/L)                  mg/L
aggregation        wittrup2017.csv                         HIC Retention Time (Min)a         min
polyreactivity     wittrup2017.csv                         PSR SMP Score (0-1)               score 0-1
immunogenicity     marks2021humanization_immunogenicity    %ADA response                     % patients
=================  ======================================  ================================  ==========

``source="jain"`` gives those five (137 clinical-stage antibodies from Jain et al. 2017, PNAS
114:944, plus 211 distinct antibodies with clinical anti-drug-antibody rates from Marks et al.
2021; 100 antibodies are in both, 248 distinct in all). ``source="tap"`` is the second option:
the 241 antibodies of the Therapeutic Antibody Profiler table (Raybould et al. 2019, PNAS
116:4025; TDC ``single_pred.Develop`` "TAP", as NVFlare ships it) with its five metrics
``cdr_length``, ``psh``, ``ppc``, ``pnc`` and ``sfvcsp`` as tasks. TAP values are *computed* from
modelled structures, not measured.

Aggregation is HIC retention time: hydrophobic-interaction chromatography retention is the
continuous read-out (135 distinct values of 137) of the surface hydrophobicity that drives
aggregation, and Jain et al. group it with SMAC and SGAC-SINS as the self-association /
aggregation-propensity assays. SGAC-SINS AS100 measures the same propensity but has only nine
levels in 100 mM steps, censored at both ends (21 antibodies at 0 mM, 14 at the 1000 mM
ceiling): a poor regression target. Two antibodies sit at 25.0 min, the end of the HIC gradient
(they did not elute); they are kept at 25.0.

FLAb's *binding* set (DMS Kd data, one of the six tasks of NVFlare's AMPLIFY example) is not
available here: no FLAb binding file was copied (see ``data/antibody/README.md``). The other FLAb
task folders are represented by the Jain assays they contain.

**Input.** A model reads one string per antibody: heavy chain, the (G4S)3 linker
``GGGGSGGGGSGGGGS`` (``LINKER``), light chain (``join_chains``), as in a single-chain Fv. ESM-2's
33-token vocabulary has no chain-separator token (its ``.`` and ``-`` are alignment symbols).
AMPLIFY's vocabulary does list a ``|`` token, and NVFlare's AMPLIFY example joins the chains with
it, but ESM-2's tokenizer reads ``|`` as ``<unk>`` and fedbio.data.records rejects it as a letter outside
the protein alphabet. A flexible peptide linker keeps the input in the protein alphabet, so both
models and every reader here take it unchanged.

**Identity.** An antibody is its (VH, VL) pair, after removing whitespace and upper-casing; its
id is ``ab-`` plus the first 10 hex digits of the SHA-1 of ``VH/VL`` (``antibody_id``), the same
in every file and task.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fedbio.errors import FedbioError
from fedbio.paths import data_dir

LINKER = "GGGGS" * 3   # (G4S)3, between the heavy and the light chain
SOURCES = ("jain", "tap")

JAIN_FILE = "wittrup2017.csv"
MARKS_FILE = "marks2021humanization_immunogenicity.csv"
TAP_FILE = "tap.tab"


@dataclass(frozen=True)
class AssayTask:
    """One regression task: a single assay column of one source file."""

    source: str        # "jain" (Jain/FLAb + Marks) or "tap"
    source_file: str   # file name under data/antibody/
    column: str        # header of the value column in that file
    unit: str
    why: str


TASKS: dict[str, AssayTask] = {
    "thermostability": AssayTask(
        "jain", JAIN_FILE, "Fab Tm by DSF (°C)", "°C",
        "Fab melting temperature by differential scanning fluorimetry: the unfolding assay "
        "behind FLAb's thermostability task."),
    "expression": AssayTask(
        "jain", JAIN_FILE, "HEK Titer (mg/L)", "mg/L",
        "IgG titer after transient expression in HEK293 cells: FLAb's expression task "
        "(6.6-277 mg/L, right-skewed)."),
    "aggregation": AssayTask(
        "jain", JAIN_FILE, "HIC Retention Time (Min)a", "min",
        "Hydrophobic-interaction chromatography retention: a continuous read-out of the surface "
        "hydrophobicity that drives aggregation (SGAC-SINS has only 9 censored levels)."),
    "polyreactivity": AssayTask(
        "jain", JAIN_FILE, "Poly-Specificity Reagent (PSR) SMP Score (0-1)", "score (0-1)",
        "Binding to a soluble membrane-protein reagent: the standard polyreactivity assay "
        "(72 of 137 antibodies score 0)."),
    "immunogenicity": AssayTask(
        "jain", MARKS_FILE, "%ADA response", "% of patients",
        "Share of treated patients raising anti-drug antibodies (Marks et al. 2021; "
        "Prihoda et al.): FLAb's immunogenicity task, the only clinical read-out."),
    "cdr_length": AssayTask(
        "tap", TAP_FILE, "CDR_Length", "residues",
        "TAP metric 1: total length of the six CDRs; long CDRs flag developability risk."),
    "psh": AssayTask(
        "tap", TAP_FILE, "PSH", "score",
        "TAP metric 2: patches of surface hydrophobicity around the CDRs (aggregation risk)."),
    "ppc": AssayTask(
        "tap", TAP_FILE, "PPC", "score",
        "TAP metric 3: patches of positive charge around the CDRs (polyreactivity, clearance)."),
    "pnc": AssayTask(
        "tap", TAP_FILE, "PNC", "score",
        "TAP metric 4: patches of negative charge around the CDRs."),
    "sfvcsp": AssayTask(
        "tap", TAP_FILE, "SFvCSP", "e^2",
        "TAP metric 5: structural Fv charge symmetry, the product of VH and VL net charges "
        "(negative = opposite charges, a viscosity risk)."),
}

BINDING_NOTE = ("FLAb's binding set (DMS Kd data) is not available here: no FLAb binding file "
                "was copied, so there is no binding task.")


def tasks_for(source: str) -> list[str]:
    """Task names of one source, in ``TASKS`` order."""
    check_source(source)
    return [name for name, task in TASKS.items() if task.source == source]


def check_source(source: str) -> None:
    """Refuse a source that is not one of ``SOURCES``."""
    if source not in SOURCES:
        raise FedbioError(f"antibody source must be one of {', '.join(SOURCES)}, not {source!r}")


def antibody_dir() -> Path:
    """The folder with the shipped antibody files (``data/antibody/``)."""
    return data_dir() / "antibody"


# ---------------------------------------------------------------------------------------------
# chains and identity


def normalise_chain(text: str) -> str:
    """A chain as compared and written: whitespace removed, upper case."""
    return "".join(str(text).split()).upper()


def join_chains(vh: str, vl: str) -> str:
    """The model input: heavy chain + (G4S)3 linker + light chain."""
    return normalise_chain(vh) + LINKER + normalise_chain(vl)


def antibody_id(vh: str, vl: str) -> str:
    """A stable id for the (VH, VL) pair: ``ab-`` + 10 hex digits of SHA-1 of ``VH/VL``."""
    key = f"{normalise_chain(vh)}/{normalise_chain(vl)}"
    return "ab-" + hashlib.sha1(key.encode("ascii")).hexdigest()[:10]
