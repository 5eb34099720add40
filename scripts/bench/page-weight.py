#!/usr/bin/env python3
"""Page weight of the web console: fetches `/` and every asset it loads, with and without gzip, and prints bytes
on the wire and the ratio (BENCHMARKS.md, "Web console").

    scripts/bench/page-weight.py http://127.0.0.1:9464/      # a running daemon
    scripts/bench/page-weight.py                              # starts `caretaker run` on a minimal config itself

The API calls the page makes after loading (JSON) are not counted: they depend on the site's data.
"""
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def fetch(url, gzip, lang="en"):
    req = urllib.request.Request(url, headers={
        "Accept-Encoding": "gzip" if gzip else "identity",
        "Accept-Language": lang,
    })
    with urllib.request.urlopen(req, timeout=10) as r:
        body = r.read()
        return body, r.headers.get("Content-Encoding") or "identity"


def measure(base):
    shell, _ = fetch(base, False)
    assets = sorted(set(re.findall(rb'(?:src|href)="(/assets/[^"]+)"', shell)))
    rows = []
    for lang in ("en", "zh-CN"):
        urls = [("/ (" + lang + ")", base)] + [(a.decode(), base.rstrip("/") + a.decode()) for a in assets]
        if lang != "en":
            urls = urls[:1]
        for name, url in urls:
            plain, enc0 = fetch(url, False, lang)
            gz, enc1 = fetch(url, True, lang)
            assert enc0 == "identity", (url, enc0)
            assert enc1 == "gzip", f"{url} was not served gzip-compressed ({enc1})"
            rows.append((name, len(plain), len(gz)))
    print(f"{'resource':<34}{'identity':>10}{'gzip':>10}{'ratio':>8}")
    for name, p, g in rows:
        print(f"{name:<34}{p:>10}{g:>10}{g / p:>8.2f}")
    page = [r for r in rows if r[0] != "/ (zh-CN)"]
    tp, tg = sum(r[1] for r in page), sum(r[2] for r in page)
    print(f"{'total for / (en) and its assets':<34}{tp:>10}{tg:>10}{tg / tp:>8.2f}")
    print(f"goal: under 100 KB compressed -> {'met' if tg < 100 * 1024 else 'NOT met'} ({tg / 1024:.1f} KiB)")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    if len(sys.argv) > 1:
        measure(sys.argv[1])
        return
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    exe = os.path.join(target, "release", "caretaker")
    if not os.path.exists(exe):
        exe = os.path.join(target, "debug", "caretaker")
    if not os.path.exists(exe):
        sys.exit("build caretaker first (cargo build --release), or pass the console's URL")
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        cfg = os.path.join(d, "site.toml")
        with open(cfg, "w") as f:
            f.write(f'[site]\nname = "bench"\n[state]\ndir = "{d}/state"\n[profiles]\ndirs = ["{REPO}/device_profiles"]\n'
                    f'[http]\nlisten = "127.0.0.1:{port}"\n')
        log = open(os.path.join(d, "daemon.log"), "w")
        p = subprocess.Popen([exe, "run", "--config", cfg], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            for _ in range(200):
                if p.poll() is not None:
                    log.flush()
                    sys.exit("caretaker exited:\n" + open(os.path.join(d, "daemon.log")).read())
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.05)
            measure(f"http://127.0.0.1:{port}/")
        finally:
            p.terminate()
            p.wait(timeout=30)


if __name__ == "__main__":
    main()
