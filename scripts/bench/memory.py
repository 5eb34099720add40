#!/usr/bin/env python3
"""Steady-state memory and CPU of `caretaker run` at 1 k, 10 k and 100 k live points (issue 15).

Each level runs a fresh daemon (release build) with every stage on: the shipped rules (`rules/`), anomaly
detection, the signals the rules ask for, the live stage behind `[http]`, energy (`[energy]`) and the InfluxDB
writer (VictoriaMetrics, v2 API, spool in the path). D = points / 10 devices publish every 10 s over a real
mosquitto at QoS 0, spread evenly over the 10 s: even devices are `tasmota-energy-plug` (7 points), odd ones
`tasmota-energy-2ch` (13 points, per-channel arrays), so 10 points per device on average.
After a warm-up the daemon's RSS (VmRSS, split into anonymous memory and file pages, i.e. mostly the binary's
code), peak (VmHWM) and CPU % (utime + stime over wall time, 100 % = one core) are sampled over a window; "code
run" is how much of the binary's code the daemon executed during the window (pages whose accessed bit was set,
after clearing them through /proc/PID/clear_refs at the window's start). Prints one row per level and writes the
rows as JSON (for scripts/bench/plot_memory.py).

The warm-up is 180 s by default: every device has reported many times, the energy stage has flushed (its
reorder window holds readings for a minute first) and SQLite's caches have filled. A 40 s warm-up read ~3 MB
low at 10 k points.

usage: scripts/bench/memory.py [LEVELS=1000,10000,100000] [WARMUP_S=180] [WINDOW_S=30] [OUT_JSON]
env: CARETAKER_EXE (skip the build), CARETAKER_ENV (extra env for the daemon, e.g. "MALLOC_ARENA_MAX=2"),
     MEM_TRACE=S (print RSS and anonymous MB every S seconds from the start, to see a long run settle)
"""
import json, os, shutil, socket, struct, subprocess, sys, tempfile, threading, time

from benchlib import (REPO, Victoria, caretaker_exe, cpu_seconds, free_port, metric, start_mosquitto, status_kb,
                      wait_port)

LEVELS = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "1000,10000,100000").split(",")]
WARMUP = float(sys.argv[2]) if len(sys.argv) > 2 else 180
WINDOW = float(sys.argv[3]) if len(sys.argv) > 3 else 30
OUT = sys.argv[4] if len(sys.argv) > 4 else None
PERIOD = 10.0


def code_touched_kb(pid, exe):
    """KiB of the executable's code mappings whose pages were accessed since the last clear_refs."""
    total, inside = 0, False
    real = os.path.realpath(exe)
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and not head[0].endswith(":"):
                inside = len(head) >= 6 and "x" in head[1] and os.path.realpath(head[-1]) == real
            elif inside and head[0] == "Referenced:":
                total += int(head[1])
    return total


def sleep_tracing(pid, seconds, t_start):
    """Sleeps, printing RSS and anonymous MB every MEM_TRACE seconds (if set)."""
    every = float(os.environ.get("MEM_TRACE", "0") or 0)
    end = time.time() + seconds
    while time.time() < end:
        step = min(end - time.time(), every if every > 0 else seconds)
        time.sleep(max(step, 0))
        if every > 0:
            print(f"  t={time.time() - t_start:5.0f} s  RSS {status_kb(pid, 'VmRSS') / 1024:.1f} MB  "
                  f"anon {status_kb(pid, 'RssAnon') / 1024:.1f} MB", flush=True)


def remaining_length(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def mqtt_str(s):
    b = s.encode()
    return struct.pack("!H", len(b)) + b


class Publisher:
    """A minimal MQTT 3.1.1 QoS 0 publisher over a raw socket (no client library needed)."""

    def __init__(self, port, client_id):
        self.sock = socket.create_connection(("127.0.0.1", port))
        body = mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60) + mqtt_str(client_id)
        self.sock.sendall(bytes([0x10]) + remaining_length(len(body)) + body)
        ack = self.sock.recv(4)
        if len(ack) < 4 or ack[3] != 0:
            raise SystemExit(f"CONNECT refused: {ack!r}")

    def frame(self, topic, payload):
        body = mqtt_str(topic) + payload.encode()
        return bytes([0x30]) + remaining_length(len(body)) + body

    def send(self, frames):
        self.sock.sendall(b"".join(frames))


def plug(i, t):
    return ('{"Time":"2026-01-05T10:00:00","ENERGY":{"TotalStartTime":"2025-01-01T00:00:00",'
            f'"Total":{100 + t / 3.6e6 * (40 + i % 20):.4f},"Yesterday":0.512,"Today":0.204,"Power":{40 + (i + int(t)) % 20},'
            '"ApparentPower":50,"ReactivePower":21,"Factor":0.90,"Voltage":231,"Current":0.196}}')


def twoch(i, t):
    e = 100 + t / 3.6e6 * 60
    return ('{"Time":"2026-01-05T10:00:00","ENERGY":{"TotalStartTime":"2025-01-01T00:00:00",'
            f'"Total":[{e:.4f},{e / 2:.4f}],"Yesterday":[0.003,0.005],"Today":[0.1,0.2],"Power":[{30 + (i + int(t)) % 15},12],'
            '"ApparentPower":[40,15],"ReactivePower":[20,5],"Factor":[0.80,0.75],"Frequency":50,"Voltage":230,'
            '"Current":[0.2,0.1]}}')


