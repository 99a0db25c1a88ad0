"""ofa-kit's user-facing layer: the ``ofakit`` CLI and pipelines composing the engine packages.

Nothing imports ``ofakit``; it only composes ``profilers``, ``deploy_targets``, ``model_zoo`` and
``elastic``.
"""

__version__ = "0.1.0"
