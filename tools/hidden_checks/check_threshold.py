import random as _random

_rng = _random.Random()  # seeded by the system: new sizes at every grading
_cases = [((4, 5), 0.0), ((4, 5), 1.0), ((25,), 0.3), ((5,), 0.7), ((1, 1), 0.4)]
_cases += [((_rng.randint(1, 9), _rng.randint(1, 40)), _rng.random()) for _ in range(5)]
for _shape, _s in _cases:
    _w = torch.randn(_shape)
    _n, _k = _w.numel(), round(_s * _w.numel())
    _t = threshold(_w, _s)
    assert isinstance(_t, float), f"hidden check: return a Python float, got {type(_t).__name__}"
    _pruned = int((_w.abs() <= _t).sum())
    assert _pruned == _k, (
        f"hidden check: threshold(w, {_s:.3f}) on {_n} weights prunes {_pruned} (|w| <= tau); "
        f"sparsity {_s:.3f} prunes round({_s * _n:.2f}) = {_k}"
        + (": with k = 0 nothing may be pruned" if _k == 0 else ""))
print("hidden checks of threshold passed")
