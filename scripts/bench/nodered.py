#!/usr/bin/env python3
"""Caretaker side by side with Node-RED (issue 15): same broker, same queued messages, same influxd 1.x.

N QoS 1 messages (10 devices, 2 readings each, `{"ts": <epoch ms>, "temperature": .., "humidity": ..}`) are queued
in one real mosquitto for three persistent sessions (clean_session = false, registered before the publish), then each
consumer drains its copy alone, one after the other, into its own database of one influxd 1.6.7:
  - Caretaker (`caretaker run`, release build, the v1 write API, the spool in the path, PUBACK after spooling);
  - Node-RED 4 stock: mqtt in (QoS 1, persistent session) -> json -> function (fields + tags + ms timestamp) ->
    influxdb out (node-red-contrib-influxdb 0.7.0, one HTTP write per message);
  - Node-RED 4 with `require('http').globalAgent.maxSockets = 64` at the top of its settings file (without a cap
    the stock node opens a socket per message and runs out of file handles under a burst).
For each: points written (`SELECT count(temperature)` polled every 50 ms), the drain rate in messages/s from the
first written point to the last (process start-up excluded), start-up time, CPU time of the process
(utime + stime) and its peak RSS (VmHWM). A consumer is done when every point is written or nothing new was
written for 15 s. Printed: each row and the ratios Caretaker / Node-RED.

usage: scripts/bench/nodered.sh [N]   (installs Node-RED into ~/.cache/caretaker/nodered, then runs this)
"""
import json, os, shutil, subprocess, sys, tempfile, time

from benchlib import REPO, Influxd, caretaker_exe, cpu_seconds, free_port, start_mosquitto, status_kb

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
DEVICES = 10
BASE_MS = 1_767_225_600_000
NR_DIR = os.environ.get("NODERED_DIR", os.path.expanduser("~/.cache/caretaker/nodered"))
FILTER = "bench/+/+/telemetry"


def count(influx, db):
    """Points written by one consumer (its own database)."""
    try:
        r = influx.query("SELECT count(temperature) FROM environment", db)
        return int(r["results"][0]["series"][0]["values"][0][1])
    except (OSError, KeyError, IndexError, ValueError):
        return 0


def messages():
    per = N // DEVICES
    by_topic = {}
    for i in range(per):
        for d in range(DEVICES):
            by_topic.setdefault(f"bench/b{d % 3}/dev-{d}/telemetry", []).append(
                f'{{"ts": {BASE_MS + i * 1000}, "temperature": {20 + (i + d) % 100 / 10:.1f}, '
                f'"humidity": {30 + (i + d) % 50}}}')
    return by_topic


def publish(mport):
    procs = []
    for t, bodies in messages().items():
        p = subprocess.Popen(["mosquitto_pub", "-p", str(mport), "-q", "1", "-t", t, "-l"], stdin=subprocess.PIPE)
        p.stdin.write(("\n".join(bodies) + "\n").encode())
        p.stdin.close()
        procs.append(p)
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("mosquitto_pub failed")


def register(mport, client_id):
    """A persistent session with the consumer's client id and filter, so the broker queues the backlog for it."""
    subprocess.run(["mosquitto_sub", "-p", str(mport), "-q", "1", "-c", "-i", client_id, "-t", FILTER, "-E"],
                   check=True, stdout=subprocess.DEVNULL)


def caretaker_cmd(work, exe, mport, iport):
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
topic = "bench/{{building}}/{{device}}/telemetry"
profile = "generic-room-sensor"
[influxdb]
url = "http://127.0.0.1:{iport}"
api = "v1"
database = "ct"
[http]
listen = "127.0.0.1:{hport}"
""")
    return [exe, "run", "--config", f"{work}/site.toml", "--log-level", "error"], None


FUNCTION = """const t = msg.topic.split('/');
msg.payload = [{temperature: msg.payload.temperature, humidity: msg.payload.humidity, time: msg.payload.ts},
               {building: t[1], device: t[2]}];
