"""The BioNeMo path: fedbio's configuration in, BioNeMo Framework's ESM-2 fine-tuning out.

Pure functions that translate between fedbio and BioNeMo's NeMo2 ESM-2 fine-tuning
(``bionemo.esm2.scripts.finetune_esm2``, in BioNeMo Framework containers up to 2.7.x):

- ``backend``  ``resolve_backend("auto" | "hf" | "bionemo")`` and ``bionemo_available()``
- ``args``     ``finetune_args``: ModelConfig / TrainConfig / DataConfig + task -> ``train_model``
               keyword arguments; ``to_argv`` -> the ``finetune_esm2`` command line;
               ``checkpoint_tag``: preset -> ``bionemo.core.data.load.load`` tag
- ``csvio``    ``write_bionemo_csv`` / ``read_bionemo_csv``: the ``sequences,labels`` CSV with the
               global class list
- ``exchange`` ``to_exchange`` / ``from_exchange``: Megatron state-dict names <-> the names sites
               exchange (wrapper prefixes stripped, TransformerEngine ``_extra_state`` dropped,
               only what trains)
- ``metrics``  ``read_metrics``: checkpoints and TensorBoard scalars from BioNeMo's result folder
- ``weights``  ``read_checkpoint_weights`` / ``write_checkpoint_weights``: a NeMo2 checkpoint's
               tensors with plain PyTorch (torch.distributed.checkpoint), for the exchange
- ``learner``  ``BioNemoLearner``: ``fedbio.training.learner.Learner``'s methods on top of ``infer_esm2`` /
               ``finetune_esm2`` (what ``Learner.build`` returns for backend ``bionemo``); not
               imported here (it imports torch), nor are the modules it alone uses:
- ``jobs``     the CSVs and command lines of its ``infer_esm2`` / ``finetune_esm2`` runs, ``run_command``
- ``results``  ``read_predictions`` and the rest that turns what those runs wrote into fedbio's
               embeddings, outputs (global class columns) and history rows
- ``holders``  ``EmbeddingHead`` / ``WeightStore``: the ``nn.Module`` it holds as ``learner.model``

Importing this package never imports BioNeMo (nor NVFlare): every BioNeMo import happens inside
the one function that needs it, so all of it is unit-tested on a CPU machine without BioNeMo.
BioNeMo itself only runs in the container (``docker compose up``; see docker/README.md).
"""

from fedbio.backends.bionemo.args import (
    CHECKPOINT_TAGS,
    checkpoint_tag,
    finetune_args,
    load_checkpoint,
    num_steps,
    to_argv,
)
from fedbio.backends.bionemo.backend import (
    BACKENDS,
    bionemo_available,
    model_backend,
    resolve_backend,
)
from fedbio.backends.bionemo.csvio import read_bionemo_csv, write_bionemo_csv
from fedbio.backends.bionemo.exchange import (
    from_exchange,
    split_prefix,
    to_exchange,
    wrapper_prefix,
)
from fedbio.backends.bionemo.metrics import read_metrics

__all__ = [
    "BACKENDS",
    "CHECKPOINT_TAGS",
    "bionemo_available",
    "checkpoint_tag",
    "finetune_args",
    "from_exchange",
    "load_checkpoint",
    "model_backend",
    "num_steps",
    "read_bionemo_csv",
    "read_metrics",
    "resolve_backend",
    "split_prefix",
    "to_argv",
    "to_exchange",
    "wrapper_prefix",
    "write_bionemo_csv",
]
