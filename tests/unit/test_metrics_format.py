"""The Prometheus text exposition the registry renders."""
from __future__ import annotations

import pytest

from fleetcap.core.metrics import Registry


def test_render_counters_gauges_and_collectors():
    r = Registry()
    c = r.counter("fleetcap_x_total", "X things", ("method", "code"))
    g = r.gauge("fleetcap_y_bytes", "Y bytes")
    c.inc("Get", "OK")
    c.inc("Get", "OK", amount=2)
    c.inc("Create", 'NOT"FOUND\n')
    g.set(value=1.5)
    r.collector(lambda: [("fleetcap_z", "gauge", "Z", ("capture",), [(("a\\b",), 3)])])
    assert r.render() == (
        "# HELP fleetcap_x_total X things\n# TYPE fleetcap_x_total counter\n"
        'fleetcap_x_total{method="Create",code="NOT\\"FOUND\\n"} 1\n'
        'fleetcap_x_total{method="Get",code="OK"} 3\n'
        "# HELP fleetcap_y_bytes Y bytes\n# TYPE fleetcap_y_bytes gauge\nfleetcap_y_bytes 1.5\n"
        '# HELP fleetcap_z Z\n# TYPE fleetcap_z gauge\nfleetcap_z{capture="a\\\\b"} 3\n')


def test_counters_only_go_up():
    with pytest.raises(ValueError):
        Registry().counter("fleetcap_c_total", "c").inc(amount=-1)
