#!/usr/bin/env python3
# Generates Caretaker's Grafana dashboards from one description (the panels below), in two query languages:
#   deploy/grafana/dashboards/*.json   Flux (InfluxDB 2.x; the compose stack's datasource `caretaker-influxdb`)
#   deploy/grafana/influxql/*.json     InfluxQL (InfluxDB 1.x, and 2.x/3.x through their v1 query API;
#                                      datasource `caretaker-influxql`)
# and the self-metrics dashboard over Caretaker's Prometheus metrics (/metrics):
#   deploy/grafana/prometheus/caretaker-self.json   (datasource `caretaker-prometheus`)
# Every panel's query is written once per language next to the other (`both(flux, influxql)`), or built by q() /
# q_any(), which emit both from one (measurement, fields, aggregate, group) description.
# Edit here, run `python3 scripts/deploy/grafana_dashboards.py`, commit the JSON. `--check` exits 1 when the
# committed files differ from what this script generates (tests/it/deploy.rs runs it); tests/it/deploy.rs checks
# the Flux queries' names against the shipped profiles, tests/it/dashboards.rs runs every InfluxQL query against
# a real InfluxDB 1.x holding data Caretaker wrote.
import json, os, sys
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "grafana")
OUT = os.path.join(ROOT, "dashboards")
OUT_IQL = os.path.join(ROOT, "influxql")
OUT_PROM = os.path.join(ROOT, "prometheus")
DS = {"type": "influxdb", "uid": "caretaker-influxdb"}
DS_IQL = {"type": "influxdb", "uid": "caretaker-influxql"}
DS_PROM = {"type": "prometheus", "uid": "caretaker-prometheus"}
SITE = 'r.site =~ /^${site:regex}$/'
SITE_IQL = '"site" =~ /^$site$/'
CHECK = "--check" in sys.argv
DIFFERENT = []


class Q(str):
    """A Flux query (the str) carrying its InfluxQL twin (`.iql`)."""


def both(flux, iql):
    x = Q(flux)
    x.iql = iql
    return x


def iql_select(measurements, fields, fn, group="device", every="$__interval", where=""):
    """One InfluxQL SELECT: fn of each field, site filter, GROUP BY time and a tag."""
    frm = ", ".join(f'"{m}"' for m in measurements)
    sel = ", ".join(f'{fn}("{f}") AS "{f}"' for f in fields)
    w = f"$timeFilter AND {SITE_IQL}" + (f" AND {where}" if where else "")
    g = []
    if every:
        g.append(f"time({every})")
    if group:
        g.append(f'"{group}"')
    s = f"SELECT {sel} FROM {frm} WHERE {w}"
    if g:
        s += " GROUP BY " + ", ".join(g)
    if every:
        s += " fill(none)"
    return s

def q(measurement_fields, agg="mean", group="device", every="v.windowPeriod", extra="", site=True, boolean=False,
      where=""):
    """Flux and InfluxQL for fields of one measurement. `extra` is Flux only: `where` is its InfluxQL condition
    (an `extra` of `|> last()` is a plain last value in InfluxQL)."""
    m, fields = measurement_fields
    # InfluxQL aggregates booleans only with first/last/count: a bool field's window shows its last state.
    fn = "last" if (boolean or not agg) else agg
    iql = iql_select([m], fields, fn, group=group,
                     every=None if not agg else ("$__interval" if every == "v.windowPeriod" else every),
                     where=where)
    return both(q_flux(measurement_fields, agg, group, every, extra, site, boolean), iql)


def q_flux(measurement_fields, agg, group, every, extra, site, boolean):
    m, fields = measurement_fields
    ff = " or ".join(f'r._field == "{f}"' for f in fields)
    flt = f'r._measurement == "{m}" and ({ff})'
    s = "from(bucket: v.defaultBucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
    s += f"  |> filter(fn: (r) => {flt})\n"
    if site:
        s += f"  |> filter(fn: (r) => {SITE})\n"
    if extra:
        s += extra
    if boolean:
        # Caretaker writes bool points as InfluxDB booleans; aggregates need numbers.
        s += "  |> toFloat()\n"
    if agg:
        s += f"  |> aggregateWindow(every: {every}, fn: {agg}, createEmpty: false)\n"
    if group:
        s += f'  |> group(columns: ["{group}", "_field"])\n'
    return s.rstrip("\n")

