"""Students for text over the teacher's vocabulary: a small transformer, a BiLSTM and a TextCNN.

Inputs are (B, L) token ids right-padded with ``pad_id``; ``vocab_size`` and ``pad_id`` come from the
data (a text dataset passes them as model defaults). Every model exposes a ``mask`` tap (the (B, L)
padding mask) so feature terms can ignore padding.

* ``text-transformer``: a BERT encoder (``transformers.BertModel``) with ``layers`` / ``hidden`` /
  ``heads`` of your choice, at random or, DistilBERT-style (Sanh et al. 2019), initialized from the
  embeddings and chosen layers (``init_layers``) of a pretrained directory (``init_from``), whose
  sizes it then takes. Taps: ``backbone.embeddings``, ``backbone.encoder.layer.<i>``.
* ``text-bilstm``: embedding -> bidirectional LSTM -> masked max+mean pooling -> linear. Taps:
  ``embedding``, ``states`` (B, L, 2H).
* ``text-cnn``: Kim (2014): embedding -> parallel 1-D convolutions -> masked max over time -> linear.
  Taps: ``embedding``, ``features``.

``init_embeddings: DIR`` (BiLSTM, TextCNN) starts the word vectors from a pretrained directory's
input embeddings, reduced to ``embed_dim`` by PCA when that is smaller.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from curridistill.errors import UserError
from curridistill.models.hf import HFClassifier, as_ids, load_encoder, masked_mean
from curridistill.models.registry import MODELS
from curridistill.pretrained import require_transformers


def pretrained_embeddings(path: str, vocab_size: int, dim: int) -> Tensor:
    """(vocab_size, dim) word vectors from a pretrained encoder's input embeddings (PCA when dim is smaller)."""
    weight = load_encoder(path, where=f"init_embeddings {path!r}").get_input_embeddings().weight.detach().float()
    if weight.shape[0] < vocab_size:
        raise UserError(f"init_embeddings {path!r} has {weight.shape[0]} tokens but the data's tokenizer {vocab_size}; "
                        f"tokenize with the same directory")
    weight = weight[:vocab_size]
    if dim < weight.shape[1]:
        centered = weight - weight.mean(0, keepdim=True)
        _, _, v = torch.linalg.svd(centered, full_matrices=False)  # principal directions, (D, D)
        weight = centered @ v[:dim].T
        weight = weight / weight.std().clamp_min(1e-8) * 0.5
    elif dim > weight.shape[1]:
        raise UserError(f"init_embeddings: embed_dim {dim} exceeds the pretrained size {weight.shape[1]}; lower embed_dim")
    return weight.contiguous()


class _Embed(nn.Module):
    def __init__(self, vocab_size: int, dim: int, pad_id: int, init_embeddings: str | None):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        if init_embeddings:
            with torch.no_grad():
                self.embedding.weight.copy_(pretrained_embeddings(init_embeddings, vocab_size, dim))
                self.embedding.weight[pad_id].zero_()


@MODELS.register("text-cnn")
class TextCNN(nn.Module):
    """Kim (2014) CNN for sentence classification over token ids."""

    def __init__(self, num_classes: int = 2, vocab_size: int = 30522, pad_id: int = 0, embed_dim: int = 128,
                 kernel_sizes: tuple[int, ...] | list[int] = (3, 4, 5), filters: int = 100, dropout: float = 0.5,
                 init_embeddings: str | None = None):
        super().__init__()
        self.pad_id, self.vocab_size = pad_id, vocab_size
        self.embedding = _Embed(vocab_size, embed_dim, pad_id, init_embeddings).embedding
        self.mask = nn.Identity()
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, filters, k, padding=k // 2) for k in kernel_sizes)
        self.features = nn.Identity()  # tap: (B, filters * len(kernel_sizes))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(filters * len(kernel_sizes), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        ids = as_ids(x, self.vocab_size, self.pad_id)  # (B, L)
        mask = self.mask((ids != self.pad_id).long())
        e = self.embedding(ids).transpose(1, 2)  # (B, E, L)
        pooled = []
        for conv in self.convs:
            h = torch.relu(conv(e))[..., : ids.shape[1]]  # (B, F, L): even kernels add one position
            h = h.masked_fill(mask[:, None, :] == 0, float("-inf")).amax(dim=2)
            pooled.append(torch.nan_to_num(h, neginf=0.0))  # an all-pad row pools to 0
        return self.fc(self.dropout(self.features(torch.cat(pooled, dim=1))))


