"""Prices: the tariff's currency is a label on the plan, and prices sent over MQTT override the tariff.

`forecast/price_electricity` (and `forecast/price_gas` where the site has a gas tariff) carry
`{"start", "step", "values"}` in the tariff's currency per kWh; value i holds over [start + i step,
start + (i+1) step). Where such a forecast covers the horizon the MPC plans with it; elsewhere the tariff.
"""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from controller.core import CycleInputs
from controller.daemon.assemble import build_site_controller
from controller.daemon.settings import load_site
from controller.disturbances import prices_over
from drivers.payloads import parse_forecast
from models.series import ConstantSeries

ROOT = Path(__file__).resolve().parents[1]
HOUSE = ROOT / "config" / "sites" / "house-1.yaml"
T0 = 1_767_250_800.0  # 2026-01-01 00:00 America/Chicago
UTC = ZoneInfo("UTC")


def test_price_forecast_is_a_step_function_over_what_it_covers() -> None:
    tariff = ConstantSeries(0.10, "EUR/kWh")
    fc = parse_forecast(b'{"start": 1000, "step": 100, "values": [0.5, -0.2, 0.3]}')
    t = np.array([900.0, 1000.0, 1099.0, 1100.0, 1250.0, 1299.0, 1300.0])
    prices, covered = prices_over(tariff, t, UTC, fc)
    assert prices.tolist() == pytest.approx([0.10, 0.5, 0.5, -0.2, 0.3, 0.3, 0.10])
    assert covered == pytest.approx(5 / 7)
    prices, covered = prices_over(tariff, t, UTC, None)
    assert prices.tolist() == pytest.approx([0.10] * 7) and covered == 0.0


@pytest.fixture(scope="module")
def house():
    site = load_site(HOUSE, ["tariff.currency=EUR", "tariff.electricity={constant: 0.25, unit: EUR/kWh}"],
                     environ={})
    return build_site_controller(site)


def _cycle(ctrl, t: float, forecasts: dict):
    sensors = {s: (20.5, t - 5) for s in ctrl.sensor_ids}
    return ctrl.cycle(CycleInputs(t, sensors, forecasts), lambda: 0.0, float("inf"))


def test_mqtt_prices_override_the_tariff_over_the_horizon(house) -> None:
    ctrl = house
    assert ctrl.currency == "EUR"
    assert ctrl.forecast_units["price_electricity"] == "EUR/kWh"  # the service accepts the topic
    assert "price_gas" not in ctrl.forecast_units  # no gas tariff: nothing would use it
    saved = ctrl.export_state()
    out = _cycle(ctrl, T0, {})
    assert out.plan["currency"] == "EUR"
    assert out.plan["price_el"] == pytest.approx([0.25] * ctrl.horizon)
    assert out.diagnostics["forecast_sources"]["price_electricity"] == "tariff"
    u_tariff = np.array(out.plan["setpoints"])

    ctrl.import_state(saved)
    # Expensive for the first six hours, free after: the plan must see exactly these prices and move heat later.
    n = round(6 * 3600 / ctrl.step_s)
    values = [5.0] * n + [0.0] * (ctrl.horizon - n)
    fc = parse_forecast(f'{{"start": {T0}, "step": {ctrl.step_s}, "values": {values}}}'.encode())
    out = _cycle(ctrl, T0, {"price_electricity": fc})
    assert out.plan["price_el"] == pytest.approx(values)
    assert out.diagnostics["forecast_sources"]["price_electricity"] == "mqtt"
    u_mqtt = np.array(out.plan["setpoints"])
    assert u_mqtt[:n].sum() < u_tariff[:n].sum()  # heats less while the MQTT price is high

    ctrl.import_state(saved)
    half = parse_forecast(f'{{"start": {T0}, "step": {ctrl.step_s}, "values": [1.0, 2.0]}}'.encode())
    out = _cycle(ctrl, T0, {"price_electricity": half})
    assert out.plan["price_el"][:3] == pytest.approx([1.0, 2.0, 0.25])  # the tariff where it ends
    ctrl.import_state(saved)


def test_the_daemon_accepts_price_forecasts_and_plans_with_them(tmp_path) -> None:
    """Through the service's MQTT handler: `forecast/price_electricity` is accepted (it used to be counted
    'ignored' and dropped) and the next cycle's plan carries its prices and the tariff's currency."""
    import json

    from faults._common import T0 as T_SITE
    from faults._common import TOPICS, Harness, counter, real_site

    h = Harness(real_site(tmp_path, horizon=8))
    try:
        step = h.site.cfg.control.step_s
        values = [0.5, 0.6, 0.7, 0.8]
        payload = json.dumps({"start": T_SITE, "step": step, "values": values}).encode()
        h.bus.publish(TOPICS.forecast("price_electricity"), payload)
        assert counter(h.svc, "forecast", "accepted") == 1.0
        assert counter(h.svc, "forecast", "ignored") == 0.0
        h.sensors(T_SITE - 5, 21.0)
        ack = h.tick(T_SITE)
        assert ack["status"] == "mpc", ack
        plan = json.loads(h.bus.messages(TOPICS.root + "/plan")[-1].payload)
        assert plan["currency"] == "USD"
        assert plan["price_el"][:4] == pytest.approx(values)
        assert plan["price_el"][4:] != pytest.approx([0.8] * 4)  # the tariff after the forecast ends
    finally:
        h.stop()
