"""Entry point of a worker job: start ``dask worker`` from the job's credentials.

HTCondor runs this on the execute node inside the worker environment. The
cluster's certificate and key arrive as transferred input files in the
job's sandbox; they are made private and handed to dask by path. The worker
dials the gateway's proxy over TLS with the cluster's SNI name, so no
address of the scheduler itself is needed.

``dask worker`` runs in this same interpreter (``runpy``, as ``python -m``
would), not in a second one started with ``exec``: a worker's start is
mostly the CPU of its imports, and many workers start at once on a node.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__
from .naming import CERT_FILE, KEY_FILE


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="htcdaskgateway-worker",
        description="Start a dask worker for a dask-gateway cluster inside an HTCondor job.",
        epilog="Arguments after -- are passed to `dask worker` unchanged.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--scheduler-address", required=True, help="tls://host:port of the proxy")
    parser.add_argument("--sni", required=True, help="TLS server name of the cluster's scheduler")
    parser.add_argument("--name", required=True, help="worker name (htc-<job id>)")
    parser.add_argument("--nthreads", type=int, default=1)
    parser.add_argument("--memory-limit", default="auto")
    parser.add_argument("--death-timeout", type=float, default=60.0)
    parser.add_argument("--host", help="address to listen on and advertise to the scheduler")
    parser.add_argument("--contact-address", help="address the scheduler dials, behind NAT")
    parser.add_argument("--lifetime", type=int, help="seconds before the worker retires")
    parser.add_argument("--resources", help='dask worker resources, e.g. "GPU=1 FPGA=2"')
    parser.add_argument("--tls-cert", type=Path, default=Path(CERT_FILE))
    parser.add_argument("--tls-key", type=Path, default=Path(KEY_FILE))
    parser.add_argument("extra", nargs="*", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


DASK_WORKER_MODULE = "distributed.cli.dask_worker"


def worker_command(args: argparse.Namespace) -> list[str]:
    """The ``dask worker`` command line (``python -m`` + module + arguments)."""
    # No nanny: the nanny's own connection to the scheduler carries no SNI,
    # so the proxy would drop it; HTCondor already restarts nothing and
    # cleans up after the process, which is what the nanny is for.
    command = [
        sys.executable, "-m", DASK_WORKER_MODULE, args.scheduler_address,
        "--scheduler-sni", args.sni,
        "--name", args.name,
        "--nthreads", str(args.nthreads),
        "--memory-limit", args.memory_limit,
        "--death-timeout", f"{args.death_timeout:g}",
        "--no-nanny",
        "--no-dashboard",
    ]  # fmt: skip
    if args.contact_address:
        # dask worker takes a contact address only with a listen address
        # (and then no --host): it listens on the contact address's port,
        # on worker.host or every interface, as port forwarding to the
        # same port behind NAT has it.
        command += [
            "--listen-address", listen_address(args.contact_address, args.host),
            "--contact-address", args.contact_address,
        ]  # fmt: skip
    elif args.host:
        command += ["--host", args.host]
    if args.lifetime:
        command += ["--lifetime", f"{args.lifetime}s"]
    if args.resources:
        command += ["--resources", args.resources]
    return command + list(args.extra)


def listen_address(contact_address: str, host: str | None) -> str:
    """Where a worker behind ``contact_address`` listens: that port, on ``host`` or everywhere."""
    from distributed.comm import get_address_host_port, parse_address  # dask's own parsing

    try:
        scheme, _ = parse_address(contact_address)
        _, port = get_address_host_port(contact_address, strict=True)
    except ValueError:
        sys.exit(f"htcdaskgateway-worker: the contact address {contact_address} names no port")
    return f"{scheme}://{host or '0.0.0.0'}:{port}"


def tls_environment(cert: Path, key: Path) -> dict[str, str]:
    return {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(cert),
        "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT": str(cert),
        "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY": str(key),
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    cert, key = args.tls_cert.resolve(), args.tls_key.resolve()
    for path in (cert, key):
        if not path.is_file():
            sys.exit(
                f"htcdaskgateway-worker: {path} is missing; it must be a transferred input file"
            )
        path.chmod(0o600)
    # Before dask is imported: its config reads the environment then.
    os.environ.update(tls_environment(cert, key))
    command = worker_command(args)
    sys.argv = [command[0], *command[3:]]
    runpy.run_module(DASK_WORKER_MODULE, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