def q_any(measurements, field, agg="max", group="device", boolean=True):
    """One field across several measurements (e.g. the per-device `online` point of every Modbus profile)."""
    mm = " or ".join(f'r._measurement == "{m}"' for m in measurements)
    s = "from(bucket: v.defaultBucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
    s += f'  |> filter(fn: (r) => ({mm}) and r._field == "{field}")\n'
    s += f"  |> filter(fn: (r) => {SITE})\n"
    if boolean:
        s += "  |> toFloat()\n"
    s += f"  |> aggregateWindow(every: v.windowPeriod, fn: {agg}, createEmpty: false)\n"
    s += f'  |> group(columns: ["{group}"])'
    return both(s, iql_select(measurements, [field], "last" if boolean else agg, group=group))

# Modbus profiles shipped in device_profiles/ (tests/it/deploy.rs checks every name against them).
BALLASTS = range(16)  # intesis-dali-gateway reads ballasts 0..15 of line 0
LEVELS = [f"ballast_{i:02d}_level" for i in BALLASTS]
FAILURES = [f"ballast_{i:02d}_{k}_failure" for i in BALLASTS for k in ("lamp", "gear")]
MODBUS_CATEGORIES = ["electricity", "hvac", "lighting", "heat"]
ONLINE_MAP = {"mappings": [{"type": "value", "options": {"0": {"text": "offline", "color": "red"},
                                                         "1": {"text": "online", "color": "green"}}}]}

pid = [0]
def panel(title, typ, queries, x, y, w=12, h=8, unit=None, desc=None, options=None, field_extra=None):
    pid[0] += 1
    p = {"id": pid[0], "type": typ, "title": title, "datasource": DS,
         "gridPos": {"x": x, "y": y, "w": w, "h": h},
         "targets": [{"refId": chr(65 + i), "datasource": DS, "query": str(qq)} for i, qq in enumerate(queries)],
         "fieldConfig": {"defaults": {}, "overrides": []}}
    p["_iql"] = [qq.iql for qq in queries]
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    if field_extra:
        p["fieldConfig"]["defaults"].update(field_extra)
    if desc:
        p["description"] = desc
    if options:
        p["options"] = options
    return p

def site_var():
    return {"name": "site", "label": "Site", "type": "query", "datasource": DS,
            "query": 'import "influxdata/influxdb/schema"\nschema.tagValues(bucket: v.defaultBucket, tag: "site")',
            "includeAll": True, "multi": True, "current": {"text": "All", "value": "$__all"}, "refresh": 1}

def dash(uid, title, desc, panels, tags):
    return {"uid": uid, "title": title, "description": desc, "tags": ["caretaker"] + tags,
            "timezone": "browser", "schemaVersion": 39, "version": 1, "editable": True,
            "refresh": "30s", "time": {"from": "now-24h", "to": "now"},
            "templating": {"list": [site_var()]}, "annotations": {"list": []}, "panels": panels}

def emit(path, d):
    text = json.dumps(d, indent=2) + "\n"
    if CHECK:
        try:
            with open(path) as f:
                same = f.read() == text
        except OSError:
            same = False
        if not same:
            DIFFERENT.append(path)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def to_influxql(d):
    """The same dashboard with InfluxQL targets and the InfluxQL datasource."""
    d = json.loads(json.dumps(d))
    d["uid"] = d["uid"] + "-influxql"
    d["title"] = d["title"] + " (InfluxQL)"
    d["tags"] = d["tags"] + ["influxql"]
    var = d["templating"]["list"][0]
    var["datasource"] = DS_IQL
    var["query"] = 'SHOW TAG VALUES WITH KEY = "site"'
    for p in d["panels"]:
        p["datasource"] = DS_IQL
        p["targets"] = [{"refId": chr(65 + i), "datasource": DS_IQL, "query": qq, "rawQuery": True,
                         "resultFormat": "table" if p["type"] == "table" else "time_series"}
                        for i, qq in enumerate(p.pop("_iql"))]
    return d


