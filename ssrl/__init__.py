"""Spatial-SSRL: verifiable spatial pretext tasks and GRPO training for vision-language models.

Packages, lowest layer first; a module imports only from its own package and the layers below it
(``tests/test_layering.py`` enforces this):

- ``errors``, ``config``: the exceptions and the dataclass-from-YAML loader every layer shares;
- ``store``: object storage (local folder, S3) every stage reads from and writes to, and checkpoints in it;
- ``cluster``: Kubernetes objects for ``ssrl submit`` and the API-server client for ``ssrl jobs``;
- ``sources``: users' images and depth maps (and synthetic ones);
- ``tasks``: the pretext tasks, pure functions from a scene to a verifiable sample;
- ``dataset``: the generation workflow, the Parquet shards it writes, their report and preview;
- ``evals``: benchmark items, answer extraction and scoring, the evaluation report;
- ``recipes``: one file per training or evaluation workflow (GRPO, SFT, eval), rewards, the tiny model;
- ``cli``: the ``ssrl`` command.
"""

__version__ = "0.1.0"
