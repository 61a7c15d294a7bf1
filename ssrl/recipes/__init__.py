"""One readable file per workflow: each has a config dataclass and ``main(cfg)``."""