def write(name, d):
    iql = to_influxql(d)
    for p in d["panels"]:
        p.pop("_iql", None)
    emit(os.path.join(OUT, name), d)
    emit(os.path.join(OUT_IQL, name), iql)

# ---- site overview ----
pid[0] = 0
p = [
    panel("Room temperature", "timeseries", [q(("environment", ["temperature"]))], 0, 0, unit="celsius",
          desc="environment.temperature per device (room sensors, Zigbee sensors)"),
    panel("CO2", "timeseries", [q(("environment", ["co2"]))], 12, 0, unit="ppm",
          desc="environment.co2: above ~1000 ppm a room needs more fresh air"),
    panel("Humidity", "timeseries", [q(("environment", ["humidity"]))], 0, 8, unit="percent"),
    panel("Occupancy", "state-timeline", [q(("environment", ["occupancy"]), agg="max", boolean=True)], 12, 8),
    panel("Electrical power", "timeseries",
          [q(("electricity", ["power"])), q(("electricity", ["power_total"]))], 0, 16, unit="watt",
          desc="electricity.power (plugs, switches) and power_total (three-phase meters)"),
    panel("Water leaks (last state)", "stat",
          [q(("water", ["water_leak"]), agg=None, extra="  |> last()\n", boolean=True)], 12, 16, w=12,
          options={"colorMode": "background", "reduceOptions": {"calcs": ["lastNotNull"]}},
          field_extra={"mappings": [{"type": "value", "options": {"0": {"text": "dry", "color": "green"},
                                                                  "1": {"text": "LEAK", "color": "red"}}}]}),
    panel("AHU supply and return air", "timeseries",
          [q(("hvac", ["supply_air_temp", "return_air_temp"]))], 0, 24, unit="celsius",
          desc="hvac.supply_air_temp and return_air_temp of air-handling units (generic-ahu over Modbus)"),
    panel("AHU filter differential pressure", "timeseries", [q(("hvac", ["filter_dp"]))], 12, 24, unit="pressurepa",
          desc="hvac.filter_dp: rising pressure across the filter means it is clogging (rule ahu-filter-clogged)"),
    panel("AHU fan power", "timeseries", [q(("hvac", ["fan_power"]))], 0, 32, unit="kwatt",
          desc="hvac.fan_power"),
    panel("Lighting: dimming level per ballast", "timeseries", [q(("lighting", LEVELS))], 12, 32, unit="percent",
          desc="lighting.ballast_NN_level of DALI gateways (intesis-dali-gateway, ballasts 00-15)"),
    panel("Lighting: lamp and control gear failures", "state-timeline",
          [q(("lighting", FAILURES), agg="max", boolean=True)], 0, 40, w=24,
          desc="lighting.ballast_NN_lamp_failure / gear_failure: 1 = failed",
          field_extra={"mappings": [{"type": "value", "options": {"0": {"text": "ok", "color": "green"},
                                                                  "1": {"text": "FAILED", "color": "red"}}}]}),
]
write("site-overview.json", dash("caretaker-site-overview", "Caretaker: site overview",
      "Rooms, power and leaks across the site", p, ["overview"]))

# ---- energy ----
pid[0] = 0
energy_q = ('from(bucket: v.defaultBucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
            '  |> filter(fn: (r) => r._measurement == "energy" and r._field == "consumption" and r.unit == "kWh")\n'
            '  |> filter(fn: (r) => not exists r.role)\n'
            f'  |> filter(fn: (r) => {SITE})\n'
            '  |> aggregateWindow(every: 1d, fn: sum, createEmpty: false)\n'
            '  |> group(columns: ["device"])')
# Export and generation meters (tag `role`) are not consumption: an absent tag is '' in InfluxQL.
energy_q = both(energy_q, iql_select(["energy"], ["consumption"], "sum", every="1d",
                                     where=""""unit" = 'kWh' AND "role" = ''"""))
