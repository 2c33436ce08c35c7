"""Runners (local, Ray), shard planning, the stage store and resume markers."""
