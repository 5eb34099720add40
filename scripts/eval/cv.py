#!/usr/bin/env python3
"""Cross-validated NAB evaluation of `caretaker detect` on nab-dev only: tune on one part, score the other.

usage: scripts/eval/cv.py [--nab DIR] [--bin PATH] [--grid FILE] [--seeds N] [--json]

Every configuration of the grid (one line each: `name: --set k=v --set k=v ...`; `default:` with no arguments is
today's defaults) is run once over every file of NAB_DIR (results cached per configuration), then:

- **in-sample**: each configuration scored on all files (one threshold per profile, re-optimised, as NAB does);
- **2-fold by file, stratified by category, N seeds**: for each split and each side, the configuration with the
  best standard score on the *training* half is chosen, then scored on the *test* half in two ways: with the
  threshold re-optimised on the test half (how the issue measures held-out data) and with the training half's
  threshold kept (stricter: nothing at all is chosen on the test files);
- **leave one category out**: the same with each category as the test part.

What the CV figures estimate is the score of the *tuning procedure* (choose the best of the grid) on files it
never saw; the gap between in-sample and CV is the optimism of tuning. The scorer is imported from
nab_score.py (found as $NAB_SCORE, NAB_DIR/../../tools/nab_score.py or ../shared/tools/nab_score.py), so the
figures are exactly the scorer's. Only the files in NAB_DIR are ever read.
"""
import argparse
import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DEFAULT_GRID = """\
default:
"""


def load_scorer(nab):
    cands = [os.environ.get("NAB_SCORE", ""), os.path.join(nab, "..", "..", "tools", "nab_score.py"),
             os.path.join(REPO, "..", "shared", "tools", "nab_score.py")]
    for c in cands:
        if c and os.path.isfile(c):
            spec = importlib.util.spec_from_file_location("nab_score", c)
            m = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(m)
            return m
    sys.exit("nab_score.py not found (set NAB_SCORE)")


def parse_grid(text):
    grid = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, args = line.partition(":")
        grid.append((name.strip(), args.split()))
    return grid


def run_config(bin_, nab, keys, args, cache):
    """Runs detect on every file with `args`; returns {key: [scores]} (cached by the args and the binary)."""
    st = os.stat(bin_)
    tag = hashlib.sha1(("%s %d %d" % (" ".join(args), st.st_mtime_ns, st.st_size)).encode()).hexdigest()[:16]
    out = os.path.join(cache, tag)
    done = os.path.join(out, ".done")
    if not os.path.exists(done):
        for k in keys:
            dst = os.path.join(out, k)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            subprocess.run([bin_, "--log-level", "warn", "detect", "--input", os.path.join(nab, "data", k),
                            "--output", dst] + args, check=True)
        open(done, "w").close()
    return out


class Bench:
    """The nab-dev files, loaded once; scores subsets of them with the scorer's own code."""

    def __init__(self, sc, nab):
        self.sc = sc
        with open(os.path.join(nab, "windows.json")) as fh:
            labels = json.load(fh)
        self.keys = [k for k in sorted(labels) if os.path.isfile(os.path.join(nab, "data", k))]
        self.files = {}
        for k in self.keys:
            f = sc.DataFile(k, os.path.join(nab, "data", k))
            f.locate_windows(labels[k])
            self.files[k] = f
        self.scores = {}

    def load(self, results):
        if results not in self.scores:
            self.scores[results] = {k: self.sc.load_scores(os.path.join(results, k), self.files[k], False)
                                    for k in self.keys}
        return self.scores[results]

    def score(self, results, subset, threshold=None):
        """{profile: (normalised score, threshold)} on `subset`; threshold: {profile: t} to keep, or None."""
        sc = self.sc
        s = self.load(results)
        # Corpus assigns global window ids into the DataFile objects: fresh copies keep subsets independent.
        files = []
        for k in subset:
            f = self.files[k]
            g = sc.DataFile.__new__(sc.DataFile)
            g.__dict__.update(f.__dict__)
            g.window_ids = []
            files.append(g)
        corpus = sc.Corpus(files, [s[k] for k in subset])
        cands = corpus.all_distinct_scores() if threshold is None else None
        out = {}
        for prof in sc.PROFILES:
            t = threshold[prof.name] if threshold is not None else corpus.search(prof, cands)[1]
            totals, _ = corpus.evaluate(prof, t)
            null = corpus.null_raw(prof)
            perfect = prof.tp * corpus.n_windows
            out[prof.name] = (100.0 * (totals["raw"] - null) / (perfect - null), t)
        return out


def category(k):
    return k.split("/")[0]


