"""A tiny BERT with a WordPiece vocabulary built from the data, saved as a local model folder."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

#: The real GLUE splits this repository ships (data/README: rte, sst2, stsb), present in every clone.
REPO_GLUE = Path(__file__).resolve().parents[1] / "data" / "glue"


def write_tiny_model(folder: Path, texts: list[str], num_labels: int = 2) -> Path:
    """Vocabulary from sorted word counts (the WordPiece trainer is not deterministic, PLATFORM.md)."""
    counts = Counter(w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower()))
    words = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:400]]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=num_labels)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def glue_texts(task: str, keys: tuple[str, str | None], limit: int = 60) -> list[str]:
    rows = [json.loads(line) for line in (REPO_GLUE / task / "train.jsonl").open()][:limit]
    return [r[k] for r in rows for k in keys if k]
