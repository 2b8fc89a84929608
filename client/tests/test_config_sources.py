"""Issue 30: a gateway address preset in the environment beats the file an
operator hands the analyst; the client says so instead of making the cluster
on one gateway and sending its workers to another's proxy."""

from __future__ import annotations

import logging

from htcdaskgateway.config import environment_overrides, environment_variable

FILE = """
gateway:
  address: https://rig.example:30080
  proxy-address: tls://rig.example:30786
  htcondor:
    worker:
      host: 10.0.0.1
"""


def test_a_preset_that_beats_a_different_value_of_a_file_is_named(tmp_path):
    (tmp_path / "htcdaskgateway.yaml").write_text(FILE)
    environ = {
        "DASK_GATEWAY__ADDRESS": "http://127.0.0.1:18000",
        "DASK_GATEWAY__PROXY_ADDRESS": "tls://rig.example:30786",  # the same: nothing to say
        "DASK_GATEWAY__HTCONDOR__WORKER__HOST": "127.0.0.1",
    }
    said = environment_overrides(environ, [str(tmp_path)])
    assert len(said) == 2, said
    assert said[0].startswith(
        "DASK_GATEWAY__ADDRESS=http://127.0.0.1:18000 in the environment overrides "
        "gateway.address: https://rig.example:30080 from "
    ), said[0]
    assert "gateway.htcondor.worker.host: 10.0.0.1" in said[1]


def test_nothing_is_said_without_presets_or_without_files(tmp_path):
    (tmp_path / "htcdaskgateway.yaml").write_text(FILE)
    assert environment_overrides({}, [str(tmp_path)]) == []
    assert (
        environment_overrides({"DASK_GATEWAY__ADDRESS": "http://x:1"}, [str(tmp_path / "no")]) == []
    )


def test_variable_names_follow_dask():
    assert environment_variable("gateway.htcondor.scheduler-address") == (
        "DASK_GATEWAY__HTCONDOR__SCHEDULER_ADDRESS"
    )


def test_the_gateway_warns_at_creation(tmp_path, monkeypatch, caplog):
    import dask.config

    from htcdaskgateway import HTCGateway

    (tmp_path / "htcdaskgateway.yaml").write_text(FILE)
    monkeypatch.setattr(dask.config, "paths", [str(tmp_path)])
    monkeypatch.setenv("DASK_GATEWAY__ADDRESS", "http://127.0.0.1:18000")
    with caplog.at_level(logging.WARNING, logger="htcdaskgateway.gateway"):
        gateway = HTCGateway(address="http://127.0.0.1:18000")
        gateway.close()
    assert any("overrides gateway.address" in r.getMessage() for r in caplog.records)
