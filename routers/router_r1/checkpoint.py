"""What a trained Router-R1 policy directory carries besides its weights: `router_r1.json`.

    meta = read_checkpoint(Path("routers/router_r1/policy"))
    meta.descriptor_lines, meta.pool, meta.obs_tokens

The policy learned on one prompt: these descriptor lines, this pool order, this observation
length and turn budget. Inference reads them back so the router shows a checkpoint the text it
was trained on (`RouterR1Router` uses the saved lines whenever its callee pool is the saved pool).
The directory itself is a LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`) over
`base_model`, a packaged model id, so a few megabytes reproduce the policy on a fresh install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CHECKPOINT_FILE = "router_r1.json"
# The policy shipped with the package: the default of `router-r1` (trained by the commands in
# benchmarks/results/router-r1-warmup-grpo/report.md).
SHIPPED_POLICY_DIR = Path(__file__).parent / "policy"


class SplitRecord(BaseModel):
    """Which questions training could see: the fit side of `evals.splits.split_fit_eval`."""

    fit_fraction: float
    seed: int
    fit_questions: int
    eval_questions: int
    trained_questions: int  # fit questions actually used (length cap, sampling)


class PolicyCheckpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_model: str  # a packaged model id or a model directory
    stage: Literal["warmup", "grpo"]
    pool: list[str]
    descriptor_lines: list[str]
    descriptor_style: str = "full"
    family: str = "qwen"
    prefill: str = ""
    max_turns: int = Field(ge=1)
    max_tokens: int = Field(ge=1)  # new tokens per policy turn
    obs_tokens: int = Field(ge=1)  # tokens kept of each callee reply (its tail)
    alpha: float = 0.0
    split: SplitRecord
    parent: str | None = None  # the checkpoint this one was trained from (GRPO: the warm-up)
    command: str | None = None


def read_checkpoint(path: Path) -> PolicyCheckpoint | None:
    f = Path(path) / CHECKPOINT_FILE
    return PolicyCheckpoint.model_validate_json(f.read_text()) if f.is_file() else None


def write_checkpoint(path: Path, meta: PolicyCheckpoint) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    (Path(path) / CHECKPOINT_FILE).write_text(meta.model_dump_json(indent=2) + "\n")
