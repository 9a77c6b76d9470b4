"""A real one-node SLURM cluster for the tests, from Debian's packages, in a temporary folder.

Five daemons, each with its configuration, state, socket and log under `root`: munged (the
machine's own if one runs), MariaDB and slurmdbd (job accounting, so that `sacct` answers as on a real
site: submitit reads every job's state from it, and a job SLURM kills writes no result file, so
without accounting the sweep would wait for it forever), slurmctld and slurmd. Jobs run as the
user who starts the cluster; the daemons need root (slurmd starts jobs as their user).

    cluster = SlurmCluster(tmp_path).start()   # raises ClusterUnavailable with the reason
    subprocess.run(["sbatch", ...], env=cluster.env)
    cluster.stop()
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = "slurmctld slurmd slurm-client slurmdbd munge mariadb-server"
INSTALL = f"apt-get install -y {PACKAGES}"
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
BINARIES = ["munged", "mungekey", "mariadb-install-db", "mariadbd", "mariadb", "slurmdbd", "slurmctld", "slurmd", "sbatch"]


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the test cluster; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float = 60.0, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log and log.exists() else ""
            raise ClusterUnavailable(f"{what} did not come up within {timeout:.0f} s\n{tail}")
        time.sleep(0.25)


class SlurmCluster:
    def __init__(self, root: Path, partition: str = "debug"):
        self.root = Path(root)
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.ports = {name: free_port() for name in ("mariadb", "slurmdbd", "slurmctld", "slurmd")}
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.started: list[tuple[str, Path]] = []  # (daemon, pid file), in start order
        self.mariadbd: subprocess.Popen | None = None  # the one daemon that stays our child

    def path(self, name: str) -> Path:
        return self.root / name

    def start(self) -> "SlurmCluster":
        missing = [b for b in BINARIES if not shutil.which(b) and not Path("/usr/sbin", b).exists()]
        if missing:
            raise ClusterUnavailable(f"SLURM's Debian packages are not installed ({', '.join(missing)} missing): {INSTALL}")
        if os.geteuid() != 0:
            raise ClusterUnavailable("the test cluster's daemons need root (slurmd starts jobs as their user)")
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.start_munge()
            self.start_mariadb()
            self.start_slurmdbd()
            self.start_slurm()
        except BaseException:
            self.stop()
            raise
        return self

    def daemon(self, name: str, cmd: list[str], pid_file: Path, env: dict | None = None) -> None:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env or self.env)
        if done.returncode:
            raise ClusterUnavailable(f"{name} failed to start: {done.stderr.strip() or done.stdout.strip()}")
        self.started.append((name, pid_file))

    def start_munge(self) -> None:
        """Use the machine's munged if one answers, else start one with its own key on the default
        socket (--force: whoever owns /run/munge): SLURM's clients (sacctmgr, sacct) talk to
        slurmdbd through that socket whatever slurm.conf says."""
        if self.succeeds(["sh", "-c", "munge -n | unmunge"]):
            return
        key = self.path("munge.key")
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True)
        cmd = ["munged", "--force", f"--socket={MUNGE_SOCKET}", f"--key-file={key}", f"--pid-file={self.path('munged.pid')}",
               f"--log-file={self.path('munged.log')}", f"--seed-file={self.path('munged.seed')}"]  # fmt: skip
        self.daemon("munged", cmd, self.path("munged.pid"))
        wait_for("munged", lambda: self.succeeds(["sh", "-c", "munge -n | unmunge"]), log=self.path("munged.log"))

    def start_mariadb(self) -> None:
        data, sock = self.path("mariadb"), self.path("mariadb.sock")
        install = ["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                   "--auth-root-authentication-method=normal", "--skip-test-db"]  # fmt: skip
        done = subprocess.run(install, capture_output=True, text=True)
        if done.returncode:
            raise ClusterUnavailable(f"mariadb-install-db failed: {done.stderr.strip()}")
        log = self.path("mariadb.log")
        # mariadbd stays in the foreground; its pid file says when it is up.
        self.mariadbd = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={data}",
                f"--socket={sock}",
                f"--port={self.ports['mariadb']}",
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-name-resolve",
                f"--pid-file={self.path('mariadb.pid')}",
                f"--log-error={log}",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started.append(("mariadbd", self.path("mariadb.pid")))
        wait_for("MariaDB", lambda: self.path("mariadb.pid").exists() and sock.exists(), log=log)
        grant = "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; GRANT ALL ON *.* TO 'slurm'@'127.0.0.1';"
        subprocess.run(["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root", "-e", grant], check=True)

    def start_slurmdbd(self) -> None:
        conf = self.path("slurmdbd.conf")  # slurmdbd reads it beside SLURM_CONF
        conf.write_text(
            "AuthType=auth/munge\n"
            f"DbdHost=localhost\nDbdPort={self.ports['slurmdbd']}\nSlurmUser=root\n"
            f"StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={self.ports['mariadb']}\n"
            "StorageUser=slurm\nStoragePass=slurm\nStorageLoc=slurm_acct_db\n"
            f"PidFile={self.path('slurmdbd.pid')}\nLogFile={self.path('slurmdbd.log')}\n"
        )
        conf.chmod(0o600)  # slurmdbd refuses a readable password file
        self.write_slurm_conf()  # slurmdbd finds its file through SLURM_CONF's folder
        self.daemon("slurmdbd", ["slurmdbd"], self.path("slurmdbd.pid"))
        wait_for("slurmdbd", lambda: self.succeeds(["sacctmgr", "-n", "show", "cluster"]), log=self.path("slurmdbd.log"))

    def write_slurm_conf(self) -> None:
        with open("/proc/meminfo") as meminfo:
            total_mib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1]) // 1024
        p = self.path
        self.conf.write_text(
            f"""ClusterName=ntmtest
