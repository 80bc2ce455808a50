"""The chaos cluster: real presenced processes on distinct loopback addresses
(127.0.1.N) inside the network namespace the run executes in, mutual TLS with a CA
made for the run, and the faults: kill -9, SIGSTOP/SIGCONT, wipe and re-add, and
partitions made with nftables rules between node addresses (the nodes dial their
peers from their own cluster address, so one link can be cut alone)."""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

DOMAIN = "example.test"
SECRET = "chaos-secret-0123456789abcdef"


class Node:
    def __init__(self, run, bins, i):
        self.id = i
        self.ip = f"127.0.1.{i}"
        self.cluster = f"{self.ip}:7100"
        self.admin = f"{self.ip}:7200"
        self.http = f"{self.ip}:7300"
        self.xmpp_port = 5222
        self.dir = os.path.join(run, f"node{i}")
        self.data = os.path.join(self.dir, "data")
        self.tls = os.path.join(self.dir, "tls")
        self.config = os.path.join(self.dir, "node.toml")
        self.log = os.path.join(self.dir, "node.log")
        self.bins = bins
        self.proc = None
        self.stopped = False

    def write_config(self, heartbeat_ms, dead_after_ms):
        os.makedirs(self.dir, exist_ok=True)
        with open(self.config, "w") as f:
            f.write(f"""node_id = {self.id}
domain = "{DOMAIN}"
data_dir = "data"
secret = "{SECRET}"
log_level = "info"
worker_threads = 1
[listen]
cluster = "{self.cluster}"
admin = "{self.admin}"
http = "{self.http}"
xmpp = "{self.ip}:{self.xmpp_port}"
[raft]
heartbeat_ms = {heartbeat_ms}
election_min_ms = {heartbeat_ms * 3}
election_max_ms = {heartbeat_ms * 6}
timeout_ms = 3000
cache_mb = 16
[router]
peer_heartbeat_ms = {dead_after_ms // 4}
peer_dead_after_ms = {dead_after_ms}
[cluster_tls]
dir = "tls"
""")

    def start(self):
        assert self.proc is None
        log = open(self.log, "a")
        # The slow-disk fault's control file (crates/storage/src/fault.rs): outside the
        # data directory, which a wipe removes.
        env = dict(os.environ, PRESENCED_FAULT_SLOW_DISK=self.slow_file())
        self.proc = subprocess.Popen(
            [os.path.join(self.bins, "presenced"), "--config", self.config],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        self.stopped = False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        if self.proc:
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()
            self.proc = None
            self.stopped = False

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def wipe(self):
        assert self.proc is None
        # The data directory may be a mount point (a tmpfs of its own): empty it.
        for e in os.listdir(self.data) if os.path.isdir(self.data) else []:
            p = os.path.join(self.data, e)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)

    def slow_file(self):
        return self.config + ".slow-disk-ms"

    def slow_disk(self, ms):
        """Every fsync of the node takes `ms` longer (0: back to normal)."""
        with open(self.slow_file(), "w") as f:
            f.write(str(ms))

    def fill_disk(self):
        """Fill the node's filesystem (its own tmpfs) up to the last byte."""
        subprocess.run(["dd", "if=/dev/zero", f"of={self.data}/chaos-filler", "bs=1M"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def free_disk(self):
        try:
            os.remove(f"{self.data}/chaos-filler")
        except FileNotFoundError:
            pass

    def health(self):
        try:
            with urllib.request.urlopen(f"http://{self.http}/health", timeout=1) as r:
                return r.status
        except Exception as e:  # noqa: BLE001 - any failure means "not healthy"
            return getattr(e, "code", 0)


class Cluster:
    def __init__(self, run, bins, n, heartbeat_ms=100, dead_after_ms=2000, disk_mb=0):
        self.run = run
        self.bins = bins
        self.nodes = [Node(run, bins, i) for i in range(1, n + 1)]
        self.dead_after_ms = dead_after_ms
        self.ca = os.path.join(run, "ca")
        self.cert("init-ca", "--dir", self.ca, "--cluster", "chaos")
        for n_ in self.nodes:
            self.cert("issue", str(n_.id), "--ca-dir", self.ca, "--out", n_.tls, "--addr", n_.ip)
            n_.write_config(heartbeat_ms, dead_after_ms)
        self.cert("issue", "--operator", "chaos", "--ca-dir", self.ca, "--out",
                  os.path.join(run, "operator"))
        self.rules = []
        # Each node's data on a filesystem of its own, so one disk can fill up alone
        # (a tmpfs; the mount lives in the run's private mount namespace).
        self.mounted = []
        if disk_mb:
            for n_ in self.nodes:
                os.makedirs(n_.data, exist_ok=True)
                subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={disk_mb}m", "tmpfs", n_.data],
                               check=True)
                self.mounted.append(n_.data)

    def cert(self, *args):
        subprocess.run([os.path.join(self.bins, "presencectl"), "cert", *args],
                       check=True, stdout=subprocess.DEVNULL)

    def ctl(self, node, *args, timeout=5):
        """presencectl --json against `node`: (exit code, JSON or None, stderr)."""
        op = os.path.join(self.run, "operator")
        cmd = [os.path.join(self.bins, "presencectl"), "--json", "--node", node.admin,
               "--ca", os.path.join(op, "ca.pem"), "--cert", os.path.join(op, "operator.pem"),
               "--key", os.path.join(op, "operator.key"), "--timeout", str(timeout), *args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            return 124, None, "presencectl hung"
        try:
            doc = json.loads(p.stdout) if p.stdout.strip() else None
        except json.JSONDecodeError:
            doc = None
        return p.returncode, doc, p.stderr.strip()

    def form(self):
        for n in self.nodes:
            n.start()
        self.wait(lambda: all(n.health() for n in self.nodes), 30, "nodes to listen")
        code, _, err = self.ctl(self.nodes[0], "cluster", "init")
        assert code == 0, err
        for n in self.nodes[1:]:
            code, _, err = self.ctl(self.nodes[0], "cluster", "add-node", str(n.id), n.cluster,
                                    timeout=60)
            assert code == 0, err
        self.wait(self.converged, 30, "the cluster to converge")

    @staticmethod
    def wait(pred, secs, what):
        deadline = time.time() + secs
        while time.time() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise TimeoutError(f"timed out after {secs}s waiting for {what}")

    def status(self, node=None):
        for n in ([node] if node else self.live()):
            code, doc, _ = self.ctl(n, "cluster", "status", timeout=3)
            if code == 0 and doc:
                return doc
        return None

    def live(self):
        return [n for n in self.nodes if n.alive() and not n.stopped]

    def converged(self):
        """Every node is a voter, up, and has applied the same index as the leader."""
        s = self.status()
        if not s or not s.get("leader_id"):
            return False
        nodes = s.get("nodes", [])
        if len(nodes) != len(self.nodes):
            return False
        applied = {n.get("last_applied") for n in nodes}
        return all(n.get("membership") == "voter" and n.get("reachable", True)
                   for n in nodes) and len(applied) == 1

    # Partitions: nftables rules inside this namespace, dropping packets between
    # node addresses (one way or both).
    def nft(self, script):
        subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True)

    def cut(self, a, b, both=True):
        if not self.rules:
            self.nft("table inet chaos {\n chain out {\n  type filter hook output priority 0; policy accept;\n }\n}\n")
        pairs = [(a, b), (b, a)] if both else [(a, b)]
        for x, y in pairs:
            self.nft(f"add rule inet chaos out ip saddr {x.ip} ip daddr {y.ip} drop")
            self.rules.append((x.id, y.id))

    def isolate(self, node):
        for other in self.nodes:
            if other is not node:
                self.cut(node, other)

    def heal(self):
        if self.rules:
            self.nft("delete table inet chaos")
            self.rules = []

    def stop(self):
        self.heal()
        for n in self.nodes:
            n.kill9()
        for m in self.mounted:
            subprocess.run(["umount", m], stderr=subprocess.DEVNULL)
