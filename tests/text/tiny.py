"""A tiny random BERT with its tokenizer, saved as a local Hugging Face directory, and a small text table.

Nothing is downloaded: the vocabulary is written here, the weights are random (``BertConfig``).
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

WORDS = ["good", "great", "fine", "happy", "love", "bad", "awful", "poor", "sad", "hate",
         "the", "a", "movie", "film", "was", "is", "very", "plot", "acting", "quite"]
POSITIVE, NEGATIVE = WORDS[:5], WORDS[5:10]


def write_table(path: Path, n: int = 160, seed: int = 0) -> Path:
    """A CSV of short 'reviews' whose label is the sentiment word they contain, lengths 3..12 words."""
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(n):
            label = "pos" if i % 2 == 0 else "neg"
            key = rng.choice(POSITIVE if label == "pos" else NEGATIVE)
            filler = [rng.choice(WORDS[10:]) for _ in range(rng.randint(2, 11))]
            filler.insert(rng.randint(0, len(filler)), key)
            w.writerow([" ".join(filler), label])
    return path


def make_bert_dir(path: Path, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """Save a random BertModel and a WordPiece tokenizer over WORDS into ``path``."""
    import torch
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tok = transformers.BertTokenizerFast(str(path / "vocab.txt"), do_lower_case=True)  # positional: v4 and v5 names differ
    tok.save_pretrained(str(path))
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=2 * hidden,
                                     max_position_embeddings=64, pad_token_id=0)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(str(path))
    return path
