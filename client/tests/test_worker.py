import os
import stat
import sys

import pytest

from htcdaskgateway import worker


def test_worker_command_uses_sni_and_no_nanny():
    args = worker.parse_args(
        ["--scheduler-address", "tls://127.0.0.1:18786", "--sni", "daskgateway-x",
         "--name", "htc-3.1", "--nthreads", "2", "--host", "127.0.0.1", "--", "--lifetime", "1h"]
    )  # fmt: skip
    command = worker.worker_command(args)
    assert command[:4] == [sys.executable, "-m", "distributed.cli.dask_worker",
                           "tls://127.0.0.1:18786"]  # fmt: skip
    joined = " ".join(command)
    assert "--scheduler-sni daskgateway-x" in joined
    assert "--name htc-3.1" in joined and "--nthreads 2" in joined
    assert "--no-nanny" in command and "--host 127.0.0.1" in joined
    assert command[-2:] == ["--lifetime", "1h"]


def test_tls_environment_names_paths_only(tmp_path):
    env = worker.tls_environment(tmp_path / "dask.crt", tmp_path / "dask.pem")
    assert env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"] == str(tmp_path / "dask.pem")
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"


def test_missing_credentials_exit_with_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=r"dask\.crt is missing"):
        worker.main(["--scheduler-address", "tls://h:1", "--sni", "s", "--name", "n"])


def test_credentials_made_private_before_dask_starts_in_this_interpreter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("dask.crt", "dask.pem"):
        (tmp_path / name).write_text("x")
        os.chmod(tmp_path / name, 0o644)
    seen = {}

    def fake_run_module(module, run_name, alter_sys):
        seen["modes"] = [
            stat.S_IMODE(os.stat(tmp_path / n).st_mode) for n in ("dask.crt", "dask.pem")
        ]
        seen["env"] = dict(os.environ)
        seen["call"] = module, run_name, list(sys.argv)
        raise SystemExit(0)

    monkeypatch.setattr(worker.runpy, "run_module", fake_run_module)
    monkeypatch.setattr(sys, "argv", ["htcdaskgateway-worker"])
    for name in worker.tls_environment(tmp_path, tmp_path):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit):
        worker.main(["--scheduler-address", "tls://h:1", "--sni", "s", "--name", "n"])
    assert seen["modes"] == [0o600, 0o600]
    assert seen["env"]["DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT"] == str(tmp_path / "dask.crt")
    module, run_name, argv = seen["call"]
    assert (module, run_name) == ("distributed.cli.dask_worker", "__main__")
    assert argv[1:4] == ["tls://h:1", "--scheduler-sni", "s"]


def test_worker_entry_point_does_not_import_the_client():
    # Nothing of the client is imported before `dask worker` starts: a
    # worker's start is mostly the CPU of its imports.
    import subprocess
    import sys

    code = (
        "import sys, htcdaskgateway.worker; "
        "print(sorted(m for m in ('dask_gateway', 'htcondor2', 'distributed', 'aiohttp') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_import_on_first_use():
    import htcdaskgateway

    assert htcdaskgateway.HTCGateway.__name__ == "HTCGateway"
    assert set(htcdaskgateway.__all__) <= set(dir(htcdaskgateway))


def test_a_contact_address_comes_with_the_listen_address_dask_worker_requires():
    """dask worker refuses --contact-address without --listen-address (and
    --listen-address beside --host): the worker exited at once (issue 30)."""
    from htcdaskgateway.worker import parse_args, worker_command

    base = ["--scheduler-address", "tls://proxy:8786", "--sni", "s", "--name", "htc-1.0"]
    command = worker_command(parse_args([*base, "--contact-address", "tls://203.0.113.5:40001"]))
    assert command[command.index("--listen-address") + 1] == "tls://0.0.0.0:40001"
    assert "--host" not in command
    command = worker_command(
        parse_args([*base, "--host", "10.0.0.7", "--contact-address", "tls://nat.example:40001"])
    )
    assert command[command.index("--listen-address") + 1] == "tls://10.0.0.7:40001"
    assert "--host" not in command
    assert command[command.index("--contact-address") + 1] == "tls://nat.example:40001"
    command = worker_command(parse_args([*base, "--host", "10.0.0.7"]))
    assert command[command.index("--host") + 1] == "10.0.0.7"
