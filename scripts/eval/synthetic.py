#!/usr/bin/env python3
"""Generates a labelled facilities-like test set in NAB's layout, for a second opinion next to NAB.

usage: scripts/eval/synthetic.py OUT_DIR [--seed N] [--hard]
then:  scripts/eval/nab.sh OUT_DIR

--hard writes the larger, harder set instead (see `hard()` below): 120 series of 1,200 to 8,640 rows at 5-minute,
15-minute or hourly steps, weekly cycles, public holidays, weather, setpoint changes (holidays and setpoint changes
are normal and unlabelled: they cost false positives), and ten fault kinds including sensor swaps, slow drifts,
noise changes and control-schedule faults, 0 to 2 per series.

Each series: 14 days of 5-minute readings (4032 rows) of a building signal with a daily cycle, weekday/weekend
difference and noise, plus one injected fault of a known kind at a random time after the first 40 %. The label
window is centred on the fault's first row and spans 10 % of the file (NAB's convention). Two series have no
fault. The detector was never tuned on these: they exist to check that the NAB figure is not an artefact of the
30 dev files. Standard library only.
"""
import argparse, json, math, os, random, datetime

ROWS = 4032
STEP = 300
START = datetime.datetime(2025, 3, 3)  # a Monday


def base(rng, kind):
    level = rng.uniform(15, 400)
    amp = level * rng.uniform(0.05, 0.4)
    noise = amp * rng.uniform(0.02, 0.15)
    out = []
    ar = 0.0
    for i in range(ROWS):
        t = START + datetime.timedelta(seconds=i * STEP)
        h = t.hour + t.minute / 60
        weekend = t.weekday() >= 5
        if kind == "occupancy":  # office load: high 7-19 on weekdays
            shape = 1.0 if (7 <= h < 19 and not weekend) else 0.15
        else:  # outdoor-driven: smooth daily cycle
            shape = 0.5 + 0.5 * math.sin(2 * math.pi * (h - 9) / 24)
        ar = 0.8 * ar + rng.gauss(0, noise)
        out.append(level + amp * shape + ar)
    return out, level, amp, noise


