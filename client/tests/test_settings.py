import re

import dask.config
import pytest

from htcdaskgateway.errors import SettingError
from htcdaskgateway.settings import HTCondorSettings


def test_defaults_come_from_the_shipped_yaml():
    settings = HTCondorSettings.from_config()
    assert settings.worker.cores == 1
    assert settings.worker.memory == 2 * 2**30
    assert settings.worker.nthreads == 1
    assert settings.scheduler_address is None


def test_precedence_kwargs_over_env_over_config(monkeypatch):
    with dask.config.set({"gateway.htcondor.worker.cores": 2}):
        assert HTCondorSettings.from_config().worker.cores == 2
        monkeypatch.setenv("DASK_GATEWAY__HTCONDOR__WORKER__CORES", "3")
        dask.config.refresh()
        assert HTCondorSettings.from_config().worker.cores == 3
        settings = HTCondorSettings.from_config({"worker": {"cores": 4, "death_timeout": 5}})
        assert settings.worker.cores == 4
        assert settings.worker.nthreads == 4
        assert settings.worker.death_timeout == 5


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"worker": {"cores": -1}}, "worker.cores"),
        ({"worker": {"cores": 1.5}}, "worker.cores"),
        ({"worker": {"cores": "2"}}, "worker.cores"),
        ({"worker": {"memory": "1XB"}}, "worker.memory"),
        ({"worker": {"disk": 0}}, "worker.disk"),
        ({"worker": {"death-timeout": 0}}, "worker.death-timeout"),
        ({"worker": {"extra-args": "--foo"}}, "worker.extra-args"),
        ({"scheduler-address": "127.0.0.1:8786"}, "scheduler-address"),
        ({"worker": {"corez": 1}}, "worker.corez"),
        ({"submit": {"batch-name": "x-{unknown}"}}, "submit.batch-name"),
        ({"worker": 3}, "worker"),
        ({"worker": {"universe": "grid"}}, "worker.universe"),
        ({"worker": {"universe": "container"}}, "worker.image"),
        ({"worker": {"lifetime": -5}}, "worker.lifetime"),
        ({"worker": {"contact-address": "10.0.0.1:9000"}}, "worker.contact-address"),
        ({"lease": 2.5}, "lease"),
        ({"watch-interval": 0}, "watch-interval"),
        ({"watch-interval": float("nan")}, "watch-interval"),
        ({"worker": {"death-timeout": float("inf")}}, "worker.death-timeout"),
        ({"worker": {"memory": float("nan")}}, "worker.memory"),
        ({"worker": {"memory": "nan GiB"}}, "worker.memory"),
        ({"submit": {"attributes": {"bad name": "1"}}}, "submit.attributes"),
        ({"submit": {"attributes": {"Group": ["x"]}}}, "submit.attributes.Group"),
        ({"submit": {"requirements": ""}}, "submit.requirements"),
    ],
)
def test_invalid_values_name_the_setting(overrides, named):
    with pytest.raises(SettingError, match=rf"gateway\.htcondor\.{named}"):
        HTCondorSettings.from_config(overrides)


def test_extra_directives_are_open():
    settings = HTCondorSettings.from_config(
        {"submit": {"extra_directives": {"+AccountingGroup": '"cms"', "request_gpus": 1}}}
    )
    assert dict(settings.submit.extra_directives) == {
        "+AccountingGroup": '"cms"',
        "request_gpus": "1",
    }


def test_attributes_keep_their_names():
    settings = HTCondorSettings.from_config(
        {"submit": {"attributes": {"Accounting_Group": '"cms"', "Prio": 3, "Flag": True}}}
    )
    assert settings.submit.attributes == (
        ("Accounting_Group", '"cms"'),
        ("Prio", "3"),
        ("Flag", "true"),
    )


def test_lease_zero_or_null_disables_it():
    assert HTCondorSettings.from_config({"lease": 0}).lease == 0
    assert HTCondorSettings.from_config({"lease": None}).lease == 0
    assert HTCondorSettings.from_config().lease == 60


def test_a_key_set_by_environment_variable_can_be_overridden(monkeypatch):
    # DASK_GATEWAY__HTCONDOR__SCHEDD_CONSTRAINT gives the key with an underscore.
    import dask

    monkeypatch.setenv("DASK_GATEWAY__HTCONDOR__SCHEDD_CONSTRAINT", 'Name == "a"')
    dask.config.refresh()
    try:
        assert HTCondorSettings.from_config().schedd_constraint == 'Name == "a"'
        settings = HTCondorSettings.from_config({"schedd-constraint": "true", "schedd": ["a", "b"]})
        assert settings.schedd_constraint == "true" and settings.schedd == ("a", "b")
    finally:
        monkeypatch.delenv("DASK_GATEWAY__HTCONDOR__SCHEDD_CONSTRAINT")
        dask.config.refresh()


