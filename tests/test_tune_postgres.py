"""benchmarks/tune.py on several machines: two workers started at the same moment on a real
PostgreSQL server (the system's package, started here in a temporary folder), and the one-line
errors of a storage that cannot be used."""

import csv
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from helpers import ROOT, load_script, write_study

PASSWORD = "secret"


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of this module's own, on 127.0.0.1 at a free port, its data and unix
    socket in a temporary folder; yields a function that creates a database and returns its URL.
    Skipped, with the reason, where no server can be started."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    initdb = found[-1] if found else shutil.which("initdb")  # Debian's layout, else the PATH's
    if initdb is None:
        pytest.skip("no PostgreSQL server installed (Debian, Ubuntu: apt-get install postgresql)")
    bin_dir = Path(initdb).parent
    # initdb refuses to run as root: the server then runs as the postgres user, as Debian's does.
    user = None
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
    folder = Path(tempfile.mkdtemp(prefix="pg-"))  # short: a unix socket's path has at most 107 bytes
    (folder / "password").write_text(PASSWORD + "\n")
    if user:
        for path in (folder, folder / "password"):
            shutil.chown(path, user)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def server(program: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(bin_dir / program), *args]
        return subprocess.run(command, user=user, cwd=folder, capture_output=True, text=True, timeout=120)

    data = str(folder / "data")
    # Passwords over TCP, as a server for several machines asks; the socket, in a folder only
    # the server's user can enter, trusts its user (createdb below).
    password = str(folder / "password")
    started = server(
        "initdb",
        "-D",
        data,
        "-U",
        "postgres",
        "--pwfile",
        password,
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "-N",
    )
    if started.returncode == 0:
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        started = server("pg_ctl", "-D", data, "-l", str(folder / "log"), "-w", "-o", options, "start")
    if started.returncode != 0:
        log = (folder / "log").read_text() if (folder / "log").exists() else ""
        reason = (started.stderr + log).strip().splitlines()[-1:]
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"no PostgreSQL server could be started with {bin_dir}: {reason}")

    def create_database(name: str) -> str:
        made = server("createdb", "-h", str(folder), "-p", str(port), "-U", "postgres", name)
        assert made.returncode == 0, made.stderr
        return f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{port}/{name}"

    create_database.port = port
    try:
        yield create_database
    finally:
        server("pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


# A study of seconds: two trials of ppo_discrete.py on CartPole-v1 (8 updates of 256 steps), the
# first at a given starting point.
TWO_TRIALS = dict(
    trials=2,
    space={
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "ent_coef": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    },
    start=[{"learning_rate": 0.0042, "ent_coef": 0.01}],
)


# A worker: tune.py's command line, started once the heavy imports are done and the test says
# go, so that the workers reach the empty database together, as a job scheduler starts them.
WORKER = (
    "import runpy, sys; import optuna, psycopg, sqlalchemy, torch; print('ready', flush=True); "
    "sys.stdin.readline(); sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def test_two_workers_started_together_share_one_study(postgres, tmp_path):
    url = postgres("optuna")
    folders = [tmp_path / "a", tmp_path / "b"]  # two machines: the same study file, each its own copy
    for folder in folders:
        folder.mkdir()
        write_study(folder / "tiny.yaml", **TWO_TRIALS)
    tune = str(ROOT / "benchmarks" / "tune.py")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, tune, "tiny.yaml", "--storage", url],
            cwd=folder,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in folders
    ]
    assert [worker.stdout.readline() for worker in workers] == ["ready\n"] * 2
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err
        assert PASSWORD not in out + err  # the URL is printed without it

    # The study has its two finished trials (a third when both workers' trials were still running
    # as the second ended), numbered once each, each run by one worker, each at its own point;
    # the starting point is tried once.
    study = optuna.load_study(study_name="tiny", storage=url)
    trials = study.trials
    assert 2 <= len(trials) <= 3 and [t.number for t in trials] == list(range(len(trials)))
    assert {t.state.name for t in trials} == {"COMPLETE"}
    ran = [{p.name for p in (folder / "runs" / "tiny").iterdir()} for folder in folders]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # both worked, never on the same trial
    assert ran[0] | ran[1] == {f"trial{t.number}" for t in trials}
    assert len({t.user_attrs["flags"] for t in trials}) == len(trials)  # no point drawn twice
    assert sum(t.params == {"learning_rate": 0.0042, "ent_coef": 0.01} for t in trials) == 1

    # Each wrote its report once every trial had ended: the same table, plots and best command.
    with open(folders[0] / "tiny-trials.csv") as f:
        assert [row["state"] for row in csv.DictReader(f)] == ["COMPLETE"] * len(trials)
    for name in ("tiny-trials.csv", "tiny-history.png", "tiny-importances.png"):
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes(), name
    best = [[line for line in out.splitlines() if line.startswith("best")] for out, _ in outputs]
    assert len(best[0]) == 2 and best[0] == best[1]


@pytest.mark.parametrize(
    "case, message",
    [
        ("no psycopg2", 'needs the driver psycopg2: pip install psycopg2-binary (or, with "psycopg[binary]"'),
        ("no psycopg", 'needs the driver psycopg: pip install "psycopg[binary]" (or, with psycopg2-binary'),
        ("wrong password", 'password authentication failed for user "postgres"'),
        ("no server", "Connection refused"),
        ("no database", 'database "missing" does not exist'),
    ],
)
def test_a_storage_that_cannot_be_used_is_refused_in_one_line(request, tmp_path, monkeypatch, capsys, case, message):
    tune = load_script("benchmarks/tune")
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if case in ("wrong password", "no database"):
        port = request.getfixturevalue("postgres").port
    url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{port}/optuna"
    if case == "no psycopg2":
        monkeypatch.setitem(sys.modules, "psycopg2", None)  # an import of it fails, installed or not
        url = url.replace("+psycopg", "+psycopg2")
    elif case == "no psycopg":
        monkeypatch.setitem(sys.modules, "psycopg", None)
    elif case == "wrong password":
        url = url.replace(PASSWORD, "wrong")
    elif case == "no database":
        url = url.replace("/optuna", "/missing")
    write_study(tmp_path / "tiny.yaml", **TWO_TRIALS)
    with pytest.raises(SystemExit) as exit:
        tune.main([str(tmp_path / "tiny.yaml"), "--storage", url, "--report"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("tune.py: error: --storage postgresql+psycopg")
    assert err.count("\n") == 1 and message in err and PASSWORD not in err, err
