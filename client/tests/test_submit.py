import re
from pathlib import Path

import pytest

from htcdaskgateway.errors import SettingError
from htcdaskgateway.settings import HTCondorSettings
from htcdaskgateway.submit import (
    credentials_job_description,
    quote_arguments,
    worker_job_description,
)

from .conftest import make_credentials

FILES = [Path("/stage/dask.crt"), Path("/stage/dask.pem")]
SPOOL = "/var/spool/condor/7/0/cluster7.proc0.subproc0"


GATEWAY = "http://gateway.test:8000"


def describe(lease=None, **overrides):
    settings = HTCondorSettings.from_config(overrides)
    return worker_job_description(
        settings, "abc123", "tls://127.0.0.1:18786", SPOOL, user="alice", gateway_id=GATEWAY,
        lease=lease,
    )  # fmt: skip


def test_description_names_cluster_and_worker():
    description = describe()
    assert description["MY.HTCDaskGatewayCluster"] == '"abc123"'
    assert description["MY.HTCDaskGatewayUser"] == '"alice"'
    assert description["MY.HTCDaskGatewayGateway"] == f'"{GATEWAY}"'
    assert description["batch_name"] == "dask-abc123"
    assert "--sni daskgateway-abc123" in description["arguments"]
    assert "--name htc-$(ClusterId).$(ProcId)" in description["arguments"]
    assert "--scheduler-address tls://127.0.0.1:18786" in description["arguments"]


def test_credentials_travel_as_files_only_from_the_credentials_jobs_spool():
    cert, key = make_credentials()
    description = describe()
    assert description["transfer_input_files"] == f"{SPOOL}/dask.crt,{SPOOL}/dask.pem"
    assert description["initialdir"] == "/"
    text = repr(description)
    assert "BEGIN" not in text
    assert cert not in text and key not in text
    # The environment carries the workers' dask config only, never TLS settings.
    assert "TLS" not in description.get("environment", "")


def test_credentials_job_spools_the_files_and_never_runs():
    settings = HTCondorSettings.from_config(
        {"submit": {"extra-directives": {"requirements": "true", "accounting_group": "cms"}}}
    )
    description = credentials_job_description(
        settings, "abc123", FILES, user="alice", gateway_id=GATEWAY, lease=60
    )
    assert description["transfer_input_files"] == "/stage/dask.crt,/stage/dask.pem"
    assert description["requirements"] == "false", "extra directives cannot make it run"
    assert description["accounting_group"] == "cms", "the facility's directives still apply"
    assert description["MY.HTCDaskGatewayRole"] == '"credentials"'
    assert description["MY.HTCDaskGatewayCluster"] == '"abc123"'
    assert description["MY.HTCDaskGatewayLeaseExpiry"] == "QDate + 60"
    assert description["periodic_remove"] == describe(lease=60)["periodic_remove"]
    assert "MY.HTCDaskGatewayRole" not in describe(), "worker jobs have no role"


def test_nothing_is_transferred_back():
    description = describe()
    assert description["transfer_output_files"] == '""'
    assert description["when_to_transfer_output"] == "ON_EXIT"


def test_jobs_leave_the_queue_and_die_promptly():
    description = describe(worker={"kill-timeout": 7})
    assert description["leave_in_queue"] == "false"
    assert description["job_max_vacate_time"] == "7"
    assert description["kill_sig"] == "SIGKILL"


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
        worker_job_description(settings, 'x" || true', "tls://h:1", SPOOL, user="a", gateway_id="g")


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


def test_lease_removes_idle_and_held_jobs_and_lifetime_only_running_ones():
    # Without a lease the attribute is undefined and the rule never fires.
    assert "MY.HTCDaskGatewayLeaseExpiry" not in describe()
    description = describe(lease=60, worker={"lifetime": 3600})
    # Relative to QDate, which the schedd sets on its own clock.
    assert description["MY.HTCDaskGatewayLeaseExpiry"] == "QDate + 60"
    rules = description["periodic_remove"]
    assert (
        "((JobStatus == 1 || JobStatus == 5) && HTCDaskGatewayLeaseExpiry < time()"
        " && time() - EnteredCurrentStatus > 60)"
    ) in rules
    assert "(JobStatus == 2 && time() - EnteredCurrentStatus > 3610)" in rules
    assert "--lifetime 3600" in description["arguments"]


def test_container_universe_and_extra_requirements_and_attributes():
    description = describe(
        worker={"universe": "container", "image": "docker://example/worker:1",
                "contact-address": "tcp://198.51.100.7:4000"},
        submit={"requirements": "HasSingularity", "attributes": {"AccountingGroup": '"cms"'}},
    )  # fmt: skip
    assert description["universe"] == "container"
    assert description["container_image"] == "docker://example/worker:1"
    assert description["requirements"] == "(HasSingularity)"
    assert description["MY.AccountingGroup"] == '"cms"'
    assert "--contact-address tcp://198.51.100.7:4000" in description["arguments"]
    docker = describe(worker={"universe": "docker", "image": "example/worker:1"})
    assert docker["docker_image"] == "example/worker:1"


