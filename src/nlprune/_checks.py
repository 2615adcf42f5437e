"""Argument checks shared by the PyTorch and Keras modules, so both give the same message.

Every check raises ``TypeError`` for a value of the wrong kind and ``ValueError`` for a value
of the right kind outside the allowed range, naming the argument and what is allowed. Python
numbers and NumPy scalars are accepted alike (``numbers.Real``, ``operator.index``).
"""

from __future__ import annotations

import numbers
import operator
from collections.abc import Iterable


def real(value: object, name: str) -> float:
    """``value`` as a ``float``; ``TypeError`` unless it is a real number (bools are not).

    NaN passes this check; the range checks below reject it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    return float(value)


def integer(value: object, name: str) -> int:
    """``value`` as an ``int``; ``TypeError`` unless it is an integer (``operator.index``)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None


def fraction(value: object, name: str, *, upper_open: bool = False) -> float:
    """A number in ``[0, 1]`` (or ``[0, 1)`` with ``upper_open``) as a ``float``."""
    value = real(value, name)
    if not 0.0 <= value <= 1.0 or (upper_open and value == 1.0):  # NaN fails too
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return value


def positive(value: object, name: str) -> float:
    """A real number ``> 0`` as a ``float`` (e.g. the ``p`` of an Lp norm)."""
    value = real(value, name)
    if not value > 0:  # NaN fails too
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return value


def dimension(value: object, ndim: int, name: str = "dim") -> int:
    """A dimension index of a tensor with ``ndim`` dimensions, normalised to ``[0, ndim)``."""
    value = integer(value, name)
    if not -ndim <= value < ndim:
        raise ValueError(f"{name} must be in [{-ndim}, {ndim - 1}] for a {ndim}-D weight, got {value!r}")
    return value % ndim


def at_least(value: object, name: str, low: int) -> int:
    """An integer ``>= low`` as an ``int``; ``TypeError`` for a non-integer, ``ValueError`` below ``low``."""
    value = integer(value, name)
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def nonnegative(value: object, name: str) -> float:
    """A real number ``>= 0`` as a ``float`` (e.g. the strength of a penalty)."""
    value = real(value, name)
    if not value >= 0:  # NaN fails too
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def known_names(names: Iterable[str], available: Iterable[str], what: str = "parameters",
                argument: str = "names") -> list[str]:
    """``names`` as a list; ``ValueError`` listing those that are not in ``available``.

    ``argument`` is the caller's name for ``names`` (``"names"``, ``"groups"``, ``"final"``, …),
    so that the message names the argument the caller passed."""
    names, available = list(names), list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"{argument} contains {what} the model does not have: {unknown}; "
                         f"the model has {available}")
    return names


def indices(keep: object, size: int, name: str = "keep") -> list[int]:
    """``keep`` as a list of distinct unit indices in ``range(size)``.

    Accepts a sequence of integers (Python or NumPy), or a 1-D integer array of NumPy, PyTorch or
    TensorFlow (anything with ``.tolist()`` and an integer ``dtype``); no framework is imported
    here, so the PyTorch and Keras cutting modules share this check.

    Raises:
        TypeError: ``keep`` is a boolean or floating-point array, not 1-D, or holds non-integers.
        ValueError: ``keep`` is empty, has duplicates or indices outside ``[0, size - 1]``.

    Example:
        >>> indices([2, 0], 3)
        [2, 0]
    """
    if hasattr(keep, "dtype") and hasattr(keep, "tolist"):  # an array of some framework
        kind = str(keep.dtype).lower()
        shape = tuple(getattr(keep, "shape", ()))
        if "bool" in kind or "float" in kind or "complex" in kind or len(shape) != 1:
            raise TypeError(f"{name} must be a 1-D sequence of integer indices, got a {keep.dtype} "
                            f"array of shape {shape}")
        keep = keep.tolist()
    items = list(keep)
    try:
        items = [integer(i, name) for i in items]
    except TypeError:
        raise TypeError(f"{name} must be a sequence of integer indices, got {items[:5]!r}") from None
    if not items:
        raise ValueError(f"{name} is empty: keep at least one unit")
    if min(items) < 0 or max(items) >= size:
        raise ValueError(f"{name} must hold indices in [0, {size - 1}], got min {min(items)} "
                         f"and max {max(items)}")
    if len(set(items)) != len(items):
        raise ValueError(f"{name} holds duplicate indices")
    return items


def mask_matches(name: str, mask_shape: tuple, target_shape: tuple, available: Iterable[str],
                 what: str = "parameter") -> None:
    """A mask for ``name`` must name a ``what`` (parameter, variable) of the model and have its shape."""
    available = list(available)
    if name not in available:
        raise ValueError(f"mask {name!r} names no {what} of the model; it has {available}")
    if tuple(mask_shape) != tuple(target_shape):
        raise ValueError(f"mask {name!r} has shape {tuple(mask_shape)} but the {what} has shape "
                         f"{tuple(target_shape)}")
