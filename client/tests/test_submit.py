from pathlib import Path

import pytest

from htcdaskgateway.settings import HTCondorSettings
from htcdaskgateway.submit import quote_arguments, worker_job_description

from .conftest import make_credentials

FILES = [Path("/stage/dask.crt"), Path("/stage/dask.pem")]


def describe(**overrides):
    settings = HTCondorSettings.from_config(overrides)
    return worker_job_description(settings, "abc123", "tls://127.0.0.1:18786", FILES)


def test_description_names_cluster_and_worker():
    description = describe()
    assert description["MY.HTCDaskGatewayCluster"] == '"abc123"'
    assert description["batch_name"] == "dask-abc123"
    assert "--sni daskgateway-abc123" in description["arguments"]
    assert "--name htc-$(ClusterId).$(ProcId)" in description["arguments"]
    assert "--scheduler-address tls://127.0.0.1:18786" in description["arguments"]


def test_credentials_travel_as_files_only():
    cert, key = make_credentials()
    description = describe()
    assert description["transfer_input_files"] == "/stage/dask.crt,/stage/dask.pem"
    text = repr(description)
    assert "BEGIN" not in text
    assert cert not in text and key not in text
    assert "environment" not in description


def test_jobs_leave_the_queue_and_die_promptly():
    description = describe(worker={"kill-timeout": 7})
    assert description["leave_in_queue"] == "false"
    assert description["job_max_vacate_time"] == "7"


def test_resources_in_condor_units():
    description = describe(worker={"cores": 2, "memory": "3 GiB", "disk": "500 MiB"})
    assert description["request_cpus"] == "2"
    assert description["request_memory"] == "3072"
    assert description["request_disk"] == str(500 * 1024)
    assert "--nthreads 2" in description["arguments"]


def test_extra_directives_and_args():
    description = describe(
        submit={"extra-directives": {"requirements": "OpSysMajorVer == 9"}},
        worker={"extra-args": ["--resources", "GPU=1"], "host": "10.0.0.1"},
    )
    assert description["requirements"] == "OpSysMajorVer == 9"
    assert description["arguments"].endswith('--host 10.0.0.1 -- --resources GPU=1"')


def test_refuses_names_that_are_not_gateway_cluster_names():
    settings = HTCondorSettings.from_config()
    with pytest.raises(ValueError, match="cluster name"):
        worker_job_description(settings, 'x" || true', "tls://h:1", FILES)


@pytest.mark.parametrize(
    ("args", "quoted"),
    [
        (["a", "b"], '"a b"'),
        (["a b"], "\"'a b'\""),
        (["it's"], "\"'it''s'\""),
        (['say "hi"'], '"\'say ""hi""\'"'),
        ([""], "\"''\""),
    ],
)
def test_quote_arguments(args, quoted):
    assert quote_arguments(args) == quoted
