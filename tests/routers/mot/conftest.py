"""Fixtures: the two tiny heterogeneous experts of `mot_tiny` and a fusion over them."""

from __future__ import annotations

import pytest

from mot_tiny import tiny_experts, tiny_fusion
from routers.mot.experts import FrozenExpert
from routers.mot.model import MoTFusion


@pytest.fixture(scope="module")
def experts() -> list[FrozenExpert]:
    return tiny_experts()


@pytest.fixture
def fusion(experts: list[FrozenExpert]) -> MoTFusion:
    # A large back-projection init so the interaction visibly changes the primary's logits.
    return tiny_fusion(experts)
