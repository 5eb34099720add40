#!/usr/bin/env python3
# Generates deploy/grafana/dashboards/*.json (Flux queries over Caretaker measurement, tag and field names).
# Edit here, run `python3 scripts/deploy/grafana_dashboards.py`, commit the JSON; tests/it/deploy.rs checks the
# queries against the shipped profiles.
import json, os
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy", "grafana", "dashboards")
DS = {"type": "influxdb", "uid": "caretaker-influxdb"}
SITE = 'r.site =~ /^${site:regex}$/'

def q(measurement_fields, agg="mean", group="device", every="v.windowPeriod", extra="", site=True, boolean=False):
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
    return s

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
         "targets": [{"refId": chr(65 + i), "datasource": DS, "query": qq} for i, qq in enumerate(queries)],
         "fieldConfig": {"defaults": {}, "overrides": []}}
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

def write(name, d):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(d, f, indent=2)
        f.write("\n")

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
            f'  |> filter(fn: (r) => {SITE})\n'
            '  |> aggregateWindow(every: 1d, fn: sum, createEmpty: false)\n'
            '  |> group(columns: ["device"])')
p = [
    panel("Daily consumption per meter (energy rollups)", "barchart", [energy_q], 0, 0, w=24, unit="kwatth",
          desc="The `energy` measurement Caretaker writes from counter and power points (interval consumption)"),
    panel("Power by device", "timeseries",
          [q(("electricity", ["power"])), q(("electricity", ["power_total"]))], 0, 8, unit="watt"),
    panel("Plug energy counters (kWh)", "timeseries",
          [q(("electricity", ["energy_total"]), agg="last", extra='  |> filter(fn: (r) => r.profile == "tasmota-energy-plug")\n')],
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
p = [
    panel("Open work orders by severity", "stat", [wo_open_now], 0, 0, w=8, h=6,
          desc="Last event of each alarm (rule, device, point) in the past 90 days: open = 1 until resolved",
          options={"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}),
    panel("Work-order events", "table",
          [wo_base + '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
           '  |> keep(columns: ["_time", "id", "event", "status", "severity", "rule", "device", "point", "team", "count", "value", "peak", "open"])\n'
           '  |> group()\n  |> sort(columns: ["_time"], desc: true)\n  |> limit(n: 200)'], 8, 0, w=16, h=12,
          desc="Every change (opened, updated, acknowledged, resolved), newest first, with the work order's count, last and peak value"),
    panel("Work orders opened per day by severity", "barchart",
          [wo_base + '  |> filter(fn: (r) => r._field == "id" and r.event == "opened")\n'
           '  |> aggregateWindow(every: 1d, fn: count, createEmpty: false)\n  |> group(columns: ["severity"])'],
          0, 6, w=8, h=6),
    panel("Work orders by rule (events)", "barchart",
          [wo_base + '  |> filter(fn: (r) => r._field == "id")\n  |> group(columns: ["rule", "event"])\n  |> count()'],
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
p = [
    panel("Readings per minute by measurement", "timeseries",
          [all_q + '  |> keep(columns: ["_time", "_measurement"])\n  |> map(fn: (r) => ({r with _value: 1}))\n  |> group(columns: ["_measurement"])\n  |> aggregateWindow(every: 1m, fn: count, createEmpty: true)'],
          0, 0, w=12, desc="Every field value is one reading; a drop to zero means a source or Caretaker stopped"),
    panel("Readings per minute by device", "timeseries",
          [all_q + '  |> keep(columns: ["_time", "device"])\n  |> map(fn: (r) => ({r with _value: 1}))\n  |> group(columns: ["device"])\n  |> aggregateWindow(every: 1m, fn: count, createEmpty: true)'],
          12, 0, w=12),
    panel("Last reading per device", "table",
          [all_q + '  |> keep(columns: ["_time", "device", "profile"])\n  |> group(columns: ["device", "profile"])\n  |> last(column: "_time")\n  |> group()\n  |> sort(columns: ["_time"])'],
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
