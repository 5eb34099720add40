#!/usr/bin/env python3
"""Generates a labelled facilities-like test set in NAB's layout, for a second opinion next to NAB.

usage: scripts/eval/synthetic.py OUT_DIR [--seed N]
then:  scripts/eval/nab.sh OUT_DIR

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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
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