p = [
    panel("Daily consumption per meter (energy rollups)", "barchart", [energy_q], 0, 0, w=24, unit="kwatth",
          desc="The `energy` measurement Caretaker writes from counter and power points (interval consumption)"),
    panel("Power by device", "timeseries",
          [q(("electricity", ["power"])), q(("electricity", ["power_total"]))], 0, 8, unit="watt"),
    panel("Plug energy counters (kWh)", "timeseries",
          [q(("electricity", ["energy_total"]), agg="last", extra='  |> filter(fn: (r) => r.profile == "tasmota-energy-plug")\n',
             where=""""profile" = 'tasmota-energy-plug'""")],
          12, 8, unit="kwatth", desc="Raw kWh counters of Tasmota plugs (Shelly counts Wh: shown in the rollups)"),
    panel("Power factor", "timeseries", [q(("electricity", ["power_factor"]))], 0, 16, w=12),
    panel("Voltage", "timeseries", [q(("electricity", ["voltage"]))], 12, 16, w=12, unit="volt"),
    panel("AHU fan power", "timeseries", [q(("hvac", ["fan_power"]))], 0, 24, w=12, unit="kwatt",
          desc="hvac.fan_power of air-handling units: the largest electrical loads most buildings have"),
]
write("energy.json", dash("caretaker-energy", "Caretaker: energy",
      "Consumption per meter, power and counters", p, ["energy"]))

# ---- work orders ----
# The `work_orders` measurement (src/work_orders/influx.rs): one point per change; tags site, rule, device,
# point, severity, team, event (opened/updated/acknowledged/resolved), status; fields id, count, value, peak,
# open (1 until resolved). tests/it/deploy.rs checks these names against what the code writes.
pid[0] = 0
wo_base = ('from(bucket: v.defaultBucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
           '  |> filter(fn: (r) => r._measurement == "work_orders")\n'
           f'  |> filter(fn: (r) => {SITE})\n')
wo_open_now = ('from(bucket: v.defaultBucket)\n  |> range(start: -90d)\n'
               '  |> filter(fn: (r) => r._measurement == "work_orders" and r._field == "open")\n'
               f'  |> filter(fn: (r) => {SITE})\n'
               '  |> group(columns: ["site", "rule", "device", "point"])\n  |> sort(columns: ["_time"])\n  |> last()\n'
               '  |> group(columns: ["severity"])\n  |> sum()')
WO_WHERE = f"$timeFilter AND {SITE_IQL}"
wo_open_now = both(wo_open_now,
                   'SELECT sum("open") AS "open" FROM (SELECT last("open") AS "open" FROM "work_orders" '
                   f'WHERE time > now() - 90d AND {SITE_IQL} GROUP BY "site", "rule", "device", "point", "severity") '
                   'GROUP BY "severity"')
p = [
    panel("Open work orders by severity", "stat", [wo_open_now], 0, 0, w=8, h=6,
          desc="Last event of each alarm (rule, device, point) in the past 90 days: open = 1 until resolved",
          options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}),
    panel("Work-order events", "table",
          [both(wo_base + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
                '  |> keep(columns: ["_time", "id", "event", "status", "severity", "rule", "device", "point", "team", "count", "value", "peak", "open"])\n'
                '  |> group()\n  |> sort(columns: ["_time"], desc: true)\n  |> limit(n: 200)',
                'SELECT "id", "event", "status", "severity", "rule", "device", "point", "team", "count", "value", '
                f'"peak", "open" FROM "work_orders" WHERE {WO_WHERE} ORDER BY time DESC LIMIT 200')], 8, 0, w=16, h=12,
          desc="Every change (opened, updated, acknowledged, resolved), newest first, with the work order's count, last and peak value"),
    panel("Work orders opened per day by severity", "barchart",
          [both(wo_base + '  |> filter(fn: (r) => r._field == "id" and r.event == "opened")\n'
                '  |> aggregateWindow(every: 1d, fn: count, createEmpty: false)\n  |> group(columns: ["severity"])',
                f"""SELECT count("id") AS "opened" FROM "work_orders" WHERE {WO_WHERE} AND "event" = 'opened' """
                'GROUP BY time(1d), "severity" fill(none)')],
          0, 6, w=8, h=6),
    panel("Work orders by rule (events)", "barchart",
          [both(wo_base + '  |> filter(fn: (r) => r._field == "id")\n  |> group(columns: ["rule", "event"])\n  |> count()',
                f'SELECT count("id") AS "events" FROM "work_orders" WHERE {WO_WHERE} GROUP BY "rule", "event"')],
          0, 12, w=12, h=8),
    panel("Leak sensors (evidence)", "state-timeline", [q(("water", ["water_leak"]), agg="max", boolean=True)], 12, 12, w=12),
    panel("Room temperature (evidence for stuck sensors)", "timeseries", [q(("environment", ["temperature"]))],
          0, 20, w=12, unit="celsius"),
    panel("AHU filter differential pressure (evidence)", "timeseries", [q(("hvac", ["filter_dp"]))],
          12, 20, w=12, unit="pressurepa"),
]
write("work-orders.json", dash("caretaker-work-orders", "Caretaker: work orders",
      "Work orders raised by rules, with the readings behind them", p, ["work-orders"]))