def inject(rng, fault, v, level, amp, noise):
    a = rng.randrange(int(ROWS * 0.4), int(ROWS * 0.85))
    if fault == "spike":
        v[a] += amp * 1.5 + 10 * noise
    elif fault == "level_shift":
        for i in range(a, ROWS):
            v[i] += amp * 0.6
    elif fault == "drift":
        for i in range(a, ROWS):
            v[i] += amp * min(1.0, (i - a) / 288) * 0.8
    elif fault == "stuck":
        for i in range(a, min(ROWS, a + 72)):
            v[i] = v[a]
    elif fault == "dropout":
        for i in range(a, min(ROWS, a + 24)):
            v[i] = 0.0
    elif fault == "noisy":
        for i in range(a, min(ROWS, a + 288)):
            v[i] += rng.gauss(0, 5 * noise + 0.1 * amp)
    elif fault == "missing_peak":
        # find the next day start after a, flatten that day's cycle to its minimum
        day = (a // 288 + 1) * 288
        a = day
        lo = min(v[day - 288:day])
        for i in range(day, min(ROWS, day + 288)):
            v[i] = lo + rng.gauss(0, noise)
    elif fault == "oscillation":
        for i in range(a, min(ROWS, a + 144)):
            v[i] += amp * 0.4 * (1 if (i // 2) % 2 else -1)
    return a


# ---------------------------------------------------------------------------------------------------------------
# The harder set (--hard)

HARD_FAULTS = ["spike", "level_shift", "slow_drift", "stuck", "dropout", "noise_change", "missing_peak",
               "oscillation", "sensor_swap", "schedule_shift"]


def hard_base(rng, kind, rows, step, start):
    """A facilities signal: weekly cycle, holidays, weather, AR noise; returns values and its scale."""
    level = rng.uniform(5, 500)
    amp = level * rng.uniform(0.05, 0.5)
    noise = amp * rng.uniform(0.01, 0.12)
    phi = rng.uniform(0.3, 0.95)
    open_h, close_h = rng.choice([(6, 18), (7, 19), (8, 20), (7, 22)])
    holidays = set()
    days = rows * step // 86400 + 2
    for d in range(days):
        day = start + datetime.timedelta(days=d)
        if day.weekday() < 5 and rng.random() < 0.04:
            holidays.add(day.date())
    weather, ar, out = 0.0, 0.0, []
    setpoint = 0.0
    for i in range(rows):
        t = start + datetime.timedelta(seconds=i * step)
        h = t.hour + t.minute / 60
        off = t.weekday() >= 5 or t.date() in holidays
        if i % max(1, 86400 // step) == 0:
            weather = 0.8 * weather + rng.gauss(0, 0.25)
        if kind == "occupancy":
            shape = (1.0 if open_h <= h < close_h else 0.1) if not off else 0.12
        elif kind == "outdoor":
            shape = 0.5 + 0.5 * math.sin(2 * math.pi * (h - 9) / 24) + 0.4 * weather
        elif kind == "chiller":
            occ = 1.0 if (open_h <= h < close_h and not off) else 0.2
            shape = occ * (0.6 + 0.4 * math.sin(2 * math.pi * (h - 9) / 24) + 0.3 * weather)
        else:  # setpoint-controlled temperature: flat, with rare (normal) setpoint changes
            if rng.random() < 0.0008:
                setpoint = rng.choice([-0.15, 0.0, 0.15])
            shape = setpoint + (0.05 if off else 0.0)
        ar = phi * ar + rng.gauss(0, noise * math.sqrt(1 - phi * phi))
        out.append(level + amp * shape + ar)
    return out, amp, noise, (open_h, close_h)


def hard_inject(rng, fault, v, a, amp, noise, step, hours, other):
    rows = len(v)
    per_day = max(1, 86400 // step)
    if fault == "spike":
        v[a] += rng.choice([-1, 1]) * (amp * rng.uniform(0.8, 2.0) + 8 * noise)
    elif fault == "level_shift":
        d = rng.choice([-1, 1]) * amp * rng.uniform(0.3, 0.8)
        for i in range(a, rows):
            v[i] += d
    elif fault == "slow_drift":
        span = per_day * rng.uniform(2, 5)
        d = rng.choice([-1, 1]) * amp * rng.uniform(0.5, 1.0)
        for i in range(a, rows):
            v[i] += d * min(1.0, (i - a) / span)
    elif fault == "stuck":
        for i in range(a, min(rows, a + max(12, per_day // 2))):
            v[i] = v[a]
    elif fault == "dropout":
        for i in range(a, min(rows, a + max(6, per_day // 12))):
            v[i] = 0.0
    elif fault == "noise_change":
        k = rng.uniform(3, 6)
        for i in range(a, rows):
            v[i] += rng.gauss(0, (k - 1) * noise + 0.02 * amp)
    elif fault == "missing_peak":
        day = (a // per_day + 1) * per_day
        if day >= rows:
            day = a
        a = day
        lo = min(v[max(0, day - per_day):day] or [v[day]])
        for i in range(day, min(rows, day + per_day)):
            v[i] = lo + rng.gauss(0, noise)
    elif fault == "oscillation":
        for i in range(a, min(rows, a + max(24, per_day // 2))):
            v[i] += amp * 0.3 * (1 if (i // 2) % 2 else -1)
    elif fault == "sensor_swap":
        # From here on the point reports another sensor's signal (wiring or mapping error after maintenance).
        for i in range(a, rows):
            v[i] = other[i]
    elif fault == "schedule_shift":
        # The time schedule fails: the equipment runs all night (a control fault), from the next evening on.
        close = hours[1]
        for i in range(a, rows):
            t_h = ((i * step) % 86400) / 3600
            if t_h >= close or t_h < hours[0]:
                v[i] += amp * 0.7
    return a


def hard(out, seed):
    rng = random.Random(seed)
    windows = {}
    os.makedirs(os.path.join(out, "data", "facilities"), exist_ok=True)
    n = 0
    for k in range(120):
        rows = rng.choice([1200, 2500, 4032, 8640])
        step = rng.choice([300, 300, 900, 3600])
        kind = rng.choice(["occupancy", "outdoor", "chiller", "setpoint"])
        start = datetime.datetime(2025, 1, 6) + datetime.timedelta(days=rng.randrange(0, 300))
        v, amp, noise, hours = hard_base(rng, kind, rows, step, start)
        other, _, _, _ = hard_base(rng, rng.choice(["occupancy", "outdoor", "chiller"]), rows, step, start)
        nf = rng.choice([0, 1, 1, 1, 2, 2]) if k % 8 else 0
        faults = [rng.choice(HARD_FAULTS) for _ in range(nf)]
        if kind == "occupancy" or kind == "chiller":
            pass
        else:
            faults = [f if f != "schedule_shift" else "level_shift" for f in faults]
        # Fault starts after probation (15 %), spread so the windows do not overlap.
        starts = []
        if nf == 1:
            starts = [rng.randrange(int(rows * 0.25), int(rows * 0.85))]
        elif nf == 2:
            starts = [rng.randrange(int(rows * 0.25), int(rows * 0.5)),
                      rng.randrange(int(rows * 0.65), int(rows * 0.9))]
        stamps = [(start + datetime.timedelta(seconds=i * step)).strftime("%Y-%m-%d %H:%M:%S") for i in range(rows)]
        name = "facilities/%03d_%s_%s.csv" % (k, kind, "_".join(faults) or "none")
        wins = []
        for f, a in zip(faults, starts):
            a = hard_inject(rng, f, v, a, amp, noise, step, hours, other)
            half = max(1, rows // (20 * max(1, nf)))
            lo, hi = max(0, a - half), min(rows - 1, a + half)
            wins.append([stamps[lo] + ".000000", stamps[hi] + ".000000"])
        windows[name] = wins
        with open(os.path.join(out, "data", name), "w") as fh:
            fh.write("timestamp,value\n")
            for s_, x in zip(stamps, v):
                fh.write("%s,%.4f\n" % (s_, x))
        n += 1
    with open(os.path.join(out, "windows.json"), "w") as fh:
        json.dump(windows, fh, indent=1)
    print("%d series, %d windows in %s" % (n, sum(len(w) for w in windows.values()), out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--hard", action="store_true", help="the larger, harder set")
    args = ap.parse_args()
    if args.hard:
        hard(args.out, args.seed)
        return
    rng = random.Random(args.seed)
    faults = ["spike", "level_shift", "drift", "stuck", "dropout", "noisy", "missing_peak", "oscillation"]
    windows = {}
    os.makedirs(os.path.join(args.out, "data", "synthetic"), exist_ok=True)
    n = 0
    for rep in range(3):
        for fault in faults + ["none"]:
            for kind in ["occupancy", "outdoor"]:
                v, level, amp, noise = base(rng, kind)
                name = f"synthetic/{kind}_{fault}_{rep}.csv"
                stamps = [(START + datetime.timedelta(seconds=i * STEP)).strftime("%Y-%m-%d %H:%M:%S")
                          for i in range(ROWS)]
                if fault == "none":
                    windows[name] = []
                else:
                    a = inject(rng, fault, v, level, amp, noise)
                    half = ROWS // 20
                    lo, hi = max(0, a - half), min(ROWS - 1, a + half)
                    windows[name] = [[stamps[lo] + ".000000", stamps[hi] + ".000000"]]
                with open(os.path.join(args.out, "data", name), "w") as f:
                    f.write("timestamp,value\n")
                    for s, x in zip(stamps, v):
                        f.write(f"{s},{x:.4f}\n")
                n += 1
    with open(os.path.join(args.out, "windows.json"), "w") as f:
        json.dump(windows, f, indent=1)
    print(f"{n} series, {sum(len(w) for w in windows.values())} windows in {args.out}")


if __name__ == "__main__":
    main()