return msg;"""


def nodered_cmd(work, name, mport, iport, max_sockets):
    d = f"{work}/{name}"
    os.makedirs(d)
    flow = [
        {"id": "a1b2c3d4e5f60001", "type": "mqtt-broker", "name": "bench", "broker": "127.0.0.1", "port": str(mport),
         "clientid": name, "autoConnect": True, "usetls": False, "protocolVersion": "4", "keepalive": "60",
         "cleansession": False, "birthTopic": "", "closeTopic": "", "willTopic": ""},
        {"id": "a1b2c3d4e5f60002", "type": "influxdb", "hostname": "127.0.0.1", "port": str(iport), "protocol": "http",
         "database": name.replace("-", "_"), "name": "bench", "usetls": False, "influxdbVersion": "1.x"},
        {"id": "a1b2c3d4e5f60003", "type": "tab", "label": "bench"},
        {"id": "a1b2c3d4e5f60004", "type": "mqtt in", "z": "a1b2c3d4e5f60003", "topic": FILTER, "qos": "1", "datatype": "utf8",
         "broker": "a1b2c3d4e5f60001", "nl": False, "rap": False, "inputs": 0, "wires": [["a1b2c3d4e5f60005"]]},
        {"id": "a1b2c3d4e5f60005", "type": "json", "z": "a1b2c3d4e5f60003", "property": "payload", "action": "obj", "wires": [["a1b2c3d4e5f60006"]]},
        {"id": "a1b2c3d4e5f60006", "type": "function", "z": "a1b2c3d4e5f60003", "func": FUNCTION, "outputs": 1, "wires": [["a1b2c3d4e5f60007"]]},
        {"id": "a1b2c3d4e5f60007", "type": "influxdb out", "z": "a1b2c3d4e5f60003", "influxdb": "a1b2c3d4e5f60002", "measurement": "environment",
         "precision": "ms", "retentionPolicy": "", "wires": []},
    ]
    with open(f"{d}/flows.json", "w") as f:
        json.dump(flow, f)
    with open(f"{d}/settings.js", "w") as f:
        if max_sockets:
            f.write(f"require('http').globalAgent.maxSockets = {max_sockets};\n")
        f.write(f"module.exports = {{ uiPort: {free_port()}, uiHost: '127.0.0.1', httpAdminRoot: false, "
                "httpNodeRoot: false, credentialSecret: false, flowFilePretty: false, "
                "logging: { console: { level: 'warn', metrics: false, audit: false } }, "
                "editorTheme: { tours: false } };\n")
    return ["node", f"{NR_DIR}/node_modules/node-red/red.js", "--settings", f"{d}/settings.js", "--userDir", d,
            f"{d}/flows.json"], None


def drain(influx, db, cmd, work, label):
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(f"{work}/{label}.log", "w"),
                            stderr=subprocess.STDOUT)
    first = last = None
    best = 0
    try:
        while True:
            c = count(influx, db)
            now = time.perf_counter() - t0
            if c > best:
                best, last = c, now
                if first is None:
                    first = now
            if best >= N:
                break
            if proc.poll() is not None:
                print(f"  {label} exited with {proc.returncode}; see {work}/{label}.log")
                break
            if (last is None and now > 120) or (last is not None and now - last > 15):
                break
            time.sleep(0.05)
        rss = status_kb(proc.pid, "VmHWM")
        cpu = cpu_seconds(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    span = (last - first) if first is not None and last > first else float("nan")
    rate = best / span if span == span and span > 0 else float("nan")
    return {"label": label, "written": best, "first": first or float("nan"), "last": last or float("nan"),
            "rate": rate, "cpu": cpu, "rss_mb": rss / 1024}


def main():
    exe = caretaker_exe()
    work = tempfile.mkdtemp(prefix="ct-nodered-")
    mosq, mport = start_mosquitto(work, unlimited_queue=True)
    influx = None
    rows = []
    try:
        influx = Influxd(work)
        consumers = [("caretaker", "ct", caretaker_cmd(work, exe, mport, influx.port)[0], "caretaker-bench"),
                     ("nodered-stock", "nodered_stock", nodered_cmd(work, "nodered-stock", mport, influx.port, 0)[0],
                      "nodered-stock"),
                     ("nodered-64", "nodered_64", nodered_cmd(work, "nodered-64", mport, influx.port, 64)[0],
                      "nodered-64")]
        for _, db, _, client_id in consumers:
            influx.query(f"CREATE DATABASE {db}")
            register(mport, client_id)
        t = time.perf_counter()
        publish(mport)
        print(f"queued {N} messages for 3 sessions in {time.perf_counter() - t:.1f} s; load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        for label, db, cmd, _ in consumers:
            r = drain(influx, db, cmd, work, label)
            rows.append(r)
            print(f"  {label:14} written {r['written']:>7}/{N}, first point after {r['first']:.2f} s, last after "
                  f"{r['last']:.2f} s, {r['rate']:,.0f} msgs/s, CPU {r['cpu']:.2f} s, peak RSS {r['rss_mb']:.0f} MB",
                  flush=True)
    finally:
        if influx:
            influx.stop()
        mosq.terminate()
        mosq.wait(timeout=10)
        if os.environ.get("KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
    ct = rows[0]
    print(f"N={N}, load average {os.getloadavg()[0]:.2f}")
    print("| consumer | written | msgs/s (first to last point) | CPU s | CPU us/msg | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        per = r["cpu"] / r["written"] * 1e6 if r["written"] else float("nan")
        print(f"| {r['label']} | {r['written']:,} | {r['rate']:,.0f} | {r['cpu']:.2f} | {per:.0f} | "
              f"{r['rss_mb']:.0f} |")
    for r in rows[1:]:
        print(f"caretaker / {r['label']}: throughput {ct['rate'] / r['rate']:.1f}x, "
              f"peak RSS {ct['rss_mb'] / r['rss_mb']:.2f}x, written {ct['written']:,} vs {r['written']:,}")


if __name__ == "__main__":
    main()
