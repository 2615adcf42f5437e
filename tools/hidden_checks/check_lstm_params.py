import random as _random

_rng = _random.Random()  # seeded by the system: new sizes at every grading
for _E, _H in [(1, 1), (7, 2)] + [(_rng.randint(1, 500), _rng.randint(1, 500)) for _ in range(5)]:
    _expected = sum(p.numel() for p in nn.LSTM(_E, _H, device="meta").parameters())
    assert lstm_params(_E, _H) == _expected, (
        f"hidden check: lstm_params({_E}, {_H}) returned {lstm_params(_E, _H)}; "
        f"nn.LSTM has {_expected}")
print("hidden checks of lstm_params passed")
