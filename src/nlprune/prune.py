"""Pruning in one import: the public names of scores, masks, schedules, penalties and scans.

The package keeps one concept per module, and this module gathers their public names so that
``from nlprune import prune`` gives a chapter everything it prunes with:

* :mod:`nlprune.scores` — how much each weight or unit matters (``magnitude_scores``,
  ``gradient_scores``, ``taylor_scores``, ``random_scores``, ``row_norm_scores``, ``unit_norms``,
  ``activation_scores``, ``unit_taylor_scores``, …);
* :mod:`nlprune.masks` — keep-masks: ``compute_masks``, ``nm_masks``, ``apply_masks``,
  ``mask_gradients``, ``masked_step``, ``check_masks``, ``make_permanent``, ``overall_sparsity``,
  ``sparsity_report``, and the :class:`~nlprune.masks.Pruner` protocol;
* :mod:`nlprune.schedules` — ``polynomial_sparsity`` and ``GradualPruner``;
* :mod:`nlprune.penalties` — ``l1_penalty`` and ``group_lasso_penalty``;
* :mod:`nlprune.sensitivity` — ``sensitivity_scan``.

A *mask* is a boolean tensor with the shape of a parameter: ``True`` keeps the weight,
``False`` prunes it. Each name is documented in its own module.
"""

from __future__ import annotations

from . import masks, penalties, schedules, scores, sensitivity
from .masks import *  # noqa: F401,F403  (each module's __all__: the names listed above)
from .penalties import *  # noqa: F401,F403
from .schedules import *  # noqa: F401,F403
from .scores import *  # noqa: F401,F403
from .sensitivity import *  # noqa: F401,F403

__all__ = [*scores.__all__, *masks.__all__, *schedules.__all__, *penalties.__all__, *sensitivity.__all__]