SlurmctldHost={self.node}
SlurmUser=root
SlurmctldPort={self.ports["slurmctld"]}
SlurmdPort={self.ports["slurmd"]}
AuthType=auth/munge
StateSaveLocation={p("state")}
SlurmdSpoolDir={p("spool")}
SlurmctldPidFile={p("slurmctld.pid")}
SlurmdPidFile={p("slurmd.pid")}
SlurmctldLogFile={p("slurmctld.log")}
SlurmdLogFile={p("slurmd.log")}
# No cgroups here: processes are tracked by their parents, and nothing is bound to cores.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Memory is enforced as on a site: a job above its --mem is killed (polled every second).
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={self.ports["slurmdbd"]}
JobRequeue=1
ReturnToService=2
MinJobAge=5
KillWait=10
SchedulerType=sched/backfill
NodeName={self.node} CPUs={os.cpu_count()} RealMemory={int(total_mib * 0.8)} State=UNKNOWN
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )

    def start_slurm(self) -> None:
        for folder in ("state", "spool"):
            self.path(folder).mkdir(exist_ok=True)
        self.daemon("slurmctld", ["slurmctld", "-f", str(self.conf)], self.path("slurmctld.pid"))
        self.daemon("slurmd", ["slurmd", "-f", str(self.conf)], self.path("slurmd.pid"))
        wait_for("the node", lambda: self.answers(["sinfo", "-h", "-o", "%T"]) in ("idle", "idle*") or False,
                 log=self.path("slurmctld.log"))  # fmt: skip

    def succeeds(self, cmd: list[str]) -> bool:
        return subprocess.run(cmd, capture_output=True, env=self.env).returncode == 0

    def answers(self, cmd: list[str]) -> str:
        """The command's stripped stdout, or '' if it failed."""
        done = subprocess.run(cmd, capture_output=True, text=True, env=self.env)
        return done.stdout.strip() if done.returncode == 0 else ""

    def stop(self) -> None:
        """Stop every daemon this cluster started, last first."""
        for name, pid_file in reversed(self.started):
            if name == "mariadbd" and self.mariadbd is not None:
                self.mariadbd.terminate()  # our child: wait() reaps it (kill(pid, 0) would see a zombie)
                self.mariadbd.wait(timeout=30)
                continue
            try:
                pid = int(pid_file.read_text().split()[0])
                os.kill(pid, 15)
            except (OSError, ValueError, IndexError):
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except OSError:
                    break
                time.sleep(0.1)
        self.started.clear()
