"""Router-R1: multi-round think/route/answer policy, its reward, and GRPO training."""

from routers.router_r1.router import RouterR1Router

__all__ = ["RouterR1Router"]
