"""Several machines on one study: a real PostgreSQL server on loopback holds the Optuna study
and the MLflow runs; two independent `agestudy.tune` processes (two "machines") share them."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
from test_tune import env_for, load, tune_cmd, write_study


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    # the server refuses to run as root: run it as the postgres system user then
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if not runuser:
            pytest.skip("running as root without runuser: cannot start a PostgreSQL server")
        return [runuser, "-u", "postgres", "--", *cmd]
    return cmd


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[test]')")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    bindir = os.path.dirname(bins[-1])
    base = tempfile.mkdtemp(prefix="agestudy-pg-")
    data = os.path.join(base, "data")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    port = _free_port()
    try:
        subprocess.run(_as_postgres([f"{bindir}/initdb", "-D", data, "-U", "agestudy", "--auth=trust", "-E", "UTF8"]),
                       check=True, capture_output=True, timeout=120)
        subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-l", os.path.join(base, "log"), "-w", "-o",
                                     f"-p {port} -c listen_addresses=127.0.0.1 -k {base}", "start"]),
                       check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as err:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"could not start a PostgreSQL server: {err}")
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="agestudy", dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE DATABASE optuna")
        conn.execute("CREATE DATABASE mlflow")
    yield f"postgresql://agestudy@127.0.0.1:{port}"
    subprocess.run(_as_postgres([f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "stop"]), capture_output=True,
                   timeout=120)
    shutil.rmtree(base, ignore_errors=True)


def test_two_machines_share_a_postgresql_study(postgres_url, synthetic_root, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    storage = f"{postgres_url}/optuna"
    tracking = f"{postgres_url}/mlflow"
    study_path = write_study(tmp_path, "shared", n_trials=4, epochs=2)
    study = load(study_path, storage)
    # more queued than needed: a machine may start a fifth trial while the other finishes the
    # fourth, and that one must not sample an lr that fails or gets pruned
    for _ in range(8):
        study.enqueue_trial({"lr": 0.05})
    from agestudy.tracking import setup_tracking

    setup_tracking(tracking, "test")  # the schema exists once, as `mlflow server` makes it in real use
    env = {**env_for(tmp_path), "MLFLOW_TRACKING_URI": tracking}
    cmd = tune_cmd(study_path, synthetic_root, tmp_path, "--storage", storage, "--no-refit")
    machines = []
    for _ in range(2):
        machines.append(subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True))
        time.sleep(1)
    outputs = [m.communicate(timeout=900) for m in machines]
    for m, (_, err) in zip(machines, outputs):
        assert m.returncode == 0, err[-3000:]

    trials = [t for t in load(study_path, storage).trials if t.state != TrialState.WAITING]  # queued, unstarted
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.user_attrs["worker_pid"] for t in complete}) == 2  # both machines did trials
    mlflow.set_tracking_uri(tracking)
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("agestudy.role") == "trial"]
    # every trial completed exactly once: one finished run per trial, no duplicates
    assert sorted(int(r.data.tags["agestudy.trial"]) for r in children) == sorted(t.number for t in trials)
    assert {t.user_attrs["mlflow_run_id"] for t in trials} == {r.info.run_id for r in children}
    assert all(r.info.status == "FINISHED" for r in children)
