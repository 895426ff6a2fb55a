"""Serve the app as N processes behind nginx with sticky sessions, for a class bigger than one process serves.

    python deploy/replicas.py [-n 2] [--port 7860] [--base-port 7861] [--no-pin] [-- app.py flags]
    make serve-replicas N=2 [PORT=7860]

Starts `python app.py --port P` once per replica on 127.0.0.1 (ports base-port, base-port+1, ...), waits until
each one answers, then nginx on the front port (on GRADIO_SERVER_NAME, 127.0.0.1 unless set: 0.0.0.0 opens it to
the class's network) with deploy/nginx.conf.template. Ctrl-C or SIGTERM stops nginx and every replica. Logs go
to a work folder it prints (nginx-access.log names the replica of every request).

Each replica gets its own share of the CPU cores (pinned, so each one's torch threads match its cores): two
replicas that each used every core would fight over them (see README: many users at once).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = Path(__file__).resolve().with_name("nginx.conf.template")
REPLICA_HOST = "127.0.0.1"  # replicas answer only nginx
# Runs in each child before it becomes app.py or nginx: it dies with the launcher (even one killed outright, so
# no replica is left holding its port; Linux's parent-death signal, kept across exec), and a replica runs on its
# own cores (inherited by every thread torch starts; app.configure_threads sizes torch's pool from them).
CHILD_SHIM = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if sys.argv[1]:
    os.sched_setaffinity(0, map(int, sys.argv[1].split(",")))
os.execv(sys.argv[2], sys.argv[2:])
"""


def find_nginx() -> str | None:
    """nginx from PATH, or Debian's /usr/sbin (not on a normal user's PATH)."""
    found = shutil.which("nginx")
    return found or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def nginx_config(listen: str, ports: list[int], workdir: Path, tempdir: Path) -> str:
    # max_fails=0: a slow or failed answer never takes a replica out for a while (its visitors would move and
    # lose their state); a stopped one still passes each request on to the next replica.
    servers = "\n".join(f"        server {REPLICA_HOST}:{port} max_fails=0;" for port in ports)
    return (TEMPLATE.read_text(encoding="utf-8").replace("@LISTEN@", listen).replace("@SERVERS@", servers)
            .replace("@WORKDIR@", str(workdir)).replace("@TEMPDIR@", str(tempdir)))


def core_shares(n: int, cores: list[int]) -> list[list[int]]:
    """The cores of each of n replicas: disjoint shares while there are enough cores, else one core each in
    turn (replicas on the same core then take turns on it, without oversubscribing threads)."""
    if n <= len(cores):
        size, extra = divmod(len(cores), n)
        shares, start = [], 0
        for i in range(n):
            end = start + size + (1 if i < extra else 0)
            shares.append(cores[start:end])
            start = end
        return shares
    return [[cores[i % len(cores)]] for i in range(n)]


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


