#!/usr/bin/env python3
"""Guideline 36 fault flags: Caretaker (`caretaker backtest` over rules/g36-ahu.yaml) against the independent
implementation in open-fdd (PyPI, its `cookbook_catalog.fc1..fc13` pandas functions), both against the
simulator's scripted truth. Writes the tables of docs/fdd.md to stdout.

    python3 -m venv /tmp/fdd-venv && /tmp/fdd-venv/bin/pip install -r scripts/eval/requirements.txt
    cargo build --release
    /tmp/fdd-venv/bin/python scripts/eval/fdd_compare.py --caretaker target/release/caretaker --out /tmp/fdd

Steps: `caretaker simulate --export-csv` writes the AHU readings (scripts/eval/fdd-site.toml: one healthy unit
and one per scripted fault) and the truth labels; `caretaker backtest --format json` replays them through the
shipped rules; open-fdd's functions run on the same readings, pivoted to one row per minute with its role
names. Both get the same parameters (Guideline 36 defaults in SI units, as rules/g36-ahu.yaml) and the same
persistence: a flag counts once its raw condition held for 30 minutes (AlarmDelay), as Caretaker's `for: 30m`.
Sample = one minute of one AHU with the fan running.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Our point names -> open-fdd's role columns.
ROLES = {
    "supply_air_temp": "discharge-air-temp",
    "mixed_air_temp": "mixed-air-temp",
    "return_air_temp": "return-air-temp",
    "outdoor_air_temp": "outside-air-temp",
    "supply_air_setpoint": "discharge-air-temp-sp",
    "duct_static_pressure": "duct-static-pressure",
    "duct_static_setpoint": "duct-static-pressure-sp",
    "supply_fan_speed": "fan-cmd",
    "heating_valve": "heating-valve",
    "cooling_valve": "cooling-valve",
    "oa_damper": "outside-air-damper",
    "supply_airflow": "vav-total-airflow",
}

# Guideline 36 defaults in SI (as rules/g36-ahu.yaml), in open-fdd's parameter names. Positions are fractions.
PARAMS = {
    "eps_sat": 1.1, "eps_rat": 1.1, "eps_mat": 2.8, "eps_oat": 1.1, "delta_supply_fan": 1.1,
    "eps_dsp": 25.0, "eps_vfd_spd": 0.05, "delta_os_max": 7, "mode_delay_min": 15,
    "delta_t_min": 5.6, "eps_airflow": 0.30, "min_cfm_design": 1620.0,
    "econ_min_pos": 0.21, "econ_full_open": 0.99, "clg_on_min": 0.01, "htg_on_min": 0.01,
    "htg_full_min": 0.99, "clg_full_min": 0.99, "clg_inactive_max": 0.01, "fan_on_min": 0.01,
}

FCS = ["FC1", "FC2", "FC3", "FC4", "FC5", "FC6", "FC7", "FC8", "FC9", "FC10", "FC11", "FC12", "FC13"]

# Which fault conditions each scripted fault should raise (Guideline 36's own fault/condition table).
EXPECTED = {
    "static_pressure_loss": {"FC1"},
    "leaking_valve": {"FC5", "FC8"},
    "stuck_damper": {"FC6", "FC7"},
    "failed_sat_sensor": {"FC11", "FC12", "FC13"},
}

HOLD_MIN = 30


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def persistent(raw: pd.Series, minutes: int) -> pd.Series:
    """True where `raw` has held for `minutes` consecutive samples (one a minute), like a rule's `for`."""
    run_id = (~raw).cumsum()
    held = raw.astype(int).groupby(run_id).cumsum()  # 1 at the run's first True sample
    return raw & (held > minutes)


def prf(pred: pd.Series, ref: pd.Series):
    tp = int((pred & ref).sum())
    fp = int((pred & ~ref).sum())
    fn = int((~pred & ref).sum())
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    return tp, fp, fn, p, r


