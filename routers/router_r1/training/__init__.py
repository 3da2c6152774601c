"""GRPO training of the Router-R1 policy (multi-turn rollouts, callee tokens masked out)."""
