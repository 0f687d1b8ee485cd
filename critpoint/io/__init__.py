"""Files in and out: checkpoints, and the one safe reader of pickles.

:mod:`critpoint.io.checkpoint` holds :class:`~critpoint.io.checkpoint.Checkpoint`,
``save_checkpoint`` and ``load_checkpoint`` (also ``critpoint.Checkpoint``,
``critpoint.load_checkpoint``, ``critpoint.save_checkpoint``);
:mod:`critpoint.io._safe_load` is the only module that calls ``torch.load``.

This package imports nothing on its own: :mod:`critpoint.data` reads its
files through ``_safe_load``, and ``checkpoint`` rebuilds a checkpoint's data
through :mod:`critpoint.data`, so the two modules sit on either side of it.
"""
