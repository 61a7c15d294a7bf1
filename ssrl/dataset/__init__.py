"""Dataset: ``ssrl generate`` (sources -> tasks -> Parquet shards in the store), shard reading, report, preview.

May import ``sources``, ``tasks``, ``store``, ``config`` and ``errors``; never the trainer, eval or cluster.
"""