# ---- gateway health ----
pid[0] = 0
all_q = ('from(bucket: v.defaultBucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
         f'  |> filter(fn: (r) => {SITE})\n')
# InfluxQL has no "every field of every measurement" count: it counts per field (count(*)), over the measurements
# Caretaker writes readings to (the device categories).
READINGS = "/^(electricity|water|heat|hvac|lighting|environment|gas|other)$/"
p = [
    panel("Readings per minute by measurement", "timeseries",
          [both(all_q + '  |> keep(columns: ["_time", "_measurement"])\n  |> map(fn: (r) => ({r with _value: 1}))\n  |> group(columns: ["_measurement"])\n  |> aggregateWindow(every: 1m, fn: count, createEmpty: true)',
                f"SELECT count(*) FROM {READINGS} WHERE $timeFilter AND {SITE_IQL} GROUP BY time(1m)")],
          0, 0, w=12, desc="Every field value is one reading; a drop to zero means a source or Caretaker stopped"),
    panel("Readings per minute by device", "timeseries",
          [both(all_q + '  |> keep(columns: ["_time", "device"])\n  |> map(fn: (r) => ({r with _value: 1}))\n  |> group(columns: ["device"])\n  |> aggregateWindow(every: 1m, fn: count, createEmpty: true)',
                f'SELECT count(*) FROM {READINGS} WHERE $timeFilter AND {SITE_IQL} GROUP BY time(1m), "device"')],
          12, 0, w=12),
    panel("Last reading per device", "table",
          [both(all_q + '  |> keep(columns: ["_time", "device", "profile"])\n  |> group(columns: ["device", "profile"])\n  |> last(column: "_time")\n  |> group()\n  |> sort(columns: ["_time"])',
                f'SELECT last(*) FROM {READINGS} WHERE $timeFilter AND {SITE_IQL} GROUP BY "device", "profile"')],
          0, 8, w=12, desc="Oldest first: devices at the top have been silent longest"),
    panel("Zigbee battery", "timeseries",
          [q(("water", ["battery"])), q(("environment", ["battery"]))], 12, 8, w=12, unit="percent"),
    panel("Zigbee link quality", "timeseries",
          [q(("water", ["link_quality"])), q(("environment", ["link_quality"]))], 12, 16, w=12),
    panel("Modbus devices online", "state-timeline", [q_any(MODBUS_CATEGORIES, "online", agg="min")], 0, 16, w=12,
          desc="The `online` point Caretaker adds to every Modbus device: 0 after `offline_after` failed polls",
          field_extra=ONLINE_MAP),
]
write("gateway-health.json", dash("caretaker-gateway-health", "Caretaker: gateway health",
      "Is data arriving? Readings per minute, silent devices, radio health. Caretaker's own metrics are on :9464/metrics",
      p, ["health"]))

# ---- Caretaker's own metrics (Prometheus, scraped from /metrics) ----
# Names as src/telemetry.rs and the stages register them; deploy/prometheus/caretaker-alerts.yaml alerts on the
# same expressions.
pid[0] = 0


