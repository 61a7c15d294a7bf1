"""Sources: finding users' images, pairing them with depth maps, decoding both, and rendering synthetic scenes.

May import ``ssrl.errors``, ``ssrl.config`` and ``ssrl.store`` (sources can live in object storage), nothing above.
"""
