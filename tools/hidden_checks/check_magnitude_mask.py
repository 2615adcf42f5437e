import random as _random

_rng = _random.Random()  # seeded by the system: new sizes at every grading
_cases = [((4, 5), 0.0), ((4, 5), 1.0), ((5,), 0.7), ((25,), 0.3), ((3, 7), 0.5)]
_cases += [((_rng.randint(1, 9), _rng.randint(1, 40)), _rng.random()) for _ in range(5)]
for _shape, _s in _cases:
    _w = torch.randn(_shape)
    _n, _k = _w.numel(), round(_s * _w.numel())
    _got = magnitude_mask(_w.abs(), _s)
    assert tuple(_got.shape) == _shape and _got.dtype == torch.bool, (
        f"hidden check, shape {_shape}: return a bool tensor of that shape")
    _pruned = int((~_got).sum())
    assert _pruned == _k, (
        f"hidden check: sparsity {_s:.3f} of {_n} weights prunes round({_s * _n:.2f}) = {_k}; "
        f"yours prunes {_pruned}")
    if 0 < _k < _n:
        assert _w.abs()[~_got].max() < _w.abs()[_got].min(), (
            f"hidden check, shape {_shape}: a pruned |w| is larger than a kept one")
print("hidden checks of magnitude_mask passed")