@MODELS.register("text-bilstm")
class BiLSTM(nn.Module):
    """Embedding -> bidirectional LSTM (packed, so padding is skipped) -> max+mean pooling -> linear."""

    def __init__(self, num_classes: int = 2, vocab_size: int = 30522, pad_id: int = 0, embed_dim: int = 128,
                 hidden: int = 128, num_layers: int = 1, dropout: float = 0.3, init_embeddings: str | None = None):
        super().__init__()
        self.pad_id, self.vocab_size = pad_id, vocab_size
        self.embedding = _Embed(vocab_size, embed_dim, pad_id, init_embeddings).embedding
        self.mask = nn.Identity()
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True, bidirectional=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.states = nn.Identity()  # tap: (B, L, 2H)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        ids = as_ids(x, self.vocab_size, self.pad_id)
        mask = self.mask((ids != self.pad_id).long())
        lens = mask.sum(1).clamp_min(1)
        if _exporting():
            h = self._unpacked(self.embedding(ids), lens, mask)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(self.embedding(ids), lens.cpu(), batch_first=True,
                                                       enforce_sorted=False)
            out, _ = self.lstm(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])  # (B, L, 2H)
        h = self.states(h)
        valid = mask.unsqueeze(-1).bool()
        h_max = torch.nan_to_num(h.masked_fill(~valid, float("-inf")).amax(1), neginf=0.0)
        return self.fc(self.dropout(torch.cat([h_max, masked_mean(h, mask)], dim=1)))


    def _unpacked(self, e: Tensor, lens: Tensor, mask: Tensor) -> Tensor:
        """The packed forward's output without packing, which ``torch.export`` (ONNX) cannot trace: the forward
        direction runs on the right-padded rows (padding comes after every real token), the backward direction on
        the same rows rolled so the padding comes first, then rolled back. Equal to the packed result for one
        layer; a deeper stack would feed each layer's wrong half to the next."""
        if self.lstm.num_layers != 1:
            raise UserError(f"ONNX export of text-bilstm supports num_layers 1 (this one has {self.lstm.num_layers}); "
                            f"use --format torchscript")
        n, length = e.shape[0], e.shape[1]
        half = self.lstm.proj_size or self.lstm.hidden_size
        shift = (length - lens).unsqueeze(1)  # (B, 1): padding per row
        t = torch.arange(length, device=e.device).unsqueeze(0)
        wrap = torch.full_like(t, length)  # (t -+ shift) mod length, without the remainder the exporter lacks
        to_left = t - shift  # left-padded position t reads right-padded t - shift
        to_left = torch.where(to_left < 0, to_left + wrap, to_left).unsqueeze(-1)
        to_right = t + shift
        to_right = torch.where(to_right >= length, to_right - wrap, to_right).unsqueeze(-1)
        right, _ = self.lstm(e)
        left, _ = self.lstm(e.gather(1, to_left.expand(n, length, e.shape[2])))
        backward = left.gather(1, to_right.expand(n, length, left.shape[2]))[..., half:]
        return torch.cat([right[..., :half], backward], dim=2) * mask.unsqueeze(-1).to(e.dtype)


def _exporting() -> bool:
    """Whether ``torch.export`` (the ONNX exporter) is tracing the model."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting and is_exporting())


@MODELS.register("text-transformer")
def text_transformer(num_classes: int = 2, vocab_size: int = 30522, pad_id: int = 0, layers: int = 2, hidden: int = 128,
                     heads: int = 2, intermediate: int | None = None, max_positions: int = 512, dropout: float = 0.1,
                     pooling: str = "mean", init_from: str | None = None,
                     init_layers: list[int] | tuple[int, ...] | None = None) -> nn.Module:
    """A small BERT encoder + pooling + linear head; see the module docstring."""
    transformers = require_transformers("text-transformer")
    if init_from:
        teacher = load_encoder(init_from, where=f"text-transformer init_from {init_from!r}")
        n = teacher.config.num_hidden_layers
        picked = list(init_layers) if init_layers is not None else list(range(0, n, 2))  # DistilBERT: every other one
        bad = [i for i in picked if not 0 <= i < n]
        if bad or not picked:
            raise UserError(f"text-transformer: init_layers {picked} must name layers 0..{n - 1} of {init_from!r}")
        config = transformers.BertConfig(**{**teacher.config.to_dict(), "num_hidden_layers": len(picked)})
        backbone = transformers.BertModel(config, add_pooling_layer=False)
        backbone.embeddings.load_state_dict(teacher.embeddings.state_dict())
        for dst, src in zip(backbone.encoder.layer, picked):
            dst.load_state_dict(teacher.encoder.layer[src].state_dict())
    else:
        if hidden % heads:
            raise UserError(f"text-transformer: hidden {hidden} is not divisible by heads {heads}")
        config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                                         num_attention_heads=heads, intermediate_size=intermediate or 4 * hidden,
                                         max_position_embeddings=max_positions, pad_token_id=pad_id,
                                         hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
        backbone = transformers.BertModel(config, add_pooling_layer=False)
    if backbone.get_input_embeddings().num_embeddings < vocab_size:
        raise UserError(f"text-transformer: its vocabulary is smaller than the data's ({vocab_size} tokens); "
                        f"tokenize with {init_from!r}")
    return HFClassifier(backbone, num_classes, pad_id, pooling, dropout)
