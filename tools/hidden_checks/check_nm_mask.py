import random as _random

_rng = _random.Random()  # seeded by the system: new sizes at every grading
_cases = [(1, 2, (1, 2)), (3, 4, (2, 8)), (2, 4, (7, 4))]
for _ in range(5):
    _m = _rng.choice([2, 4, 8])
    _cases.append((_rng.randint(1, _m - 1), _m, (_rng.randint(1, 9), _m * _rng.randint(1, 6))))
for _n, _m, _shape in _cases:
    _s = torch.rand(_shape)
    _got = nm_mask(_s, _n, _m)
    assert tuple(_got.shape) == _shape and _got.dtype == torch.bool, (
        f"hidden check, {_n}:{_m} on shape {_shape}: return a bool tensor of that shape")
    for _row in range(_shape[0]):  # brute force, one group at a time
        for _start in range(0, _shape[1], _m):
            _group = _s[_row, _start:_start + _m].tolist()
            _kept = sorted(range(_m), key=lambda j: -_group[j])[:_n]
            _want = [j in _kept for j in range(_m)]
            assert _got[_row, _start:_start + _m].tolist() == _want, (
                f"hidden check, {_n}:{_m} on shape {_shape}: row {_row}, group at column "
                f"{_start} should keep its {_n} largest scores")
print("hidden checks of nm_mask passed")