def prom(title, typ, exprs, x, y, w=12, h=8, unit=None, desc=None):
    pid[0] += 1
    p = {"id": pid[0], "type": typ, "title": title, "datasource": DS_PROM,
         "gridPos": {"x": x, "y": y, "w": w, "h": h},
         "targets": [{"refId": chr(65 + i), "datasource": DS_PROM, "expr": e, "legendFormat": lf}
                     for i, (e, lf) in enumerate(exprs)],
         "fieldConfig": {"defaults": {"unit": unit} if unit else {}, "overrides": []}}
    if desc:
        p["description"] = desc
    return p


INST = 'instance=~"$instance"'
p = [
    prom("Spool size on disk", "timeseries", [(f"caretaker_spool_bytes{{{INST}}}", "{{instance}}")], 0, 0,
         unit="bytes", desc="Readings waiting on disk for InfluxDB; grows while InfluxDB is unreachable"),
    prom("Oldest unsent reading", "timeseries",
         [(f"caretaker_influx_oldest_unsent_seconds{{{INST}}}", "{{instance}}")], 12, 0, unit="s",
         desc="Age of the oldest reading not yet acknowledged by InfluxDB: how far behind dashboards are"),
    prom("Readings dropped per second", "timeseries",
         [(f"sum by (instance, stage, reason) (rate(caretaker_readings_dropped_total{{{INST}}}[5m]))",
           "{{instance}} {{stage}} {{reason}}")], 0, 8,
         unit="short", desc="Never silent: every dropped reading is counted with its stage and reason"),
    prom("Modbus errors per second", "timeseries",
         [(f"sum by (instance, device) (rate(caretaker_modbus_errors_total{{{INST}}}[5m]))", "{{instance}} {{device}}")],
         12, 8, unit="short", desc="Failed Modbus requests (timeouts, exceptions, connection errors) per device"),
    prom("Readings received and written per second", "timeseries",
         [(f"sum by (instance) (rate(caretaker_readings_received_total{{{INST}}}[5m]))", "{{instance}} received"),
          (f"sum by (instance) (rate(caretaker_readings_written_total{{{INST}}}[5m]))", "{{instance}} written")],
         0, 16, unit="short"),
    prom("Errors per second by stage", "timeseries",
         [(f"sum by (instance, stage) (rate(caretaker_errors_total{{{INST}}}[5m]))", "{{instance}} {{stage}}")],
         12, 16, unit="short"),
    prom("Spool disk full", "stat", [(f"max by (instance) (caretaker_spool_disk_full{{{INST}}})", "{{instance}}")],
         0, 24, w=8, h=6),
    prom("Work-order deliveries waiting", "stat",
         [(f"sum by (instance) (caretaker_work_order_outbox_pending{{{INST}}})", "{{instance}}")], 8, 24, w=8, h=6),
    prom("Devices online", "stat", [(f"sum by (instance) (caretaker_device_online{{{INST}}})", "{{instance}}")],
         16, 24, w=8, h=6),
]
self_dash = {"uid": "caretaker-self", "title": "Caretaker: self-metrics",
             "description": "Caretaker's own health from its Prometheus metrics (/metrics on the [http] listener)",
             "tags": ["caretaker", "self-metrics"], "timezone": "browser", "schemaVersion": 39, "version": 1,
             "editable": True, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
             "templating": {"list": [{"name": "instance", "label": "Instance", "type": "query", "datasource": DS_PROM,
                                      "query": "label_values(caretaker_spool_bytes, instance)", "includeAll": True,
                                      "multi": True, "current": {"text": "All", "value": "$__all"}, "refresh": 1}]},
             "annotations": {"list": []}, "panels": p}
emit(os.path.join(OUT_PROM, "caretaker-self.json"), self_dash)

if CHECK:
    if DIFFERENT:
        print("out of date (run python3 scripts/deploy/grafana_dashboards.py):\n  " + "\n  ".join(DIFFERENT))
        sys.exit(1)
    print("dashboards up to date")
