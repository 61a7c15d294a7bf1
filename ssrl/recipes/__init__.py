"""Recipes: one readable file per workflow (GRPO, SFT, eval), each a config dataclass and ``main(cfg)``,
with their components (data, modeling, callbacks, rewards, tiny model). May import every layer but ``cli``.
"""
