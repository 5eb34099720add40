#!/usr/bin/env python3
"""MQTT backlog drain: Caretaker vs mosquitto_sub on the same queued backlog, same broker, same run (issue 15).

N QoS 1 messages (10 devices, 2 readings each: `{"ts": <epoch ms>, "temperature": .., "humidity": ..}`, the shipped
`generic-room-sensor` profile) are queued in a real mosquitto for two persistent sessions (clean_session = false):
one of `mosquitto_sub` and one of Caretaker, both registered before the publish and offline during it. Then, per round:
  (a) reference: `mosquitto_sub -q 1 -c -C N` drains its copy; time from process start to exit;
  (b) `caretaker run` (release build) is started at t0 and its /metrics polled every 10 ms: the time until
      `caretaker_readings_received_total` reaches 2N (received) and until `caretaker_readings_written_total` reaches
      2N (written to VictoriaMetrics over the InfluxDB v2 API, with the spool in the path).
Ratios = reference time / Caretaker time (1.0 = Caretaker drains as fast as the broker's own client; target >= 0.9);
the median of the per-round ratios is printed, plus Caretaker's peak RSS (VmHWM) and CPU time per message.
Each round uses a fresh broker, fresh sessions and a fresh spool; VictoriaMetrics is shared.

usage: scripts/bench/mqtt_drain.py [N] [ROUNDS]     (builds the release binary first; env CARETAKER_EXE skips it)
"""
import os, shutil, statistics, subprocess, sys, tempfile, time

from benchlib import REPO, Victoria, caretaker_exe, cpu_seconds, free_port, metric, start_mosquitto, status_kb, wait_port

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
DEVICES = 10
BASE_MS = 1_767_225_600_000


def site_config(work, mport, vport, hport, client_id):
    path = f"{work}/site.toml"
    # DRAIN_FLUSH_INTERVAL (e.g. 100ms): the writer's flush_interval; the default 1s adds up to 1 s to "written".
    fi = os.environ.get("DRAIN_FLUSH_INTERVAL")
    flush = f'flush_interval = "{fi}"\n' if fi else ""
    with open(path, "w") as f:
        f.write(f"""[site]
name = "bench"
[state]
dir = "{work}/state"
[profiles]
dirs = ["{REPO}/device_profiles"]
[mqtt]
url = "mqtt://127.0.0.1:{mport}"
client_id = "{client_id}"
[[mqtt.subscriptions]]
topic = "bench/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[influxdb]
url = "http://127.0.0.1:{vport}"
api = "v2"
org = "bench"
bucket = "bench"
token = "bench-token"
{flush}[http]
listen = "127.0.0.1:{hport}"
""")
    return path


def payloads():
    out = []
    per = N // DEVICES
    for i in range(per):
        for d in range(DEVICES):
            out.append(f'bench/b{d % 3}/dev-{d}/telemetry {{"ts": {BASE_MS + i * 1000}, '
                       f'"temperature": {20 + (i + d) % 100 / 10:.1f}, "humidity": {30 + (i + d) % 50}}}')
    return out


def publish(mport, msgs):
    # One mosquitto_pub per device topic (-l takes one topic); QoS 1, so the broker holds every message.
    by_topic = {}
    for m in msgs:
        t, body = m.split(" ", 1)
        by_topic.setdefault(t, []).append(body)
    procs = []
    for t, bodies in by_topic.items():
        p = subprocess.Popen(["mosquitto_pub", "-p", str(mport), "-q", "1", "-t", t, "-l"], stdin=subprocess.PIPE)
        p.stdin.write(("\n".join(bodies) + "\n").encode())
        p.stdin.close()
        procs.append(p)
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("mosquitto_pub failed")


