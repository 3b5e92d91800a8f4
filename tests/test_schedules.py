"""Learning-rate schedules: hand-worked values at chosen steps."""

import numpy as np
import pytest

from ssd.engine.schedules import SSDLearningRate


def rates(schedule, steps):
    return np.array([float(schedule(s)) for s in steps])


def test_paper_step_schedule():
    s = SSDLearningRate("step", 1e-3, 120_000, boundaries=(80_000, 100_000), decay=0.1)
    np.testing.assert_allclose(rates(s, [0, 79_999, 80_000, 99_999, 100_000, 119_999]),
                               [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-5)


def test_exponential_per_epoch():
    s = SSDLearningRate("exponential", 1.0, 1000, steps_per_epoch=10, decay=0.5)
    np.testing.assert_allclose(rates(s, [0, 9, 10, 25]), [1.0, 1.0, 0.5, 0.25])


def test_polynomial_cosine_and_cyclic():
    poly = SSDLearningRate("polynomial", 1.0, 100, power=2.0, min_rate=0.1)
    np.testing.assert_allclose(rates(poly, [0, 50, 100, 200]), [1.0, 0.1 + 0.9 * 0.25, 0.1, 0.1], rtol=1e-6)
    cos = SSDLearningRate("cosine", 2.0, 100)
    np.testing.assert_allclose(rates(cos, [0, 50, 100]), [2.0, 1.0, 0.0], atol=1e-6)
    cyc = SSDLearningRate("cyclic", 1.0, 1000, cycle_steps=100, min_rate=0.2)
    np.testing.assert_allclose(rates(cyc, [0, 25, 50, 75, 100]), [0.2, 0.6, 1.0, 0.6, 0.2], rtol=1e-6)


def test_warmup_ramps_linearly_then_hands_over():
    s = SSDLearningRate("constant", 1.0, 1000, warmup_steps=4)
    np.testing.assert_allclose(rates(s, [0, 1, 2, 3, 4, 100]), [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_config_round_trip_and_errors():
    s = SSDLearningRate("step", 1e-3, 10, boundaries=(5,), warmup_steps=2)
    again = SSDLearningRate(**s.get_config())
    np.testing.assert_allclose(rates(again, range(10)), rates(s, range(10)))
    with pytest.raises(ValueError, match="schedule must be one of"):
        SSDLearningRate("linear", 1e-3, 10)
    with pytest.raises(ValueError, match="base_rate"):
        SSDLearningRate("step", 0.0, 10)
