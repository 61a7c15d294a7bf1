"""A task defined outside the package: a 3x3 shuffle reusing the built-in module with other defaults."""

from dataclasses import dataclass

from ssrl.tasks import shuffle
from ssrl.tasks.shuffle import answer_from_meta, answer_space_size, verify  # noqa: F401

NAME = "shuffle3x3"
REQUIRES_DEPTH = False


@dataclass
class Config(shuffle.Config):
    rows: int = 3
    cols: int = 3


def generate(scene, rng, cfg=None):
    return shuffle.generate(scene, rng, cfg or Config())
