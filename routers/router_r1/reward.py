"""Router-R1's rule-based hierarchical reward (reference §1.5): format gate, outcome, cost, α.

    normaliser = CostNormaliser()
    r = total_reward(response, gold="B", n_options=10, raw_cost=12.0, alpha=0.0,
                     normaliser=normaliser, is_valid_name=lambda n: n in {"smollm2-135m"})
    r.reward, r.format_score, r.outcome, r.cost_reward

The response scored is the whole assistant side of a rollout: every turn with its injected
`<information>` blocks. Costs are micro-dollars: completion tokens × USD per 1M tokens, without
dividing by 1e6, as the reference does.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from evals.answers import LETTERS
from routers.router_r1.parsing import PLACEHOLDERS, last_answer

TAGS = ("search", "answer", "think", "information")
_ANY_TAG = re.compile(r"</?(?:search|answer|think|information)>")


def _blocks(text: str, tag: str) -> list[str]:
    return re.findall(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)


def format_violations(response: str, is_valid_name: Callable[[str], bool]) -> list[str]:
    """Every broken format rule of the reference's gate (empty list: the format is fine)."""
    bad: list[str] = []
    text = response.strip()
    counts = {t: (text.count(f"<{t}>"), text.count(f"</{t}>")) for t in TAGS}
    if not any(o and c for o, c in counts.values()):
        return ["no tag pair at all"]
    for t, (o, c) in counts.items():
        if o != c:
            bad.append(f"{o} <{t}> but {c} </{t}>")
    for block in _blocks(text, "search"):
        if block.count(":") != 1:
            bad.append(f"search {block.strip()!r}: needs exactly one ':'")
            continue
        name, query = (p.strip() for p in block.split(":"))
        if not query:
            bad.append(f"search {block.strip()!r}: empty query")
        if any(p in block.lower() for p in PLACEHOLDERS):
            bad.append(f"search {block.strip()!r}: placeholder text")
        if name and name.lower() in query.lower():
            bad.append(f"search {block.strip()!r}: the model name appears in the query")
        if not is_valid_name(name):
            bad.append(f"search {block.strip()!r}: {name!r} is not a pool model")
    for block in _blocks(text, "think"):
        if block.strip() in ("", "..."):
            bad.append("an empty <think> block")
    for t in TAGS:
        for block in _blocks(text, t):
            if _ANY_TAG.search(block):
                bad.append(f"a tag nested inside <{t}>")
                break
    n_answer, n_think = len(_blocks(text, "answer")), len(_blocks(text, "think"))
    n_search, n_info = len(_blocks(text, "search")), len(_blocks(text, "information"))
    if n_answer != 1:
        bad.append(f"{n_answer} answer blocks (need exactly 1)")
    if n_think < 1:
        bad.append("no <think> block")
    if n_search != n_info:
        bad.append(f"{n_search} searches but {n_info} information blocks")
    if not text.startswith("<think>"):
        bad.append("does not start with <think>")
    if not text.endswith("</answer>"):
        bad.append("does not end with </answer>")
    return bad


def format_score(response: str, is_valid_name: Callable[[str], bool]) -> int:
    """0 when every format rule holds, else -1."""
    return 0 if not format_violations(response, is_valid_name) else -1


