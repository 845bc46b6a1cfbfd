"""Tar shard -> samples: shard names and member streams; annotation JSON <-> typed columns."""
