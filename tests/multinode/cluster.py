"""Simulated nodes on one Linux machine, for real multi-node runs (from shared/recipes/multinode.sh).

Each node is a network namespace on a private bridge with its own address (10.77.0.<i+1>), and a
process tree in its own PID, UTS and mount namespaces whose PID 1 is an sshd on port 2222 (key-only
root login). Inside a node:
  - `hostname` is node<i>; /etc/hosts maps every node name to its address (never to 127.x, or gloo
    would bind to loopback) and /etc/ssh/ssh_config logs in with the cluster's key, with keep-alives;
  - `<root>/local` is the node's own disk (a bind mount of `<root>/disks/node<i>`, and every other
    node's disk is hidden under an empty tmpfs): no filesystem is shared through it. The checkout,
    the venv and ~/.cache stay shared, as on a cluster whose nodes were set up the same way.
The bridge lives in a namespace of its own (the "switch"); a server started there (`serve`) is
reachable from every node at 10.77.0.254 and survives nodes being torn down and brought back.
Nothing outside these namespaces changes but /run/sshd (sshd's privilege-separation folder).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

SSH_PORT = 2222
NET = "10.77.0"
SWITCH_ADDRESS = f"{NET}.254"


def netns_problem() -> str | None:
    """Why simulated nodes cannot run here (not root, no `ip netns`, no sshd/pdsh), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in (
        "ip",
        "unshare",
        "nsenter",
        "/usr/sbin/sshd",
        "ssh",
        "ssh-keygen",
        "pdsh",
        "mpirun",
        "rsync",
    ):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs it: make multinode-tools)"
    name = f"llm-probe-{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Cluster:
    """`nodes` simulated nodes under `root` (keys, configs, logs, disks). Use as a context manager."""

    def __init__(self, root: Path, nodes: int = 2, cpus: list[str] | None = None) -> None:
        self.root = root
        self.count = nodes
        self.cpus = cpus  # node i's processes run on CPUs cpus[i] (taskset's list), as on its own machine
        self.tag = uuid.uuid4().hex[:6]  # namespace names of concurrent clusters never collide
        self.switch = f"llm{self.tag}-sw"
        self.pid1: dict[int, int] = {}
        self.local = root / "local"  # the same path on every node, a different disk behind it
        self.ssh_dir = root / "ssh"
        self.logs = root / "logs"
        self._servers: list[subprocess.Popen[bytes]] = []

    # -- names -----------------------------------------------------------------------------------
    def name(self, i: int) -> str:
        return f"node{i}"

    def address(self, i: int) -> str:
        return f"{NET}.{i + 1}"

    def netns(self, i: int) -> str:
        return f"llm{self.tag}-n{i}"

    def disk(self, i: int) -> Path:
        """Node i's disk as this (root) namespace sees it: where a test reads what the node wrote."""
        return self.root / "disks" / self.name(i)

    def hostfile(self, slots: int = 1, path: Path | None = None) -> Path:
        path = path or self.root / "hostfile"
        path.write_text("".join(f"{self.name(i)} slots={slots}\n" for i in range(self.count)))
        return path

    # -- life cycle ------------------------------------------------------------------------------
    def __enter__(self) -> Cluster:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        for folder in (self.ssh_dir, self.logs, self.local, self.root / "disks"):
            folder.mkdir(parents=True, exist_ok=True)
        key = self.ssh_dir / "id_ed25519"
        if not key.exists():
            for name, comment in (("id_ed25519", "llm-client"), ("host_ed25519", "llm-host")):
                keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment]
                subprocess.run([*keygen, "-f", str(self.ssh_dir / name)], check=True)
        shutil.copyfile(self.ssh_dir / "id_ed25519.pub", self.ssh_dir / "authorized_keys")
        (self.ssh_dir / "sshd_config").write_text(
            f"Port {SSH_PORT}\nHostKey {self.ssh_dir / 'host_ed25519'}\n"
            f"AuthorizedKeysFile {self.ssh_dir / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "UsePAM no\nStrictModes no\nUseDNS no\nMaxStartups 100:30:200\nAcceptEnv LANG LC_*\n"
        )
        # what a cluster's nodes would have in ~/.ssh/config: the key, no prompts, keep-alives
        (self.ssh_dir / "ssh_config").write_text(
            f"Host *\n  Port {SSH_PORT}\n  User root\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n"
            "  ConnectTimeout 5\n  ServerAliveInterval 5\n  ServerAliveCountMax 3\n"
        )
        hosts = ["127.0.0.1 localhost"] + [f"{self.address(i)} {self.name(i)}" for i in range(self.count)]
        (self.root / "hosts").write_text("\n".join(hosts) + "\n")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation folder
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "addr", "add", f"{SWITCH_ADDRESS}/24", "dev", "br0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        _ip("-n", self.switch, "link", "set", "lo", "up")
        for i in range(self.count):
            self.start_node(i)

    def start_node(self, i: int, *, fresh: bool = False) -> None:
        """Bring node i up (again): its namespace, link, address and sshd; `fresh` wipes its disk."""
        disk = self.disk(i)
        if fresh and disk.exists():
            shutil.rmtree(disk)
        disk.mkdir(parents=True, exist_ok=True)
        ns = self.netns(i)
        if ns not in self._namespaces():
            # a node just torn down may still hold its old link while its last processes die: drop it
            subprocess.run(["ip", "-n", self.switch, "link", "del", f"p{i}"], capture_output=True)
            _ip("netns", "add", ns)
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns",
                self.switch)  # fmt: skip
            _ip("-n", self.switch, "link", "set", f"p{i}", "master", "br0")
            _ip("-n", self.switch, "link", "set", f"p{i}", "up")
            # the same MAC on every start: the other nodes' ARP caches stay right for a node brought back
            _ip("-n", ns, "link", "set", "eth0", "address", f"02:00:0a:4d:00:{i + 1:02x}")
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        mounts = " && ".join(
            [
                f"mount --bind {self.root / 'hosts'} /etc/hosts",
                f"mount --bind {self.ssh_dir / 'ssh_config'} /etc/ssh/ssh_config",
                f"mount --bind {disk} {self.local}",
                f"mount -t tmpfs -o size=1m none {self.root / 'disks'}",  # no node sees another's disk
                f"hostname {self.name(i)}",
            ]
        )
        sshd = (
            f"exec /usr/sbin/sshd -D -f {self.ssh_dir / 'sshd_config'} -o PidFile=none "
            f"-E {self.logs}/sshd-{i}.log"
        )
        log = (self.logs / f"node{i}.out").open("ab")
        outer = subprocess.Popen(
            [*self._pin(i), "ip", "netns", "exec", ns, "unshare", "--uts", "--mount", "--pid", "--fork",
             "--mount-proc", "--propagation", "private", "sh", "-c", f"{mounts} && {sshd}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            children = psutil.Process(outer.pid).children() if psutil.pid_exists(outer.pid) else []
            if children:
                self.pid1[i] = children[0].pid
                break
            if outer.poll() is not None:
                out = (self.logs / f"node{i}.out").read_text()
                raise RuntimeError(f"node{i} did not start: {out[-2000:]}")
            time.sleep(0.05)
        while time.monotonic() < deadline:
            if _listening(ns, SSH_PORT):
                return
            time.sleep(0.05)
        raise RuntimeError(f"node{i}: sshd did not listen within 30 s; see {self.logs}")

    def kill_node(self, i: int) -> None:
        """A node crash: every process of node i dies at once (its PID 1 goes, the kernel kills the rest)."""
        pid = self.pid1.pop(i, None)
        if pid is not None:
            with _ignore_missing():
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid)

    def stop_node(self, i: int) -> None:
        """Tear node i down: its processes and its network namespace (its disk stays)."""
        self.kill_node(i)
        ns = self.netns(i)
        if ns in self._namespaces():
            for pid in self._netns_pids(ns):
                with _ignore_missing():
                    os.kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def cut_link(self, i: int) -> None:
        """A partition: node i's port on the switch goes down (its processes live on, unreachable)."""
        _ip("-n", self.switch, "link", "set", f"p{i}", "down")

    def mend_link(self, i: int) -> None:
        _ip("-n", self.switch, "link", "set", f"p{i}", "up")

    def down(self) -> None:
        for server in self._servers:
            server.kill()
            server.wait()
        for i in range(self.count):
            self.stop_node(i)
        if self.switch in self._namespaces():
            for pid in self._netns_pids(self.switch):
                with _ignore_missing():
                    os.kill(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", self.switch], capture_output=True)

    # -- running things --------------------------------------------------------------------------
    def popen(
        self, i: int, command: str, *, env: Mapping[str, str], log: Path, cwd: Path
    ) -> subprocess.Popen[bytes]:
        """`command` (a shell line) as a process of node i, as a person logged in there would run it."""
        handle = log.open("ab")
        proc = subprocess.Popen(
            self._enter(i, f"cd {shlex.quote(str(cwd))} && exec {command}"),
            env=dict(env), stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        handle.close()
        return proc

    def sh(self, i: int, command: str, *, timeout: float = 60, env: Mapping[str, str] | None = None) -> str:
        """Run a short shell line in node i; its stdout (a failure raises with stderr)."""
        done = subprocess.run(
            self._enter(i, command), capture_output=True, text=True, timeout=timeout,
            env=dict(env) if env is not None else None,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"node{i}: {command!r} exited {done.returncode}: {done.stderr[-2000:]}")
        return done.stdout

    def processes(self, i: int, needle: str) -> list[psutil.Process]:
        """Node i's live processes whose command line contains `needle`."""
        found = []
        for pid in self._netns_pids(self.netns(i)):
            with _ignore_missing():
                proc = psutil.Process(pid)
                if needle in " ".join(proc.cmdline()) and proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        return found

    @contextmanager
    def serve(self, command: list[str], *, port: int, log: Path) -> Iterator[str]:
        """Run a server in the switch namespace on SWITCH_ADDRESS:port; yields its http URL."""
        handle = log.open("ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.switch, *command], stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        handle.close()
        self._servers.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if _listening(self.switch, port):
                break
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            raise RuntimeError(f"{command[0]} did not listen on {port} within 60 s")
        try:
            yield f"http://{SWITCH_ADDRESS}:{port}"
        finally:
            proc.kill()
            proc.wait()
            self._servers.remove(proc)

    def _enter(self, i: int, command: str) -> list[str]:
        pid = self.pid1[i]
        return [*self._pin(i), "nsenter", "-t", str(pid), "-n", "-u", "-m", "-p", "--", "bash", "-c", command]

    def _pin(self, i: int) -> list[str]:
        return ["taskset", "-c", self.cpus[i]] if self.cpus else []

    @staticmethod
    def _namespaces() -> set[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    @staticmethod
    def _netns_pids(ns: str) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]


def _ignore_missing() -> suppress:
    return suppress(ProcessLookupError, psutil.NoSuchProcess, psutil.ZombieProcess)


def _listening(ns: str, port: int) -> bool:
    probe = ["ip", "netns", "exec", ns, "ss", "-Htln", f"sport = :{port}"]
    return bool(subprocess.run(probe, capture_output=True, text=True).stdout.strip())


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        with _ignore_missing():
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        time.sleep(0.05)