def splits(keys, seeds):
    """2-fold splits by file, stratified by category, one per seed."""
    out = []
    for seed in range(seeds):
        rng = random.Random(seed)
        a, b = [], []
        for cat in sorted({category(k) for k in keys}):
            ks = [k for k in keys if category(k) == cat]
            rng.shuffle(ks)
            # alternate which fold gets the odd file so folds stay balanced
            h = (len(ks) + (seed % 2)) // 2
            a += ks[:h]
            b += ks[h:]
        out.append(("seed%d" % seed, a, b))
    return out


PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nab", default=os.path.join(REPO, "..", "shared", "data", "nab-dev"))
    ap.add_argument("--bin", default=None, help="caretaker binary (default: build the release one)")
    ap.add_argument("--grid", default=None, help="file with one configuration per line (default: defaults only)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cache", default=None, help="keep per-configuration results here (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    nab = os.path.abspath(a.nab)
    sc = load_scorer(nab)
    bin_ = a.bin
    if bin_ is None:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "caretaker"], cwd=REPO, check=True)
        bin_ = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")), "release", "caretaker")
    grid = parse_grid(open(a.grid).read() if a.grid else DEFAULT_GRID)
    cache = a.cache or tempfile.mkdtemp(prefix="cv-")
    os.makedirs(cache, exist_ok=True)
    bench = Bench(sc, nab)
    keys = bench.keys
    results = {name: run_config(bin_, nab, keys, args, cache) for name, args in grid}

    report = {"configs": {}, "folds": [], "loco": []}
    for name, args in grid:
        r = bench.score(results[name], keys)
        report["configs"][name] = {"args": " ".join(args), "in_sample": {p: r[p][0] for p in PROFILES}}

    def pick(train):
        best = None
        for name, _ in grid:
            r = bench.score(results[name], train)
            if best is None or r["standard"][0] > best[1]["standard"][0]:
                best = (name, r)
        return best

    def fold(label, train, test):
        name, tr = pick(train)
        te = bench.score(results[name], test)
        fixed = bench.score(results[name], test, {p: tr[p][1] for p in PROFILES})
        return {"split": label, "chosen": name, "train": {p: tr[p][0] for p in PROFILES},
                "test": {p: te[p][0] for p in PROFILES}, "test_fixed_threshold": {p: fixed[p][0] for p in PROFILES}}

    for label, a_, b_ in splits(keys, a.seeds):
        report["folds"].append(fold(label + "/A->B", a_, b_))
        report["folds"].append(fold(label + "/B->A", b_, a_))
    for cat in sorted({category(k) for k in keys}):
        test = [k for k in keys if category(k) == cat]
        train = [k for k in keys if category(k) != cat]
        report["loco"].append(fold("out:" + cat, train, test))

    def mean(rows, part):
        return {p: sum(r[part][p] for r in rows) / len(rows) for p in PROFILES}

    report["summary"] = {
        "chosen_on_all": pick(keys)[0],
        "in_sample_of_chosen": bench.score(results[pick(keys)[0]], keys)["standard"][0],
        "2fold_train": mean(report["folds"], "train"),
        "2fold_test": mean(report["folds"], "test"),
        "2fold_test_fixed_threshold": mean(report["folds"], "test_fixed_threshold"),
        "loco_test": mean(report["loco"], "test"),
        "loco_test_fixed_threshold": mean(report["loco"], "test_fixed_threshold"),
    }
    if a.json:
        print(json.dumps(report, indent=1))
        return
    print("in-sample (all %d files), standard / low-FP / low-FN:" % len(keys))
    for name, c in report["configs"].items():
        print("  %-24s %6.2f %6.2f %6.2f   %s" % ((name,) + tuple(c["in_sample"][p] for p in PROFILES) + (c["args"],)))
    print("\nheld-out folds (chosen on train; test re-optimised threshold | test with train's threshold), std:")
    for r in report["folds"] + report["loco"]:
        print("  %-36s %-20s train %6.2f  test %6.2f | %6.2f" % (
            r["split"], r["chosen"], r["train"]["standard"], r["test"]["standard"],
            r["test_fixed_threshold"]["standard"]))
    s = report["summary"]
    f3 = lambda d: " / ".join("%.2f" % d[p] for p in PROFILES)
    print("\nsummary (standard / low-FP / low-FN):")
    print("  chosen on all files: %s (in-sample standard %.2f)" % (s["chosen_on_all"], s["in_sample_of_chosen"]))
    print("  2-fold x %d seeds, train halves:           %s" % (a.seeds, f3(s["2fold_train"])))
    print("  2-fold x %d seeds, test halves:            %s" % (a.seeds, f3(s["2fold_test"])))
    print("  2-fold, test with the train threshold:    %s" % f3(s["2fold_test_fixed_threshold"]))
    print("  leave one category out, test:             %s" % f3(s["loco_test"]))
    print("  leave one category out, train threshold:  %s" % f3(s["loco_test_fixed_threshold"]))


if __name__ == "__main__":
    main()