def register_caretaker(exe, cfg, hport, mport):
    """Runs the daemon once so the broker knows its persistent session and subscription, then stops it."""
    d = subprocess.Popen([exe, "run", "--config", cfg, "--log-level", "error"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(hport)
    end = time.time() + 20
    # Probe until a message is received: then the subscription exists.
    while metric(hport, "caretaker_readings_received_total", -1.0) < 1:
        if time.time() > end:
            raise SystemExit("Caretaker never subscribed")
        subprocess.run(["mosquitto_pub", "-p", str(mport), "-q", "1", "-t", "bench/probe/probe/telemetry",
                        "-m", f'{{"ts": {BASE_MS - 1000}, "temperature": 1}}'], check=True)
        time.sleep(0.1)
    d.terminate()
    d.wait(timeout=30)


def one_round(exe, vport, r):
    work = tempfile.mkdtemp(prefix="ct-drain-")
    mosq, mport = start_mosquitto(work, unlimited_queue=True)
    hport = free_port()
    cfg = site_config(work, mport, vport, hport, f"caretaker-drain-{r}")
    daemon = None
    try:
        register_caretaker(exe, cfg, hport, mport)
        ref_id = f"ref-drain-{r}"
        subprocess.run(["mosquitto_sub", "-p", str(mport), "-q", "1", "-c", "-i", ref_id, "-t", "bench/#", "-E"],
                       check=True, stdout=subprocess.DEVNULL)
        publish(mport, payloads())
        time.sleep(0.3)
        # (a) reference
        t0 = time.perf_counter()
        subprocess.run(["mosquitto_sub", "-p", str(mport), "-q", "1", "-c", "-i", ref_id, "-t", "bench/#",
                        "-C", str(N)], check=True, stdout=subprocess.DEVNULL)
        ref = time.perf_counter() - t0
        # (b) Caretaker
        want = 2 * N
        t0 = time.perf_counter()
        # CARETAKER_WRAP, e.g. "perf record -g -o /tmp/drain.perf --", profiles the measured run (the figures
        # then include the profiler's overhead, and RSS/CPU are the wrapper's).
        wrap = os.environ.get("CARETAKER_WRAP", "").split()
        daemon = subprocess.Popen(wrap + [exe, "run", "--config", cfg, "--log-level", "error"],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=open(f"{work}/caretaker.log", "w"))
        received = written = None
        end = time.time() + 300
        while written is None:
            if time.time() > end:
                raise SystemExit("Caretaker did not drain within 300 s")
            now = time.perf_counter() - t0
            if received is None and metric(hport, "caretaker_readings_received_total", -1.0) >= want:
                received = now
            if received is not None and metric(hport, "caretaker_readings_written_total", -1.0) >= want:
                written = now
            time.sleep(0.01)
        hwm = status_kb(daemon.pid, "VmHWM")
        cpu = cpu_seconds(daemon.pid)
        return ref, received, written, hwm, cpu
    finally:
        if daemon:
            daemon.send_signal(2 if os.environ.get("CARETAKER_WRAP") else 15)
            daemon.wait(timeout=30)
        mosq.terminate()
        mosq.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def main():
    exe = caretaker_exe()
    vm = Victoria()
    vport = vm.port
    rows = []
    try:
        for r in range(ROUNDS):
            ref, rec, wr, hwm, cpu = one_round(exe, vport, r)
            rows.append((ref, rec, wr, hwm, cpu))
            print(f"round {r + 1}: mosquitto_sub {ref:.3f} s; caretaker received {rec:.3f} s, written {wr:.3f} s; "
                  f"ratio received {ref / rec:.2f}, written {ref / wr:.2f}; peak RSS {hwm / 1024:.1f} MB; "
                  f"CPU {cpu:.2f} s = {cpu / N * 1e6:.1f} us/msg", flush=True)
    finally:
        vm.stop()
    med = statistics.median
    print(f"N={N} messages ({2 * N} readings), {ROUNDS} rounds, load average {os.getloadavg()[0]:.2f}:")
    print(f"  mosquitto_sub median {med(r[0] for r in rows):.3f} s = {N / med(r[0] for r in rows):,.0f} msgs/s")
    print(f"  caretaker received median {med(r[1] for r in rows):.3f} s, written median {med(r[2] for r in rows):.3f} s")
    print(f"  ratio mosquitto_sub/caretaker (median of rounds): received {med(r[0] / r[1] for r in rows):.2f}, "
          f"written {med(r[0] / r[2] for r in rows):.2f}")
    print(f"  caretaker peak RSS (VmHWM) max {max(r[3] for r in rows) / 1024:.1f} MB, "
          f"CPU median {med(r[4] for r in rows) / N * 1e6:.1f} us/msg")


if __name__ == "__main__":
    main()
