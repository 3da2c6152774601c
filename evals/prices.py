"""List prices of API models that have no public parameter count, each with its source.

A recorded pool needs a price per expert for its cost axis. Open models are priced by the stated
convention of `evals.recorded_pool` (USD per Mtok per billion parameters); API models whose size
is undisclosed get their provider's list price from this table instead, never a silent 0. A
model in neither place is an error that asks for `price_per_mtok` in the directory's models.json.

Prices are USD per million tokens (input, output), as listed at the time given in the source.
"""

from __future__ import annotations

from dataclasses import dataclass

from experts.spec import Price

# LiteLLM's price table as republished by AgentOps-AI/tokencost, `pricing_table.md` at commit
# e7f7c1928084af55bb4955102327982401ed8649 (2025-09-05).
_TOKENCOST = "AgentOps-AI/tokencost pricing_table.md @ e7f7c19 (2025-09-05), row {row!r}"


@dataclass(frozen=True)
class ListPrice:
    input: float
    output: float
    source: str

    @property
    def price(self) -> Price:
        return Price(input=self.input, output=self.output)


LIST_PRICES: dict[str, ListPrice] = {
    # MMLU-Pro recorded pool (../shared/data/recorded/mmlu_pro_tiger)
    "GPT-4o-2024-05-13": ListPrice(5.0, 15.0, _TOKENCOST.format(row="gpt-4o-2024-05-13")),
    "gemini-1.5-pro-002": ListPrice(1.25, 5.0, _TOKENCOST.format(row="gemini-1.5-pro-002") + " (prompts up to 128k tokens)"),
    "gemini-1.5-flash-002": ListPrice(0.075, 0.30, _TOKENCOST.format(row="gemini-1.5-flash-002") + " (prompts up to 128k tokens)"),
    "Gemini-3.1-Pro": ListPrice(2.0, 12.0, "Google Gemini API pricing for gemini-3.1-pro-preview, prompts up to 200k tokens, "
                                           "as of 2026-03 (quoted by cloudprice.net and blog.laozhang.ai)"),
    "MiniMax-M2.5-NVFP4-32k": ListPrice(0.15, 1.20, "MiniMax M2.5 release announcement (2026-02-12), standard tier, as quoted by "
                                                    "verdent.ai/guides/minimax-m2-5-pricing; the recorded run is a local NVFP4 copy"),
    # RouterBench (../shared/data/recorded/routerbench_subset_routerdc); its outcomes carry dollar costs
    "gpt-4-1106-preview": ListPrice(10.0, 30.0, _TOKENCOST.format(row="gpt-4-1106-preview")),
    "gpt-3.5-turbo-1106": ListPrice(1.0, 2.0, _TOKENCOST.format(row="gpt-3.5-turbo-1106")),
    "claude-v1": ListPrice(8.0, 24.0, _TOKENCOST.format(row="anthropic.claude-v1")),
    "claude-v2": ListPrice(8.0, 24.0, _TOKENCOST.format(row="anthropic.claude-v2")),
    "claude-instant-v1": ListPrice(1.63, 5.51, _TOKENCOST.format(row="openrouter/anthropic/claude-instant-v1")),
}


def list_price(model: str) -> ListPrice | None:
    return LIST_PRICES.get(model)