def publish_loop(port, devices, stop):
    pub = Publisher(port, f"bench-mem-pub-{devices}")
    ticks = 100  # publish in 100 slices per period: D/100 messages every 100 ms
    per_tick = max(1, devices // ticks)
    start = time.time()
    k = 0
    while not stop.is_set():
        frames = []
        for j in range(per_tick):
            i = (k * per_tick + j) % devices
            t = time.time()
            if i % 2 == 0:
                frames.append(pub.frame(f"tele/plug/dev-{i}/SENSOR", plug(i, t)))
            else:
                frames.append(pub.frame(f"tele/2ch/dev-{i}/SENSOR", twoch(i, t)))
        pub.send(frames)
        k += 1
        wait = start + k * PERIOD / ticks - time.time()
        if wait > 0:
            time.sleep(wait)


def run_level(exe, points, vport):
    devices = points // 10
    work = tempfile.mkdtemp(prefix="ct-mem-")
    mosq, mport = start_mosquitto(work)
    hport = free_port()
    # MEM_NO_RULES=1 leaves the rules (and the signals they ask for) out, to see what they hold.
    rules = "" if os.environ.get("MEM_NO_RULES") else f'[rules]\ndirs = ["{REPO}/rules"]\n'
    with open(f"{work}/site.toml", "w") as f:
        f.write(f"""[site]
name = "bench"
timezone = "Europe/Berlin"
[state]
dir = "{work}/state"
[profiles]
dirs = ["{REPO}/device_profiles"]
{rules}[mqtt]
url = "mqtt://127.0.0.1:{mport}"
client_id = "caretaker-mem"
max_devices = {max(devices * 2, 10000)}
max_points = {max(points * 4, 200000)}
[[mqtt.subscriptions]]
topic = "tele/plug/{{device}}/SENSOR"
profile = "tasmota-energy-plug"
[[mqtt.subscriptions]]
topic = "tele/2ch/{{device}}/SENSOR"
profile = "tasmota-energy-2ch"
[influxdb]
url = "http://127.0.0.1:{vport}"
api = "v2"
org = "bench"
bucket = "bench"
token = "bench-token"
[http]
listen = "127.0.0.1:{hport}"
[energy]
period = "15m"
[[energy.tariffs]]
name = "grid"
category = "electricity"
valid_from = "2026-01-01"
currency = "EUR"
rates = [{{ price = 0.30 }}]
""")
    env = dict(os.environ)
    for kv in os.environ.get("CARETAKER_ENV", "").split():
        k, v = kv.split("=", 1)
        env[k] = v
    daemon = subprocess.Popen([exe, "run", "--config", f"{work}/site.toml", "--log-level", "warn"], env=env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(f"{work}/caretaker.log", "w"))
    stop = threading.Event()
    th = None
    try:
        wait_port(hport)
        time.sleep(1.0)
        th = threading.Thread(target=publish_loop, args=(mport, devices, stop), daemon=True)
        th.start()
        sleep_tracing(daemon.pid, WARMUP, time.time())
        if daemon.poll() is not None:
            raise SystemExit(f"caretaker exited; see {work}/caretaker.log")
        c0, t0 = cpu_seconds(daemon.pid), time.time()
        r0 = metric(hport, "caretaker_readings_received_total")
        with open(f"/proc/{daemon.pid}/clear_refs", "w") as f:
            f.write("1")
        rss = []
        while time.time() - t0 < WINDOW:
            time.sleep(1.0)
            rss.append(status_kb(daemon.pid, "VmRSS"))
        cpu = (cpu_seconds(daemon.pid) - c0) / (time.time() - t0) * 100
        rate = (metric(hport, "caretaker_readings_received_total") - r0) / (time.time() - t0)
        row = {"points": points, "devices": devices, "rss_mb": rss[-1] / 1024, "rss_max_mb": max(rss) / 1024,
               "anon_mb": status_kb(daemon.pid, "RssAnon") / 1024, "file_mb": status_kb(daemon.pid, "RssFile") / 1024,
               "code_run_mb": code_touched_kb(daemon.pid, exe) / 1024,
               "hwm_mb": status_kb(daemon.pid, "VmHWM") / 1024, "cpu_pct": cpu,
               "threads": status_kb(daemon.pid, "Threads"), "readings_per_s": rate}
        return row
    finally:
        stop.set()
        if th:
            th.join(timeout=15)
        daemon.terminate()
        daemon.wait(timeout=30)
        mosq.terminate()
        mosq.wait(timeout=10)
        if os.environ.get("KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)


def main():
    exe = caretaker_exe()
    vm = Victoria()
    vport = vm.port
    rows = []
    try:
        print(f"warm-up {WARMUP:.0f} s, window {WINDOW:.0f} s, load average {os.getloadavg()[0]:.2f}", flush=True)
        print("| live points | devices | readings/s received | RSS MB (end of window) | anon MB | file MB | code run MB "
              "| RSS max MB | peak (VmHWM) MB | CPU % |")
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
        for p in LEVELS:
            r = run_level(exe, p, vport)
            rows.append(r)
            print(f"| {p:,} | {r['devices']:,} | {r['readings_per_s']:,.0f} | {r['rss_mb']:.1f} | {r['anon_mb']:.1f} | "
                  f"{r['file_mb']:.1f} | {r['code_run_mb']:.1f} | {r['rss_max_mb']:.1f} | "
                  f"{r['hwm_mb']:.1f} | {r['cpu_pct']:.1f} |", flush=True)
    finally:
        vm.stop()
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if OUT:
        with open(OUT, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
