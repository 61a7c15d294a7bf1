"""Cluster: ``manifests`` builds the Kubernetes objects ``ssrl submit`` creates (pure); ``client`` talks to the
API server for ``ssrl jobs`` and the trainer's progress record. May import only ``ssrl.errors`` (and the root's
``__version__``: the images' default tag).
"""
