"""docker/slurm/worker.sbatch on a real Slurm: a one-node cluster on localhost (Debian's
slurm-wlm and munge, started as root for the session; two fake GPUs, character devices
like /dev/null, so that Slurm allocates GPUs and sets CUDA_VISIBLE_DEVICES), a zdt1 study
on PostgreSQL, and the job array's workers run from this environment. The script's
bad-input checks run without Slurm."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

from autotune.cli import main
from autotune.storage import read_record

from conftest import write_spec

pytestmark = pytest.mark.xdist_group("slurm")  # one cluster: every test here in one process

SBATCH = Path(__file__).parent.parent / "docker" / "slurm" / "worker.sbatch"
PARTITION = "autotune"
HEADER = re.compile(r"task (\d+)_(\d+) \(restart (\d+)\), worker (\S+):(\d+), GPUs: (.*), storage: ")


def _autotune_command() -> str:
    """This environment's autotune, as a cluster user points AUTOTUNE_COMMAND at theirs."""
    script = Path(sys.executable).parent / "autotune"
    return str(script) if script.exists() else f"{sys.executable} -m autotune"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment less any Slurm job's (the tests may run inside one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "AUTOTUNE_"))}
    return env | extra


@dataclass
class Slurm:
    root: Path
    conf: Path
    fake_gpus: int

    def env(self, **extra: str) -> dict[str, str]:
        return _clean_env(SLURM_CONF=str(self.conf), **extra)

    def run(self, *command: str) -> str:
        done = subprocess.run(command, env=self.env(), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stderr}"
        return done.stdout

    def submit(self, folder: Path, *args: str, **env: str) -> str:
        """sbatch as a cluster user runs it, from `folder`; the job id."""
        done = subprocess.run(
            ["sbatch", "--parsable", f"--partition={PARTITION}", *args],
            cwd=folder,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().split(";")[0]

    def wait(self, job: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.run("squeue", "-h", "-j", job, "-o", "%i").strip():
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} still queued or running after {timeout:.0f} s")
            time.sleep(0.5)

    def job_states(self, job: str) -> dict[str, tuple[str, str]]:
        """Each task's (JobState, ExitCode), while Slurm keeps the finished job's record."""
        states = {}
        for line in self.run("scontrol", "show", "job", "-o", job).splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            task = fields.get("ArrayTaskId", "")
            states[f"{fields['ArrayJobId']}_{task}" if task else fields["JobId"]] = (
                fields["JobState"],
                fields["ExitCode"],
            )
        return states


def _binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _slurm_conf(root: Path, fake_gpus: int) -> str:
    gres = f" Gres=gpu:{fake_gpus}" if fake_gpus else ""
    return f"""\
ClusterName=autotunetest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits to start again (default 120 s)
AuthInfo=socket={root}/munge.socket,cred_expire=5
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
PlugStackConfig={root}/plugstack.conf
# No cgroups: processes tracked through /proc, tasks not bound
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_min_interval=200000
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
GresTypes=gpu
NodeName=localhost CPUs=2{gres} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """A one-node Slurm cluster on localhost, for the session: munged with its own key and
    socket, slurmctld and slurmd in the foreground, state and spool in a temp folder."""
    missing = [
        b
        for b in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "scancel")
        if not _binary(b)
    ]
    if missing:
        reason = f"Slurm is not installed (missing {', '.join(missing)}): apt-get install slurm-wlm munge"
        pytest.skip(f"{reason} (scripts/test.sh does, as root)")
    if os.geteuid() != 0:
        pytest.skip("the one-node Slurm cluster (munged, slurmctld, slurmd) is started as root")
    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o700)
    for sub in ("state", "spool", "gpu"):
        (root / sub).mkdir()
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    (root / "plugstack.conf").write_text("")
    fake_gpus = 2
    try:  # GPUs that Slurm allocates and names in CUDA_VISIBLE_DEVICES: devices like /dev/null
        for i in range(fake_gpus):
            os.mknod(root / "gpu" / f"nvidia{i}", 0o600 | 0o020000, os.makedev(1, 3))
        (root / "gres.conf").write_text(f"NodeName=localhost Name=gpu File={root}/gpu/nvidia[0-{fake_gpus - 1}]\n")
    except OSError:
        fake_gpus = 0
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, fake_gpus))
    env = _clean_env(SLURM_CONF=str(conf))
    daemons: list[subprocess.Popen[bytes]] = []

    def start(*command: str) -> None:
        with open(root / f"{Path(command[0]).name}.out", "wb") as log:
            daemons.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))

    cluster = Slurm(root, conf, fake_gpus)
    try:
        munge = [f"--key-file={key}", f"--socket={root}/munge.socket", f"--pid-file={root}/munged.pid"]
        munge += [f"--log-file={root}/munged.log", f"--seed-file={root}/munge.seed"]
        start(_binary("munged"), "--foreground", "--force", *munge)
        _wait_for(lambda: (root / "munge.socket").exists(), 10, root, "munged")
        start(_binary("slurmctld"), "-D", "-i", "-f", str(conf))
        start(_binary("slurmd"), "-D", "-N", "localhost", "-f", str(conf))

        def idle() -> bool:
            done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
            return done.stdout.strip() == "idle"

        _wait_for(idle, 30, root, "the node to be idle")
        yield cluster
    finally:
        if daemons and len(daemons) == 3 and all(d.poll() is None for d in daemons):
            subprocess.run(["scancel", f"--partition={PARTITION}"], env=env, capture_output=True)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                queued = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
                if not queued.stdout.strip():
                    break
                time.sleep(0.5)
        for daemon in reversed(daemons):
            _stop(daemon)


def _wait_for(ready, timeout: float, root: Path, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            logs = "\n".join(
                f"== {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(root.glob("*.log"))
            )
            logs += "\n".join(
                f"== {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(root.glob("*.out"))
            )
            raise AssertionError(f"waited {timeout:.0f} s for {what}\n{logs}")
        time.sleep(0.2)


def _zdt1_study(tmp_path: Path, url: str, n_trials: int, delay_s: float) -> str:
    spec = {
        "trial": {"kind": "zdt1", "delay_s": delay_s},
        "sampler": {"name": "random"},
        "budget": {"n_trials": n_trials},
        "worker": {"heartbeat_interval_s": 1, "grace_period_s": 3},
    }
    assert main(["study", "create", "z", "--config", str(write_spec(tmp_path / "z.yaml", spec)), "--storage", url]) == 0
    return "z"


def _outputs(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in sorted(folder.glob("autotune-*.out"))}


def _headers(outputs: dict[str, str]) -> list[re.Match[str]]:
    return [m for text in outputs.values() for m in HEADER.finditer(text)]


def _check_study(url: str, n_trials: int, outputs: dict[str, str]) -> list[optuna.trial.FrozenTrial]:
    """Every trial of the budget complete, none lost (RUNNING, WAITING), none run twice."""
    trials = optuna.load_study(study_name="z", storage=url).get_trials()
    states = [t.state.name for t in trials]
    complete = [t for t in trials if t.state.name == "COMPLETE" and "failure_reason" not in t.user_attrs]
    joined = "\n".join(f"== {name}\n{text}" for name, text in outputs.items())
    assert states.count("RUNNING") + states.count("WAITING") == 0, (states, joined)
    assert len(complete) == n_trials, (states, joined)
    assert len({tuple(sorted(t.params.items())) for t in complete}) == n_trials, joined
    assert "Traceback" not in joined, joined
    return trials


def _env(url: str, **extra: str) -> dict[str, str]:
    return {"AUTOTUNE_STORAGE": url, "AUTOTUNE_COMMAND": _autotune_command(), **extra}


def test_array_runs_the_study_one_worker_per_allocated_gpu(slurm, postgres_url, tmp_path):
    """The script as it is (--gres=gpu:1 a task): each task's worker gets the GPU Slurm
    allocated it (zdt1 trials train nothing, so fake GPUs serve), and the two fill the
    budget: every trial complete, none lost, none duplicated."""
    if not slurm.fake_gpus:
        pytest.skip("no fake GPU devices could be made here (mknod), so the cluster has no GPU to allocate")
    name = _zdt1_study(tmp_path, postgres_url, n_trials=8, delay_s=1.0)
    job = slurm.submit(tmp_path, "--array=0-1", str(SBATCH), name, **_env(postgres_url))
    slurm.wait(job)
    outputs = _outputs(tmp_path)
    _check_study(postgres_url, 8, outputs)
    assert sorted(m[6] for m in _headers(outputs)) == ["0", "1"], outputs
    assert all("worker done (budget reached)" in text for text in outputs.values()), outputs
    assert slurm.job_states(job) == {f"{job}_0": ("COMPLETED", "0:0"), f"{job}_1": ("COMPLETED", "0:0")}


def test_each_task_gets_the_gpus_slurm_allocated_it(slurm, tmp_path):
    """What the script hands the worker, seen through a stand-in command: --gpus with the
    CUDA_VISIBLE_DEVICES Slurm set; on a task with no GPU, no --gpus and no GPU visible."""
    if not slurm.fake_gpus:
        pytest.skip("no fake GPU devices could be made here (mknod), so the cluster has no GPU to allocate")
    stand_in = tmp_path / "autotune-stand-in"
    stand_in.write_text('#!/bin/sh\necho "args: $* visible: [${CUDA_VISIBLE_DEVICES-unset}]"\n')
    stand_in.chmod(0o755)
    env = {"AUTOTUNE_STORAGE": "postgresql://u:secret@db/x", "AUTOTUNE_COMMAND": str(stand_in)}
    jobs = {
        "array": slurm.submit(tmp_path, "--array=0-1", "--output=array-%a.out", str(SBATCH), "z", **env),
        "two": slurm.submit(
            tmp_path, "--array=0", "--gres=gpu:2", "--output=two.out", str(SBATCH), "z", "--timeout", "60", **env
        ),
        # A CUDA_VISIBLE_DEVICES from the submitting shell is not taken for an allocation.
        "none": slurm.submit(
            tmp_path, "--array=0", "--gres=none", "--output=none.out", str(SBATCH), "z", CUDA_VISIBLE_DEVICES="5", **env
        ),
    }
    for job in jobs.values():
        slurm.wait(job)
    out = {p.stem: p.read_text() for p in tmp_path.glob("*.out")}
    assert sorted(re.search(r"args: (.*)", out[f"array-{i}"])[1] for i in (0, 1)) == [
        "worker z --gpus 0 visible: [0]",
        "worker z --gpus 1 visible: [1]",
    ], out
    assert "args: worker z --gpus 0,1 --timeout 60 visible: [0,1]" in out["two"], out
    assert "args: worker z visible: []" in out["none"] and "GPUs: none, one CPU slot" in out["none"], out
    assert "secret" not in "".join(out.values()) and "postgresql://u:***@db/x" in out["none"]


def _trials_of(url: str, worker: str, *states: optuna.trial.TrialState) -> list[int]:
    trials = optuna.load_study(study_name="z", storage=url).get_trials(deepcopy=False, states=states or None)
    return [t.number for t in trials if read_record(t).worker == worker]


def _wait_running(url: str, worker: str, timeout: float = 60) -> None:
    """Until a trial of `worker` runs with all its params stored (it is asked, then suggested)."""
    deadline = time.monotonic() + timeout
    study = optuna.load_study(study_name="z", storage=url)
    while not any(
        read_record(t).worker == worker and len(t.params) == 3
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    ):
        if time.monotonic() > deadline:
            raise AssertionError(f"no trial of worker {worker} started in {timeout:.0f} s")
        time.sleep(0.2)


def _task_header(folder: Path, task: int, timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in _headers(_outputs(folder)):
            if m[2] == str(task):
                return m
        time.sleep(0.2)
    raise AssertionError(f"task {task} did not start in {timeout:.0f} s: {_outputs(folder)}")


def test_a_task_killed_mid_trial_leaves_a_trial_the_other_task_recovers(slurm, postgres_url, tmp_path):
    """A task's worker killed outright mid-trial (a lost node, the OOM killer, Slurm's
    SIGKILL after KillWait) leaves its trial RUNNING; the other task's worker fails it once
    it has been silent for the grace period (3 s here), runs its config again, and the
    budget is filled. Tasks with no GPU (--gres=none): one CPU slot each."""
    name = _zdt1_study(tmp_path, postgres_url, n_trials=6, delay_s=1.0)
    job = slurm.submit(tmp_path, "--array=0-1", "--gres=none", str(SBATCH), name, **_env(postgres_url))
    header = _task_header(tmp_path, 1)
    assert header[6] == "none, one CPU slot"
    worker = f"{header[4]}:{header[5]}"
    _wait_running(postgres_url, worker)
    os.kill(int(header[5]), signal.SIGKILL)
    (victim,) = _trials_of(postgres_url, worker, optuna.trial.TrialState.RUNNING)
    slurm.wait(job)
    outputs = _outputs(tmp_path)
    trials = _check_study(postgres_url, 6, outputs)
    assert trials[victim].state.name == "FAIL", outputs
    rerun = [t for t in trials if victim in t.system_attrs.get("retry_history", [])]
    assert len(rerun) == 1 and rerun[0].params == trials[victim].params, outputs
    states = slurm.job_states(job)
    assert states[f"{job}_0"] == ("COMPLETED", "0:0") and states[f"{job}_1"][0] == "FAILED", states


def test_a_requeued_task_stops_cleanly_and_starts_again(slurm, postgres_url, tmp_path):
    """`scontrol requeue` of a task mid-trial (what preemption does to a --requeue job):
    Slurm's SIGTERM stops its worker, which fails the trial as interrupted (not counted);
    Slurm starts the task again (restart 1), and the two tasks fill the budget."""
    name = _zdt1_study(tmp_path, postgres_url, n_trials=6, delay_s=1.0)
    job = slurm.submit(tmp_path, "--array=0-1", "--gres=none", str(SBATCH), name, **_env(postgres_url))
    header = _task_header(tmp_path, 1)
    worker = f"{header[4]}:{header[5]}"
    _wait_running(postgres_url, worker)
    slurm.run("scontrol", "requeue", f"{job}_1")
    slurm.wait(job, timeout=90)
    victim = max(_trials_of(postgres_url, worker))  # its last trial: the one the SIGTERM stopped
    outputs = _outputs(tmp_path)
    assert "SIGTERM: stopping" in outputs[f"autotune-{job}_1.out"], outputs
    assert sorted((m[2], m[3]) for m in _headers(outputs)) == [("0", "0"), ("1", "0"), ("1", "1")], outputs
    assert slurm.job_states(job) == {f"{job}_0": ("COMPLETED", "0:0"), f"{job}_1": ("COMPLETED", "0:0")}
    study = optuna.load_study(study_name="z", storage=postgres_url)
    trial = study.trials[victim]
    states = [t.state.name for t in study.trials]
    assert states.count("RUNNING") + states.count("WAITING") == 0, outputs
    assert trial.state.name == "FAIL" and trial.user_attrs["failure_kind"] == "interrupted", trial.user_attrs
    _check_study(postgres_url, 6, outputs)


def test_bad_input_fails_the_task_with_one_line(slurm, tmp_path):
    """Through sbatch: an SQLite URL fails each task at once, exit 2, one line in its output."""
    env = {"AUTOTUNE_STORAGE": "sqlite:///z.db"}
    job = slurm.submit(tmp_path, "--array=0-1", "--gres=none", "--output=bad-%a.out", str(SBATCH), "z", **env)
    slurm.wait(job)
    for task in (0, 1):
        lines = (tmp_path / f"bad-{task}.out").read_text().splitlines()
        assert len(lines) == 1 and "SQLite loses writes; use PostgreSQL" in lines[0], lines
    assert slurm.job_states(job) == {f"{job}_0": ("FAILED", "2:0"), f"{job}_1": ("FAILED", "2:0")}


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["z"], {}, "AUTOTUNE_STORAGE is not set"),
        (["z"], {"AUTOTUNE_STORAGE": "sqlite:////shared/autotune.db"}, "SQLite loses writes; use PostgreSQL"),
        (["z"], {"AUTOTUNE_STORAGE": "journal:///shared/studies.log"}, "journal file"),
        ([], {"AUTOTUNE_STORAGE": "postgresql://db/x"}, "name the study"),
        (["z", "--storage", "postgresql://u:p@db/x"], {"AUTOTUNE_STORAGE": "postgresql://db/x"}, "not --storage"),
        (["z", "--gpus", "0"], {"AUTOTUNE_STORAGE": "postgresql://db/x"}, "--gres=gpu:N"),
        (["z"], {"AUTOTUNE_STORAGE": "postgresql://db/x", "AUTOTUNE_COMMAND": "/nowhere/autotune"}, "not found"),
        (["z"], {"AUTOTUNE_STORAGE": "postgresql://db/x"}, "not in a Slurm job: submit this script with sbatch"),
    ],
)
def test_the_scripts_bad_input_is_one_line_and_exit_2(args, env, says):
    """Without Slurm: each check prints one line on stderr and exits 2, running nothing."""
    env = _clean_env(**{"AUTOTUNE_COMMAND": _autotune_command(), **env})
    done = subprocess.run(["bash", str(SBATCH), *args], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == "" and len(done.stderr.splitlines()) == 1 and says in done.stderr, done.stderr
