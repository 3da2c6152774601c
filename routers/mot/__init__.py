"""Mixture of Thoughts (MoT): latent fusion of heterogeneous frozen experts (issue 8).

Modules: `alignment` (causal character-offset alignment), `experts` (frozen HF models with
stack-boundary hooks), `model` (router MLP and interaction layers), `fused` (one fused forward),
`decode` (lockstep KV-cached generation), `data`, `train`, `checkpoint`, `router` (`mot`).
Heavy imports (torch, transformers) happen only when these modules are used.
"""

__all__ = ["MoTRouter"]


def __getattr__(name: str):  # lazy: importing the package must not load torch
    if name == "MoTRouter":
        from routers.mot.router import MoTRouter

        return MoTRouter
    raise AttributeError(name)