class Replicas:
    """N app processes and nginx in front of them; a context manager that stops them all, even on failure.

    `url` is the front address; `ports` the replicas'; `access_log` nginx's log, one line per request with
    `upstream=127.0.0.1:<port>`; `logs[port]` each replica's own output."""

    def __init__(self, n: int = 2, port: int = 7860, base_port: int | None = None, ports: list[int] | None = None,
                 host: str | None = None, workdir: Path | None = None, app_args: list[str] | tuple = (),
                 pin: bool = True, python: str = sys.executable, nginx: str | None = None,
                 ready_timeout: float = 180.0):
        self.n, self.port = n, port
        self.ports = list(ports or [(base_port or port + 1) + i for i in range(n)])
        if len(self.ports) != n:
            raise ValueError(f"{n} replicas need {n} ports, not {self.ports}")
        self.host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lie-replicas-"))
        self.app_args, self.pin, self.python = list(app_args), pin, python
        self.nginx = nginx or find_nginx()
        self.ready_timeout = ready_timeout
        self.access_log = self.workdir / "nginx-access.log"
        self.logs = {p: self.workdir / f"replica-{p}.log" for p in self.ports}
        self.processes: dict[str, subprocess.Popen] = {}  # name -> process, in start order
        self.tempdir: Path | None = None  # nginx's buffers for large request bodies
        self.url = f"http://{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{port}"

    def __enter__(self) -> "Replicas":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, cmd: list[str], log: Path, env: dict | None = None, cores=None) -> None:
        cmd = [self.python, "-c", CHILD_SHIM, ",".join(map(str, cores or [])), *cmd]
        with open(log, "ab") as out:
            # Its own process group: Ctrl-C reaches the launcher only, which stops everything in order.
            self.processes[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                                    start_new_session=True)

    def start(self) -> None:
        if self.nginx is None:
            raise RuntimeError("nginx is not installed (Debian/Ubuntu: apt-get install -y nginx)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # nginx's workers run as `nobody` when nginx starts as root: they must reach this folder's subfolders.
        self.tempdir = Path(tempfile.mkdtemp(prefix="lie-nginx-"))
        os.chmod(self.tempdir, 0o711)
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        shares = core_shares(self.n, cores) if self.pin and cores else [None] * self.n
        env = {**os.environ, "GRADIO_SERVER_NAME": REPLICA_HOST, "PYTHONUNBUFFERED": "1"}
        env.pop("GRADIO_SERVER_PORT", None)
        for port, share in zip(self.ports, shares):
            self._spawn(f"replica :{port}", [self.python, "app.py", "--port", str(port), *self.app_args],
                        self.logs[port], env, cores=share)
        for port in self.ports:
            self._wait(f"replica :{port}", f"http://{REPLICA_HOST}:{port}/", self.logs[port])
        conf = self.workdir / "nginx.conf"
        conf.write_text(nginx_config(f"{self.host}:{self.port}", self.ports, self.workdir, self.tempdir),
                        encoding="utf-8")
        errors = self.workdir / "nginx-error.log"
        # -p/-e: nginx's own prefix and error log, so it needs no write access to /var/log or /etc.
        self._spawn("nginx", [self.nginx, "-p", str(self.workdir), "-c", str(conf), "-e", str(errors)], errors)
        self._wait("nginx", self.url + "/", errors)

    def _wait(self, name: str, url: str, log: Path) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            process = self.processes[name]
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with code {process.returncode}:\n{_tail(log)}")
            try:
                if _get(url) == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{name} did not answer {url} within {self.ready_timeout:.0f} s:\n{_tail(log)}")

    def stop(self, timeout: float = 15.0) -> None:
        """nginx first (no new requests reach a replica that is going), then the replicas: SIGTERM, then SIGKILL
        to the process group of any that has not exited within `timeout`."""
        for name in ["nginx", *[n for n in self.processes if n != "nginx"]]:
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        if self.tempdir is not None:
            shutil.rmtree(self.tempdir, ignore_errors=True)
            self.tempdir = None

    def exited(self) -> list[str]:
        return [f"{name} (exit code {p.returncode})" for name, p in self.processes.items() if p.poll() is not None]


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # the process and anything it started (nginx's worker)
    except ProcessLookupError:
        pass


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Flags after -- go to every app.py, e.g. -- --lock --model ID")
    parser.add_argument("-n", "--replicas", type=int, default=2, help="number of app processes (default 2)")
    parser.add_argument("--port", type=int, default=7860, help="nginx's port, the one visitors open (default 7860)")
    parser.add_argument("--base-port", type=int, default=None, help="the first replica's port (default port+1)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not split the CPU cores among "
                        "the replicas (each then uses every core)")
    parser.add_argument("--workdir", type=Path, default=None, help="logs and nginx.conf "
                        "(default: a new folder under /tmp)")
    parser.add_argument("app_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    return args


def _interrupt(*_):
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # stopping now: a second Ctrl-C does not cut the clean-up short
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # both leave the `with`, which stops everything (also when
        signal.signal(sig, _interrupt)           # started in the background, where SIGINT comes ignored)
    replicas = Replicas(args.replicas, args.port, args.base_port, workdir=args.workdir, app_args=args.app_args,
                        pin=args.pin)
    what = f"{args.replicas} replica{'s' if args.replicas > 1 else ''}"
    print(f"Starting {what} on ports {', '.join(map(str, replicas.ports))}; logs in {replicas.workdir}", flush=True)
    try:
        with replicas:
            print(f"Open {replicas.url} ({what} behind nginx on {replicas.host}:{args.port}). Ctrl-C stops them all.",
                  flush=True)
            while not replicas.exited():
                time.sleep(1.0)
            print("Stopping: " + ", ".join(replicas.exited()) + f" exited; see {replicas.workdir}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("Stopped nginx and every replica.")
        return 0
    except RuntimeError as err:
        print(f"Could not start: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