def fmt(x):
    return "-" if x != x else f"{x:.2f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--caretaker", default=os.path.join(REPO, "target/release/caretaker"))
    ap.add_argument("--out", default="/tmp/fdd-eval")
    ap.add_argument("--span", default="72h")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    csv = os.path.join(a.out, "ahu.csv")
    truth_csv = os.path.join(a.out, "ahu.truth.csv")
    run([a.caretaker, "simulate", "--site", os.path.join(HERE, "fdd-site.toml"), "--export-csv", csv,
         "--truth", truth_csv, "--model", "vav_ahu", "--span", a.span])
    wos = json.loads(run([a.caretaker, "backtest", "--config", os.path.join(HERE, "fdd-backtest.toml"),
                          "--input", csv, "--format", "json"]))

    long = pd.read_csv(csv, parse_dates=["timestamp"])
    wide = long.pivot_table(index=["device", "timestamp"], columns="point", values="value").reset_index()
    truth = pd.read_csv(truth_csv, parse_dates=["timestamp"])

    from open_fdd.rules import cookbook_catalog as cc

    rows = []
    for dev, d in wide.groupby("device"):
        d = d.sort_values("timestamp").set_index("timestamp")
        od = d.rename(columns=ROLES)
        fan_on = d["supply_fan_speed"] > 1.0
        flags = pd.DataFrame(index=d.index)
        flags["fan_on"] = fan_on
        for fc in FCS:
            fn = getattr(cc, fc.lower())
            raw = fn(od.copy(), dict(PARAMS), 60.0).reindex(d.index).fillna(False).astype(bool)
            flags[f"ofdd_{fc}"] = persistent(raw, HOLD_MIN) if fc != "FC4" else raw
            flags[f"ct_{fc}"] = False
        for w in wos:
            if w["device"] != dev or not w["rule"].startswith("g36-fc"):
                continue
            fc = "FC" + w["rule"].split("-")[1][2:]
            start = pd.Timestamp(w["opened_at"])
            end = pd.Timestamp(w["resolved_at"]) if w.get("resolved_at") else d.index[-1] + pd.Timedelta("1min")
            flags.loc[(flags.index >= start) & (flags.index < end), f"ct_{fc}"] = True
        t = truth[truth.device == dev]
        active = {k: set(g.timestamp) for k, g in t.groupby("fault")}
        for k in EXPECTED:
            flags[f"truth_{k}"] = flags.index.isin(active.get(k, set()))
        flags["device"] = dev
        rows.append(flags)
    f = pd.concat(rows)
    f = f[f.fan_on]
    n = len(f)

    print(f"Samples: {n} AHU-minutes with the fan running ({f.device.nunique()} AHUs, {a.span}).\n")
    print("Per fault condition: Caretaker against open-fdd (open-fdd's flags as the reference), minutes flagged.\n")
    print("| condition | Caretaker | open-fdd | both | precision | recall |")
    print("|---|---|---|---|---|---|")
    for fc in FCS:
        c, o = f[f"ct_{fc}"], f[f"ofdd_{fc}"]
        tp, fp, fn_, p, r = prf(c, o)
        if c.sum() == 0 and o.sum() == 0:
            print(f"| {fc} | 0 | 0 | 0 | - | - |")
            continue
        print(f"| {fc} | {int(c.sum())} | {int(o.sum())} | {tp} | {fmt(p)} | {fmt(r)} |")

    print("\nAgainst the scripted truth: a minute is a true positive when a fault is active and one of the conditions"
          " it should raise is flagged; any other flagged condition is a false positive.\n")
    print("| fault | minutes active | Caretaker recall | open-fdd recall | conditions flagged (Caretaker / open-fdd) |")
    print("|---|---|---|---|---|")
    truth_any = pd.Series(False, index=f.index)
    ct_ok = pd.Series(False, index=f.index)
    of_ok = pd.Series(False, index=f.index)
    for k, fcs in EXPECTED.items():
        tr = f[f"truth_{k}"]
        truth_any |= tr
        ct = f[[f"ct_{x}" for x in fcs]].any(axis=1) & tr
        of = f[[f"ofdd_{x}" for x in fcs]].any(axis=1) & tr
        ct_ok |= ct
        of_ok |= of
        seen_ct = sorted({x for x in FCS if (f[f"ct_{x}"] & tr).any()}, key=FCS.index)
        seen_of = sorted({x for x in FCS if (f[f"ofdd_{x}"] & tr).any()}, key=FCS.index)
        tr_n = int(tr.sum())
        print(f"| {k} | {tr_n} | {fmt(ct.sum() / tr_n if tr_n else float('nan'))} | "
              f"{fmt(of.sum() / tr_n if tr_n else float('nan'))} | {', '.join(seen_ct) or '-'} / {', '.join(seen_of) or '-'} |")
    for name, pre in [("Caretaker", "ct"), ("open-fdd", "ofdd")]:
        anyflag = f[[f"{pre}_{x}" for x in FCS]].any(axis=1)
        ok = ct_ok if pre == "ct" else of_ok
        tp = int(ok.sum())
        fp = int((anyflag & ~ok).sum())
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / int(truth_any.sum()) if truth_any.sum() else float("nan")
        healthy = int(anyflag[f.device == "ahu-healthy"].sum())
        print(f"\n{name}: precision {fmt(p)} ({tp} true / {fp} false positive minutes), recall {fmt(r)} of "
              f"{int(truth_any.sum())} fault minutes; {healthy} flagged minutes on the healthy AHU.")
    print("\nFlags per device (minutes):\n")
    print("| device | " + " | ".join(FCS) + " |")
    print("|---|" + "---|" * len(FCS))
    for dev, g in f.groupby("device"):
        cells = []
        for x in FCS:
            c, o = int(g[f"ct_{x}"].sum()), int(g[f"ofdd_{x}"].sum())
            cells.append("" if c == 0 and o == 0 else f"{c}/{o}")
        print(f"| {dev} | " + " | ".join(cells) + " |")
    print("\n(cells: Caretaker / open-fdd)")
    f.to_csv(os.path.join(a.out, "flags.csv"))


if __name__ == "__main__":
    main()
