"""The demo's imperfect weather forecasts: error zero at issue, std growing with lead time to the configured
value at 24 h, multiplicative irradiance error that keeps night dark, seeded and reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from controller.tools.forecast_error import DEFAULT_ERRORS, LeadTimeError, NoisyForecaster

T0 = 1_768_197_600.0  # 2026-01-12 00:00 America/Chicago, a whole hour


def truth_temp(t: np.ndarray) -> np.ndarray:
    return -5.0 + 4.0 * np.sin(2 * np.pi * (np.asarray(t) - T0) / 86400.0)


def truth_sun(t: np.ndarray) -> np.ndarray:
    h = ((np.asarray(t) - T0) / 3600.0) % 24
    return np.where((h > 7) & (h < 17), 500.0 * np.sin(np.pi * (h - 7) / 10), 0.0)


def test_error_std_grows_with_lead_time_to_the_24h_value() -> None:
    model = DEFAULT_ERRORS["outdoor_temperature"]
    assert model.sigma(0.0) == 0.0
    assert model.sigma(86400.0) == pytest.approx(2.5)
    assert 0.6 < model.sigma(3600.0) < 0.9 and 1.5 < model.sigma(6 * 3600.0) < 1.9
    rng = np.random.default_rng(0)
    paths = np.stack([model.sample(97, 900.0, rng) for _ in range(3000)])
    assert np.all(paths[:, 0] == 0.0)
    std = paths.std(axis=0)
    leads = 900.0 * np.arange(97)
    # Sampling error of a std from 3000 draws is ~1.3 %; allow 5 %.
    np.testing.assert_allclose(std[1:], model.sigma(leads[1:]), rtol=0.05)
    assert std[96] > 3 * std[4]  # 24 h ahead is much worse than 1 h ahead
    assert abs(paths[:, 96].mean()) < 0.15  # unbiased
    assert DEFAULT_ERRORS["solar_irradiance"].sigma(86400.0) == pytest.approx(0.30)


def test_forecasts_cover_the_horizon_are_issued_hourly_and_reproducible() -> None:
    fc = NoisyForecaster({"outdoor_temperature": truth_temp, "solar_irradiance": truth_sun}, 86400.0, seed=7)
    t = T0 + 3600.0 * 30 + 1800.0
    a = fc.forecasts(t)
    assert sorted(a) == ["outdoor_temperature", "solar_irradiance"]
    for f in a.values():
        assert f.start == T0 + 3600.0 * 30 and f.step == 900.0 and f.end >= t + 86400.0
    # The same issue until the next hour; the same seed gives the same forecast, another seed another one.
    b = fc.forecasts(t + 900.0)
    np.testing.assert_array_equal(a["outdoor_temperature"].values, b["outdoor_temperature"].values)
    again = NoisyForecaster({"outdoor_temperature": truth_temp, "solar_irradiance": truth_sun}, 86400.0, seed=7)
    np.testing.assert_array_equal(again.forecasts(t)["solar_irradiance"].values, a["solar_irradiance"].values)
    other = NoisyForecaster({"outdoor_temperature": truth_temp}, 86400.0, seed=8).forecasts(t)
    assert not np.allclose(other["outdoor_temperature"].values, a["outdoor_temperature"].values)
    nxt = fc.forecasts(t + 3600.0)["outdoor_temperature"]
    assert nxt.start == a["outdoor_temperature"].start + 3600.0
    # Errors: zero at issue, then real; irradiance stays >= 0 and dark at night.
    temp, sun = a["outdoor_temperature"], a["solar_irradiance"]
    err = temp.values - truth_temp(temp.times)
    assert err[0] == 0.0 and np.abs(err[1:]).max() > 0.1
    assert np.all(sun.values >= 0.0)
    dark = truth_sun(sun.times) == 0.0
    assert dark.any() and np.all(sun.values[dark] == 0.0)


def test_zero_error_is_the_truth_and_unknown_channels_are_skipped() -> None:
    exact = {"outdoor_temperature": LeadTimeError(0.0), "wind": LeadTimeError(1.0)}
    fc = NoisyForecaster({"outdoor_temperature": truth_temp}, 3600.0, seed=1, errors=exact)
    f = fc.forecasts(T0)
    assert list(f) == ["outdoor_temperature"]
    np.testing.assert_allclose(f["outdoor_temperature"].values, truth_temp(f["outdoor_temperature"].times))
    assert fc.describe()["channels"]["outdoor_temperature"]["sigma_24h"] == 0.0
    with pytest.raises(ValueError):
        NoisyForecaster({}, 0.0, seed=1)
