"""Symbolic-MoE: skill profiles, skill-based recruiting, aggregator selection."""

from routers.symbolic_moe.router import SymbolicMoERouter

__all__ = ["SymbolicMoERouter"]
