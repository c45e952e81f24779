"""The tokenizers, built offline from shipped vocabularies (ESM-2: 33 tokens, AMPLIFY: 27), and a
fast ``encode``.

``load_tokenizer`` gives a ``transformers.EsmTokenizer`` (for anything that wants the Hugging Face
API); ``AmplifyTokenizer`` is AMPLIFY's, in plain Python with the same small interface; ``encode``
does the one thing training needs for either, one dict lookup per residue, about a hundred times
faster than the ESM tokenizer's generic splitting path.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedbio.errors import FedbioError

if TYPE_CHECKING:
    from transformers import EsmTokenizer

VOCAB_FILE = Path(__file__).with_name("esm_vocab.txt")
AMPLIFY_VOCAB_FILE = Path(__file__).with_name("amplify_vocab.txt")

# Lookup tables per tokenizer object; weak keys so a dropped tokenizer frees its table.
_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def load_tokenizer(vocab_file: str | Path | None = None) -> EsmTokenizer:
    """An ``EsmTokenizer`` from ``vocab_file`` (default: the shipped ESM-2 vocabulary); no network."""
    from transformers import EsmTokenizer

    path = Path(vocab_file) if vocab_file is not None else VOCAB_FILE
    if not path.is_file():
        raise FedbioError(f"tokenizer vocabulary {path} not found")
    return EsmTokenizer(vocab_file=str(path))


def _table(tokenizer) -> tuple[dict[str, int], int, int, int]:
    try:
        return _TABLES[tokenizer]
    except (KeyError, TypeError):
        pass
    vocab = dict(tokenizer.get_vocab())
    entry = (vocab, tokenizer.cls_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id)
    try:
        _TABLES[tokenizer] = entry
    except TypeError:  # an object that cannot be weakly referenced: just don't cache
        pass
    return entry


def encode(tokenizer, seq: str) -> list[int]:
    """Token ids of one protein: ``<cls>``, one id per residue, ``<eos>``.

    Agrees with ``tokenizer(seq)["input_ids"]`` for upper-case sequences. Unlike it, each unknown
    letter becomes its own ``<unk>`` (the tokenizer merges a run of them into one), so positions
    stay aligned with residues; lower case is upper-cased and whitespace is dropped.
    """
    vocab, cls_id, eos_id, unk_id = _table(tokenizer)
    seq = "".join(seq.split()).upper()
    get = vocab.get
    return [cls_id] + [get(ch, unk_id) for ch in seq] + [eos_id]


class AmplifyTokenizer:
    """AMPLIFY's vocabulary with the small tokenizer interface fedbio uses.

    ``<bos>`` plays the role of ESM's ``<cls>`` (``cls_token_id`` = ``bos_token_id`` = 3), so
    ``fedbio.models.encode`` and ``residue_mask`` work unchanged. Calling it encodes one sequence
    or a list: ``<bos>``, one id per residue (unknown letters are ``<unk>``), ``<eos>``.
    """

    pad_token, unk_token, mask_token = "<pad>", "<unk>", "<mask>"
    bos_token = cls_token = "<bos>"
    eos_token = "<eos>"

    def __init__(self, vocab_file: str | Path | None = None):
        path = Path(vocab_file) if vocab_file is not None else AMPLIFY_VOCAB_FILE
        if not path.is_file():
            raise FedbioError(f"tokenizer vocabulary {path} not found")
        self.vocab_file = path
        self._tokens = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        self._vocab = {tok: i for i, tok in enumerate(self._tokens)}
        absent = [t for t in (self.pad_token, self.unk_token, self.mask_token, self.bos_token,
                              self.eos_token) if t not in self._vocab]
        if absent:
            raise FedbioError(f"{path}: not an AMPLIFY vocabulary, lacks {', '.join(absent)}")

    @property
    def pad_token_id(self) -> int:
        return self._vocab[self.pad_token]

    @property
    def unk_token_id(self) -> int:
        return self._vocab[self.unk_token]

    @property
    def mask_token_id(self) -> int:
        return self._vocab[self.mask_token]

    @property
    def bos_token_id(self) -> int:
        return self._vocab[self.bos_token]

    cls_token_id = bos_token_id

    @property
    def eos_token_id(self) -> int:
        return self._vocab[self.eos_token]

    @property
    def all_special_ids(self) -> list[int]:
        return [self._vocab[t] for t in self._tokens if t.startswith("<") and t.endswith(">")]

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"AmplifyTokenizer({str(self.vocab_file)!r}, {len(self)} tokens)"

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self._vocab.get(tokens, self.unk_token_id)
        return [self._vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self._tokens[ids]
        return [self._tokens[int(i)] for i in ids]

    def __call__(self, text: str | list[str], padding: bool = False,
                 return_tensors: str | None = None) -> dict[str, Any]:
        """``{"input_ids", "attention_mask"}`` of one sequence or a list (``padding``: right-pad
        a list to its longest; ``return_tensors="pt"``: tensors, which needs equal lengths)."""
        single = isinstance(text, str)
        ids = [encode(self, seq) for seq in ([text] if single else text)]
        if padding and ids:
            width = max(map(len, ids))
            masks = [[1] * len(row) + [0] * (width - len(row)) for row in ids]
            ids = [row + [self.pad_token_id] * (width - len(row)) for row in ids]
        else:
            masks = [[1] * len(row) for row in ids]
        out: dict[str, Any] = {"input_ids": ids, "attention_mask": masks}
        if return_tensors == "pt":
            import torch

            out = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        elif return_tensors is not None:
            raise FedbioError(f"return_tensors={return_tensors!r}: only 'pt' is supported")
        return {k: v[0] for k, v in out.items()} if single else out

    def save_vocabulary(self, save_directory: str | Path, filename_prefix: str | None = None) -> tuple[str]:
        """Write the vocabulary as ``[prefix-]vocab.txt`` (the ``transformers`` signature)."""
        name = (f"{filename_prefix}-" if filename_prefix else "") + "vocab.txt"
        path = Path(save_directory) / name
        path.write_text("\n".join(self._tokens) + "\n")
        return (str(path),)
