"""Skill keywords for a question: the paper's keyword-LLM tagger and our embedding tagger."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from experts.types import GenerationRequest
from evals.prompts import keyword_prompt
from routers.embeddings import SentenceEmbedder, text_hash

MAX_KEYWORD_CHARS = 20
LLM_SAMPLES = 5
LLM_TEMPERATURE = 0.7


def parse_keywords(text: str) -> list[str]:
    """Text after the last `Keywords:`, split on commas, stripped, lowercased, periods removed."""
    if "Keywords:" in text:
        text = text.rsplit("Keywords:", 1)[1]
    text = text.split("\n\n", 1)[0]
    out = []
    for part in text.split(","):
        kw = part.strip().lower().replace(".", "").strip()
        if kw:
            out.append(kw)
    return out


def filter_keywords(samples: Sequence[Sequence[str]], *, min_count: int = 2, max_chars: int = MAX_KEYWORD_CHARS) -> list[str]:
    """The self-consistency rule: keep keywords of at most `max_chars` characters seen in at
    least `min_count` samples (counted once per sample), deduplicated, most frequent first."""
    counts: Counter[str] = Counter()
    for sample in samples:
        counts.update({k for k in sample if len(k) <= max_chars})
    return [k for k, n in counts.most_common() if n >= min_count]


class LLMKeywordTagger:
    """The paper's tagger: a keyword LLM sampled 5 times at T=0.7 through the dispatcher."""

    def __init__(self, dispatcher, expert: str, *, samples: int = LLM_SAMPLES, max_tokens: int = 48) -> None:  # type: ignore[no-untyped-def]
        self.dispatcher = dispatcher
        self.expert = expert
        self.samples = samples
        self.max_tokens = max_tokens

    @property
    def name(self) -> str:
        return f"llm:{self.expert}"

    async def tag(self, texts: Sequence[str]) -> list[list[str]]:
        import asyncio

        async def one(text: str) -> list[str]:
            reqs = [
                GenerationRequest.chat(keyword_prompt(text), max_tokens=self.max_tokens, temperature=LLM_TEMPERATURE, seed=s)
                for s in range(self.samples)
            ]
            results = await asyncio.gather(*(self.dispatcher.submit_or_error(self.expert, r) for r in reqs))
            return filter_keywords([parse_keywords(r.text) for r in results if r.ok])

        return list(await asyncio.gather(*(one(t) for t in texts)))


class EmbeddingTagger:
    """Maps a question to its `top_n` nearest skills of a vocabulary by MiniLM cosine similarity.

    Used when no capable keyword LLM is available; the benchmark reports which tagger ran."""

    def __init__(self, embedder: SentenceEmbedder, vocabulary: Sequence[str], *, top_n: int = 3) -> None:
        self.embedder = embedder
        self.vocabulary = list(dict.fromkeys(vocabulary))
        self.top_n = top_n
        self._vocab_vecs: np.ndarray | None = None

    @property
    def name(self) -> str:
        digest = text_hash("|".join(self.vocabulary))[:8]
        return f"embedding:minilm:top{self.top_n}:{digest}"

    async def vocab_vectors(self) -> np.ndarray:
        if self._vocab_vecs is None:
            self._vocab_vecs = await self.embedder.embed(self.vocabulary)
        return self._vocab_vecs

    async def tag(self, texts: Sequence[str], progress=None) -> list[list[str]]:  # type: ignore[no-untyped-def]
        vocab = await self.vocab_vectors()
        q = await self.embedder.embed(texts, progress)
        sims = q @ vocab.T
        top = np.argsort(-sims, axis=1)[:, : self.top_n]
        return [[self.vocabulary[j] for j in row] for row in top]


def question_key(text: str) -> str:
    return text_hash(re.sub(r"\s+", " ", text.strip()))
