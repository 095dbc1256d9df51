"""Distributed backend: each block of units a Ray actor, coordinator-free gossip (see driver)."""

from .driver import run_ray

__all__ = ["run_ray"]