def test_user_names_are_quoted_as_classad_strings():
    settings = HTCondorSettings.from_config()
    description = worker_job_description(
        settings, "abc123", "tls://h:1", SPOOL, user='ev"il\\', gateway_id="g"
    )
    assert description["MY.HTCDaskGatewayUser"] == '"ev\\"il\\\\"'


@pytest.mark.parametrize(
    "key",
    ["MY.HTCDaskGatewayCluster", "+HTCDaskGatewayUser", "my.htcdaskgatewaygateway",
     "MY.HTCDaskGatewayLeaseExpiry", "periodic_remove", "getenv", "Environment",
     "transfer_input_files", "arguments", "initialdir"],
)  # fmt: skip
def test_extra_directives_cannot_override_what_keeps_jobs_owned_leased_and_secret(key):
    with pytest.raises(SettingError, match=f"extra-directives.{re.escape(key)} may not be set"):
        describe(submit={"extra-directives": {key: "true"}})


def test_extra_attributes_cannot_take_htcdaskgateways_own_names():
    with pytest.raises(SettingError, match=r"attributes\.HTCDaskGatewayCluster may not be set"):
        describe(submit={"attributes": {"HTCDaskGatewayCluster": '"other"'}})


def test_worker_dask_config_reaches_the_job_as_dask_environment_variables():
    shipped = describe()
    assert shipped["environment"] == (
        '"DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=200ms '
        'DASK_DISTRIBUTED__WORKER__PROFILE__INTERVAL=100ms"'
    )
    described = describe(
        worker={
            "dask-config": {
                "distributed.admin.tick.interval": None,
                "distributed.worker.memory.target": 0.7,
                "distributed.scheduler.work-stealing": False,
                "distributed.worker.preload-argv": "a b",
            }
        }
    )
    assert described["environment"] == (
        '"DASK_DISTRIBUTED__WORKER__PROFILE__INTERVAL=100ms '
        "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET=0.7 "
        "DASK_DISTRIBUTED__SCHEDULER__WORK_STEALING=False "
        "'DASK_DISTRIBUTED__WORKER__PRELOAD_ARGV=a b'\""
    )
    no_config = describe(
        worker={
            "dask-config": {
                "distributed.admin.tick.interval": None,
                "distributed.worker.profile.interval": None,
            }
        }
    )
    assert "environment" not in no_config


@pytest.mark.parametrize(
    "config", [{"tick": "200ms"}, {"distributed.admin tick": 1}, {"distributed.x": [1]}]
)
def test_worker_dask_config_refuses_what_is_no_dotted_key_and_scalar(config):
    with pytest.raises(SettingError, match=r"gateway\.htcondor\.worker\.dask-config"):
        describe(worker={"dask-config": config})


def test_a_gpu_groups_job_asks_for_gpus_offers_them_to_dask_and_carries_its_group():
    settings = HTCondorSettings.from_config().for_group(
        "gpu", {"worker": {"gpus": 1, "require-gpus": "Capability >= 8.0",
                           "resources": {"FPGA": 2}}},
    )  # fmt: skip
    description = worker_job_description(
        settings, "abc123", "tls://127.0.0.1:18786", SPOOL, user="alice", gateway_id=GATEWAY,
        group="gpu",
    )  # fmt: skip
    assert description["request_gpus"] == "1"
    assert description["require_gpus"] == "Capability >= 8.0"
    assert description["MY.HTCDaskGatewayGroup"] == '"gpu"'
    assert "--resources 'FPGA=2 GPU=1'" in description["arguments"]
    default = describe()
    assert "request_gpus" not in default and "MY.HTCDaskGatewayGroup" not in default
    assert "--resources" not in default["arguments"]


def test_a_groups_selection_takes_only_its_jobs():
    from htcdaskgateway.jobs import JobSelector

    selector = JobSelector("alice@pool", GATEWAY, "abc123", gateway_user="alice")
    assert "HTCDaskGatewayGroup" not in selector.constraint()
    assert 'HTCDaskGatewayGroup == "gpu"' in selector.for_group("gpu").constraint()
    assert "HTCDaskGatewayGroup =?= undefined" in selector.for_group("default").constraint()
    # Removal and leases cover every group and the credentials job.
    assert "HTCDaskGatewayGroup" not in selector.for_group("gpu").every_job_constraint()


def test_an_idle_job_too_large_for_every_slot_names_the_resource():
    import classad2

    from htcdaskgateway.condor_calls import _too_large

    job = classad2.ClassAd({"RequestCpus": 1, "RequestMemory": 1024, "RequestGPUs": 3})
    slots = [classad2.ClassAd({"Cpus": 110, "Memory": 120000, "GPUs": 2})]
    assert _too_large(job, slots) == "it asks for 3 GPUs, the pool's largest slot has 2"
    job["RequestGPUs"] = 1
    assert _too_large(job, slots) is None
