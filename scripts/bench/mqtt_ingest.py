#!/usr/bin/env python3
"""MQTT ingest end to end: Caretaker vs mosquitto_sub, same broker, same N messages, same run.

Publishes N Tasmota SENSOR messages (7 readings each) with `mosquitto_pub -l -q 1` to a real mosquitto on a free
loopback port, and measures the time from the first publish until
  (a) `mosquitto_sub -q 1 -C N` has received all N (the reference: the broker's own client doing nothing else),
  (b) Caretaker has decoded every message and written every reading as InfluxDB line protocol into its durable
      spool (`caretaker_readings_queued_total` on /metrics reaches 7*N), which is also when MQTT PUBACKs go out.
InfluxDB is deliberately absent (an unused port): this measures ingest, not the writer, whose readings stay queued.
Ratio = reference time / Caretaker time (1.0 = keeps up with the broker's own client; target >= 0.9), per round
(the two measured back to back) and over the best of each; on a shared machine the per-round median is the
steadier figure.

usage: scripts/bench/mqtt_ingest.py [N] [ROUNDS]     (builds the release binary first; env CARETAKER_EXE skips it)
"""
import subprocess, sys, tempfile, time

from benchlib import REPO, caretaker_exe, free_port, metric, start_mosquitto, wait_port

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3


def payload(i):
    return ('{"Time":"2026-01-05T10:00:00","ENERGY":{"TotalStartTime":"2025-01-01T00:00:00",'
            f'"Total":{1000 + i * 0.001:.3f},"Yesterday":0.512,"Today":0.204,"Power":{40 + i % 20},'
            '"ApparentPower":50,"ReactivePower":21,"Factor":0.90,"Voltage":231,"Current":0.196}}')


def publish(port, lines, topic="tele/plug-1/SENSOR"):
    t0 = time.perf_counter()
    p = subprocess.Popen(["mosquitto_pub", "-p", str(port), "-q", "1", "-t", topic, "-l"],
                         stdin=subprocess.PIPE)
    p.stdin.write(lines)
    p.stdin.close()
    return t0, p


def main():
    exe = caretaker_exe()
    work = tempfile.mkdtemp(prefix="ct-bench-")
    mosq, mport = start_mosquitto(work, unlimited_queue=True)
    hport = free_port()
    with open(f"{work}/site.toml", "w") as f:
        f.write(f"""[site]
name = "bench"
[state]
dir = "{work}/state"
[profiles]
dirs = ["{REPO}/device_profiles"]
[mqtt]
url = "mqtt://127.0.0.1:{mport}"
client_id = "caretaker-bench"
[[mqtt.subscriptions]]
topic = "tele/{{device}}/SENSOR"
profile = "tasmota-energy-plug"
[influxdb]
url = "http://127.0.0.1:{free_port()}"
api = "v1"
database = "bench"
queue_max_bytes = 2147483648
[http]
listen = "127.0.0.1:{hport}"
""")
    daemon = subprocess.Popen([exe, "run", "--config", f"{work}/site.toml", "--log-level", "error"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=open(f"{work}/caretaker.log", "w"))
    wait_port(hport)
    time.sleep(1.0)  # let it connect and subscribe
    lines = "".join(payload(i) + "\n" for i in range(N)).encode()
    ref_times, ours_times = [], []
    try:
        for r in range(ROUNDS):
            # (a) reference: mosquitto_sub alone, on a topic Caretaker does not subscribe to (it stays idle).
            sub = subprocess.Popen(["mosquitto_sub", "-p", str(mport), "-q", "1", "-t", "ref/+/SENSOR",
                                    "-C", str(N)], stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            t0, pub = publish(mport, lines, "ref/plug-1/SENSOR")
            sub.wait()
            ref_times.append(time.perf_counter() - t0)
            pub.wait()
            # (b) Caretaker alone
            before = metric(hport, "caretaker_readings_queued_total")
            t0, pub = publish(mport, lines)
            end = time.time() + 300
            while metric(hport, "caretaker_readings_queued_total") < before + 7 * N:
                if time.time() > end:
                    raise SystemExit("Caretaker did not take every message within 300 s")
                time.sleep(0.01)
            ours_times.append(time.perf_counter() - t0)
            pub.wait()
            print(f"round {r + 1}: mosquitto_sub {ref_times[-1]:.3f} s, caretaker {ours_times[-1]:.3f} s")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        mosq.terminate()
    ratios = sorted(r / o for r, o in zip(ref_times, ours_times))
    print(f"  per-round ratios: {', '.join(f'{x:.2f}' for x in ratios)}; median {ratios[len(ratios) // 2]:.2f}")
    ref, ours = min(ref_times), min(ours_times)
    print(f"N={N} messages ({7 * N} readings), best of {ROUNDS}:")
    print(f"  mosquitto_sub: {ref:.3f} s = {N / ref:,.0f} msgs/s")
    print(f"  caretaker:     {ours:.3f} s = {N / ours:,.0f} msgs/s = {7 * N / ours:,.0f} readings/s")
    print(f"  ratio (caretaker throughput / mosquitto_sub throughput) = {ref / ours:.2f}")


if __name__ == "__main__":
    main()