# ---------------------------------------------------------------------- outcome
def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation and articles, collapse whitespace."""
    t = text.lower()
    t = "".join(ch for ch in t if ch not in set(string.punctuation))
    t = re.sub(r"\b(a|an|the)\b", " ", t)
    return " ".join(t.split())


def exact_match(pred: str, golds: Sequence[str]) -> bool:
    p = normalize_answer(pred)
    return any(p == normalize_answer(g) for g in golds)


def f1_score(pred: str, golds: Sequence[str]) -> float:
    """Token-overlap F1, best over the gold answers; a yes/no/noanswer mismatch scores 0."""
    best = 0.0
    p = normalize_answer(pred)
    for g in golds:
        gn = normalize_answer(g)
        if (p in ("yes", "no", "noanswer") or gn in ("yes", "no", "noanswer")) and p != gn:
            continue
        common = Counter(p.split()) & Counter(gn.split())
        same = sum(common.values())
        if same == 0:
            continue
        prec, rec = same / len(p.split()), same / len(gn.split())
        best = max(best, 2 * prec * rec / (prec + rec))
    return best


def answer_letter(answer: str, n_options: int) -> str | None:
    """The option letter an `<answer>` gives: "B", "(B)", "B.", "B) text", "Option B"."""
    letters = LETTERS[:n_options]
    a = answer.strip()
    m = re.match(rf"^(?:option\s+)?\(?([{letters}])\)?(?=$|[\s.):,])", a, re.IGNORECASE)
    return m.group(1).upper() if m else None


def letter_match(answer: str, gold_letter: str, n_options: int, choices: Sequence[str] | None = None) -> bool:
    """Multiple choice: the letter matches, or the answer is the gold option's text (EM)."""
    if answer_letter(answer, n_options) == gold_letter.upper():
        return True
    if choices:
        idx = LETTERS.find(gold_letter.upper())
        return 0 <= idx < len(choices) and exact_match(answer, [choices[idx]])
    return False


# ---------------------------------------------------------------------- cost
class CostNormaliser:
    """Rolling normaliser of sqrt(raw cost) over the last `window` values (5th–95th percentile).

    It persists across batches, as the reference's global deque does. Higher means cheaper."""

    def __init__(self, window: int = 1000, low_pct: float = 5.0, high_pct: float = 95.0) -> None:
        self.values: deque[float] = deque(maxlen=window)
        self.low_pct, self.high_pct = low_pct, high_pct

    def score(self, raw_cost: float) -> float:
        x = math.sqrt(max(raw_cost, 0.0))
        self.values.append(x)
        arr = np.asarray(self.values)
        if len(arr) < 2:
            lo = hi = float(arr[0])
        else:
            lo, hi = float(np.percentile(arr, self.low_pct)), float(np.percentile(arr, self.high_pct))
        if hi - lo < 1e-8:
            return 0.5
        return 1.0 - float(np.clip((x - lo) / (hi - lo), 0.0, 1.0))


def call_cost(completion_tokens: int, usd_per_mtok_output: float) -> float:
    """Micro-dollars of one callee call: completion tokens only, price not divided by 1e6."""
    return completion_tokens * usd_per_mtok_output


# ---------------------------------------------------------------------- total
@dataclass(frozen=True, slots=True)
class RewardBreakdown:
    reward: float
    format_score: int
    outcome: float
    cost_reward: float | None
    answer: str | None
    violations: tuple[str, ...] = ()


def total_reward(
    response: str,
    *,
    gold: str | Sequence[str],
    raw_cost: float,
    alpha: float,
    normaliser: CostNormaliser,
    is_valid_name: Callable[[str], bool],
    n_options: int = 0,
    choices: Sequence[str] | None = None,
    metric: str = "em",
) -> RewardBreakdown:
    """F = -1 → -1; no answer → 0; correct → (1-α) + α·C (F1 mode: f1·(1-α) + α·C); wrong → 0.

    The cost is pushed into the normaliser for every scored trajectory (the reference does so
    before it knows whether the cost term is paid)."""
    violations = tuple(format_violations(response, is_valid_name))
    f = 0 if not violations else -1
    c = normaliser.score(raw_cost)
    if f == -1:
        return RewardBreakdown(-1.0, -1, 0.0, c, last_answer(response), violations)
    ans = last_answer(response)
    if ans is None:
        return RewardBreakdown(0.0, 0, 0.0, c, None)
    if n_options:
        assert isinstance(gold, str), "multiple choice takes one gold letter"
        outcome = 1.0 if letter_match(ans, gold, n_options, choices) else 0.0
    else:
        golds = [gold] if isinstance(gold, str) else list(gold)
        outcome = f1_score(ans, golds) if metric == "f1" else float(exact_match(ans, golds))
    if outcome == 0.0:
        return RewardBreakdown(0.0, 0, 0.0, c, ans)
    return RewardBreakdown(outcome * (1 - alpha) + alpha * c, 0, outcome, c, ans)
