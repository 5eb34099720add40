"""What the benchmark scripts share (mqtt_ingest.py, mqtt_drain.py, memory.py, nodered.py): free ports, waiting for a port, the
release binary, a private mosquitto, VictoriaMetrics and influxd 1.x on free loopback ports, /metrics scrapes and
/proc readings of a process. Import it from a script in this folder (`import benchlib`): Python puts the script's
own folder on the path.
"""
import json, os, shutil, socket, subprocess, tempfile, time, urllib.parse, urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
CLK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"nothing listens on {port}")


def caretaker_exe():
    """$CARETAKER_EXE, else the release build (built first, in $CARGO_TARGET_DIR or the repo's target/)."""
    exe = os.environ.get("CARETAKER_EXE")
    if not exe:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO, check=True)
        exe = os.path.join(TARGET, "release", "caretaker")
    return exe


def metric(port, name, unreachable=0.0):
    """The sum of every series of `name` on http://127.0.0.1:PORT/metrics; `unreachable` when it cannot be read."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return unreachable
    return sum(float(l.rsplit(" ", 1)[1]) for l in body.splitlines() if l.startswith(name))


def status_kb(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...); 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """utime + stime of a process in seconds; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except OSError:
        return 0.0


def start_mosquitto(work, unlimited_queue=False):
    """A mosquitto on a free loopback port, config and log in `work`; returns (process, port).
    `unlimited_queue`: no cap on a persistent session's queue (the default, 1000, would drop a queued backlog)."""
    port = free_port()
    conf = f"{work}/mosquitto.conf"
    queue = "max_queued_messages 0\n" if unlimited_queue else ""
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n{queue}user root\n")
    p = subprocess.Popen(["/usr/sbin/mosquitto", "-c", conf], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=open(f"{work}/mosquitto.log", "w"))
    wait_port(port)
    return p, port


def stop(proc, timeout=10):
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Victoria:
    """VictoriaMetrics (the InfluxDB v2 write API) on a free loopback port with its data in a temp dir."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ct-bench-vm-")
        self.port = free_port()
        self.proc = subprocess.Popen(["victoria-metrics", f"-storageDataPath={self.dir}",
                                      f"-httpListenAddr=127.0.0.1:{self.port}"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self):
        stop(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)


class Influxd:
    """influxd 1.x on free loopback ports (HTTP and RPC), everything in `work`/influxd."""

    def __init__(self, work):
        self.port, rpc = free_port(), free_port()
        d = f"{work}/influxd"
        os.makedirs(d)
        with open(f"{d}/influxdb.conf", "w") as f:
            f.write(f'reporting-disabled = true\nbind-address = "127.0.0.1:{rpc}"\n[meta]\n  dir = "{d}/meta"\n'
                    f'[data]\n  dir = "{d}/data"\n  wal-dir = "{d}/wal"\n  query-log-enabled = false\n'
                    f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
                    f'[monitor]\n  store-enabled = false\n[continuous_queries]\n  enabled = false\n')
        self.proc = subprocess.Popen(["influxd", "run", "-config", f"{d}/influxdb.conf"], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(f"{d}/influxd.log", "w"))
        end = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=1)
                break
            except OSError:
                if time.time() > end:
                    raise SystemExit("influxd did not start")
                time.sleep(0.1)

    def query(self, q, db=""):
        url = f"http://127.0.0.1:{self.port}/query?" + urllib.parse.urlencode({"q": q, "db": db})
        req = urllib.request.Request(url, method="POST")
        return json.loads(urllib.request.urlopen(req, timeout=10).read())

    def stop(self):
        stop(self.proc, timeout=20)