def test_api_ca_is_pem_inline_or_from_a_file(tmp_path):
    from .conftest import make_credentials

    cert, _ = make_credentials()
    assert HTCondorSettings.from_config({"api-ca": cert}).api_ca == cert
    path = tmp_path / "ca.pem"
    path.write_text(cert)
    assert HTCondorSettings.from_config({"api-ca": str(path)}).api_ca == cert
    assert HTCondorSettings.from_config().api_ca is None
    for bad in (str(tmp_path / "missing.pem"), "-----BEGIN PRIVATE KEY-----\n..."):
        with pytest.raises(SettingError, match=r"gateway\.htcondor\.api-ca"):
            HTCondorSettings.from_config({"api-ca": bad})


def test_api_ca_reaches_the_gateways_requests():
    import ssl

    from htcdaskgateway import HTCGateway

    from .conftest import make_credentials

    cert, _ = make_credentials()
    with HTCGateway(address="https://gateway.invalid", htcondor={"api-ca": cert}) as gateway:
        context = gateway._request_kwargs["ssl"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED
        # Only this certificate: the system's store is not loaded beside it.
        assert context.cert_store_stats()["x509"] == 1


# -- safeguards: what keeps jobs owned, leased and secret, by attribute name --


@pytest.mark.parametrize(
    "key",
    ["MY.PeriodicRemove", "+periodicremove", "my.Requirements", "+Requirements",
     "MY.TransferInput", "+TransferExecutable", "MY.Cmd", "+Environment", "my.env",
     "MY.Args", "+Arguments", "MY.Iwd", "+GetEnv", "MY.LeaveJobInQueue", "+User",
     "my.owner", "+ PeriodicRemove", "MY.HTCDaskGatewayLeaseExpiry"],
)  # fmt: skip
def test_extra_directives_cannot_set_protected_attributes_whatever_the_prefix_or_case(key):
    with pytest.raises(SettingError, match=rf"submit\.extra-directives\.{re.escape(key)} may not"):
        HTCondorSettings.from_config({"submit": {"extra-directives": {key: "true"}}})


@pytest.mark.parametrize(
    "name",
    ["TransferInput", "Cmd", "PeriodicRemove", "requirements", "Environment", "Env", "Iwd",
     "Arguments", "Args", "TransferExecutable", "LeaveJobInQueue", "Owner", "User", "GetEnv"],
)  # fmt: skip
def test_attributes_cannot_set_protected_attributes_whatever_the_case(name):
    with pytest.raises(SettingError, match=rf"submit\.attributes\.{name} may not be set"):
        HTCondorSettings.from_config({"submit": {"attributes": {name: '"x"'}}})


def test_a_refused_requirements_attribute_points_to_submit_requirements():
    for submit in ({"attributes": {"Requirements": "true"}},
                   {"extra-directives": {"MY.Requirements": "true"}}):  # fmt: skip
        with pytest.raises(SettingError, match=r"gateway\.htcondor\.submit\.requirements"):
            HTCondorSettings.from_config({"submit": submit})


def test_the_facilitys_own_attributes_and_commands_pass():
    allowed = {
        "+AccountingGroup": '"cms"', "MY.KillSig": '"SIGTERM"', "kill_sig": "SIGTERM",
        "requirements": "OpSysMajorVer == 9", "request_gpus": "1", "+Cmdline": '"x"',
    }  # fmt: skip
    settings = HTCondorSettings.from_config(
        {"submit": {"extra-directives": allowed, "attributes": {"Environments": '"x"'}}}
    )
    assert dict(settings.submit.extra_directives) == allowed
    assert settings.submit.attributes == (("Environments", '"x"'),)


# -- minimums: values below them would hammer the schedd or lapse the lease --


@pytest.mark.parametrize(
    ("overrides", "named", "minimum"),
    [
        ({"lease": 1}, "lease", "3"),
        ({"lease": 2}, "lease", "3"),
        ({"schedd-timeout": 1e-9}, "schedd-timeout", "1"),
        ({"schedd-timeout": 0.5}, "schedd-timeout", "1"),
        ({"watch-interval": 0.01}, "watch-interval", "1"),
    ],
)
def test_values_below_the_minimum_name_the_setting_and_the_minimum(overrides, named, minimum):
    with pytest.raises(SettingError, match=rf"gateway\.htcondor\.{named} must be .*>= {minimum}"):
        HTCondorSettings.from_config(overrides)


def test_the_minimums_themselves_pass():
    settings = HTCondorSettings.from_config({"lease": 3, "schedd-timeout": 1, "watch-interval": 1})
    assert (settings.lease, settings.schedd_timeout, settings.watch_interval) == (3, 1.0, 1.0)


def _cluster_with(htcondor: dict | None = None):
    from htcdaskgateway import HTCGatewayCluster

    cluster = object.__new__(HTCGatewayCluster)
    cluster._prepare(htcondor)
    return cluster


@pytest.mark.parametrize("interval", [0, "0s", 0.5, "100ms"])
def test_adapt_refuses_an_interval_below_the_minimum_naming_it(interval):
    # interval=0 polled the schedd in a tight loop (1,400 calls/s against the fake).
    with pytest.raises(SettingError, match=r"adapt\(interval=\.\.\.\) .*at least 1 s"):
        _cluster_with().adaptive(0, 2, interval=interval)


@pytest.mark.parametrize("target_duration", [0, "0s"])
def test_adapt_refuses_a_target_duration_of_zero(target_duration):
    with pytest.raises(SettingError, match=r"adapt\(target_duration=\.\.\.\) .*more than 0"):
        _cluster_with().adaptive(0, 2, target_duration=target_duration)


@pytest.mark.parametrize("wait_count", [0, -1, 1.5, True, "3"])
def test_adapt_refuses_a_wait_count_that_is_not_a_whole_number_from_1(wait_count):
    with pytest.raises(SettingError, match=r"adapt\(wait_count=\.\.\.\)"):
        _cluster_with().adaptive(0, 2, wait_count=wait_count)


def test_adapt_takes_the_minimum_interval():
    target = _cluster_with().adaptive(0, 2, interval="1s", target_duration="100ms")
    assert (target.interval, target.target_duration) == (1.0, 0.1)


# -- worker groups (issue 27) --------------------------------------------------


def test_a_group_takes_its_own_shape_and_cap_and_keeps_the_clusters_rest():
    from htcdaskgateway.settings import HTCondorSettings

    base = HTCondorSettings.from_config({"lease": 30, "worker": {"cores": 2}})
    gpu = base.for_group("gpu", {"worker": {"gpus": 1, "memory": "16 GiB"}, "max-jobs": 4})
    assert (gpu.worker.gpus, gpu.worker.memory, gpu.max_jobs) == (1, 16 * 2**30, 4)
    assert gpu.worker.cores == 2 and gpu.lease == 30, "the rest is the cluster's"
    assert gpu.worker.dask_resources == (("GPU", 1.0),)


@pytest.mark.parametrize(
    ("name", "group", "message"),
    [
        ("GPU", {}, "Not a worker group name"),
        ("gpu", {"lease": 5}, r"worker-groups\.gpu\.lease cannot differ between worker groups"),
        ("gpu", {"worker": {"gpus": -1}}, r"worker\.gpus must be a whole number >= 0"),
        ("gpu", {"worker": {"resources": {"GPU": 1}}}, r"worker\.resources"),
        ("gpu", {"worker": {"colour": 1}}, r"Unknown setting .*worker-groups\.gpu\.worker\.colour"),
    ],
)
def test_a_bad_group_is_refused_naming_it(name, group, message):
    from htcdaskgateway.settings import HTCondorSettings

    with pytest.raises(SettingError, match=message):
        HTCondorSettings.from_config().for_group(name, group)


def test_an_operators_preset_is_checked_when_the_config_is_read():
    from htcdaskgateway.settings import HTCondorSettings

    with pytest.raises(SettingError, match=r"worker-groups\.big\.max-jobs|max-jobs"):
        HTCondorSettings.from_config({"worker-groups": {"big": {"max-jobs": 0}}})
    settings = HTCondorSettings.from_config({"worker-groups": {"gpu": {"worker": {"gpus": 1}}}})
    assert dict(settings.worker_groups) == {"gpu": {"worker": {"gpus": 1}}}


def test_kept_claims_are_asked_for_within_the_operators_cap():
    from htcdaskgateway.settings import HTCondorSettings
    from htcdaskgateway.submit import worker_job_description

    settings = HTCondorSettings.from_config({"worker": {"keep-claim-idle": 600}})
    description = worker_job_description(
        settings, "c1", "tls://proxy:8786", "/spool", user="alice", gateway_id="g", lease=60,
        schedd="s", group=None,
    )  # fmt: skip
    assert description["keep_claim_idle"] == "600"
    off = HTCondorSettings.from_config({"worker": {"keep-claim-idle": 0}})
    assert off.worker.keep_claim_idle == 0
    with pytest.raises(SettingError, match=r"keep-claim-idle is 7200 s.*at most 3600 s"):
        HTCondorSettings.from_config({"worker": {"keep-claim-idle": 7200}})
    with pytest.raises(SettingError, match="at most 60 s"):
        HTCondorSettings.from_config({"max-keep-claim-idle": 60})  # the default 300 is above
    longer_group = {"gpu": {"worker": {"keep-claim-idle": 3601}}}
    with pytest.raises(SettingError, match="at most 3600 s"):  # a group, as a preset is
        HTCondorSettings.from_config({"worker-groups": longer_group})
    with pytest.raises(SettingError, match="cannot differ between worker groups"):
        HTCondorSettings.from_config({"worker-groups": {"gpu": {"max-keep-claim-idle": 7200}}})
    with pytest.raises(SettingError, match="keep_claim_idle"):
        HTCondorSettings.from_config({"submit": {"extra-directives": {"keep_claim_idle": "9999"}}})
    with pytest.raises(SettingError, match="KeepClaimIdle"):
        HTCondorSettings.from_config({"submit": {"attributes": {"KeepClaimIdle": "9999"}}})
