"""Composition of Experts: category classifier, budgeted category → expert map, fallback."""

from routers.coe.router import CoERouter

__all__ = ["CoERouter"]
