"""Offsite transfer benchmark: tokotani.dr's backup_offsite engine beside `aws s3 cp`, same file, same endpoint.

    .venv/bin/python bench/offsite.py --size-mb 200            # a random file (incompressible, like zstd output)
    .venv/bin/python bench/offsite.py --file /srv/backups/backup_2026-01-05_02-00-00.dir
    .venv/bin/python bench/offsite.py --file big.sql.gz --endpoint http://127.0.0.1:5000 --bucket bench

Without --endpoint a moto server (a real S3 API) is started on a random loopback port, over HTTPS
with a certificate made for the run (--transport https, the default: what a real endpoint speaks)
or over plain HTTP (--transport http). The transport changes what botocore does with each part:
over HTTPS the CRC32 goes in a trailer and the payload is not hashed for SigV4, so every part is
read once, as it is sent; over plain HTTP botocore reads each part three times (CRC32 header,
SigV4 payload hash, send), and an encrypted push seals each chunk three times.
A backup made by postgresql_backup (its manifest beside it) is pushed as it is; any other file
(or directory) is wrapped into a backup with a manifest first (not timed).

Each run times, in fresh processes (Python start and boto3 import included on both sides):

  push  ours     s3_offsite.push: multipart upload with sha256 metadata and CRC32 part checksums,
                 the local sha256 recomputed alongside, manifest uploaded last
        ours+enc the same with a backup key: client-side AES-256-GCM encryption as it uploads
        aws      aws s3 cp <file> s3://...   (aws s3 cp --recursive for a directory backup)
  pull  ours     s3_offsite.pull: ranged parallel download to .partial, sha256 verified, renamed
        ours+enc the same from the encrypted copy: every chunk authenticated and decrypted first
        aws      aws s3 cp s3://... <file>

and prints MB/s (10^6 bytes), wall seconds, peak RSS and CPU seconds of each, the best of --runs, the ratio
ours/aws, and what encryption costs (1 - MB/s with / MB/s without) against the targets: under
15 % of push throughput, peak RSS under 150 MB. The backup key of the encrypted rows is a
throwaway one, handed to the worker in TOKOTANI_BACKUP_KEY (never on a command line). Results
go to bench/results/offsite-<UTC time>.json (or --json). bench/run.py can call
run_offsite_bench() with the backup it made.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import json
import os
import platform
import secrets
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results"
LOOPBACK = "127.0.0.1"
ACCESS_KEY = "bench"
SECRET_KEY = "bench-secret"  # noqa: S105 - a throwaway moto server's credentials
REGION = "us-east-1"
KEY_ENV = "TOKOTANI_BACKUP_KEY"
TARGET_ENCRYPTION_COST = 0.15  # of push throughput
TARGET_ENCRYPTED_RSS_MB = 150
LABELS = ("push ours", "push ours+enc", "push aws", "pull ours", "pull ours+enc", "pull aws")


def log(msg: str) -> None:
    print(f"[offsite {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- endpoint


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def loopback_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made for this run (cert, key): the CA bundle is the cert itself."""
    import ipaddress  # noqa: PLC0415

    from cryptography import x509  # noqa: PLC0415 - only the parent needs it
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokotani bench moto server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "moto-cert.pem", workdir / "moto-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@contextlib.contextmanager
def moto_server(workdir: Path, transport: str = "https"):
    """A moto server on a random loopback port; yields (its URL, the CA bundle to trust or None)."""
    port = free_port()
    argv = [str(VENV_BIN / "moto_server"), "-H", LOOPBACK, "-p", str(port)]
    ca_bundle, context = None, None
    if transport == "https":
        ca_bundle, key_path = loopback_certificate(workdir)
        argv += ["-c", str(ca_bundle), "-k", str(key_path)]
        context = ssl.create_default_context(cafile=str(ca_bundle))
    logfile = (workdir / "moto.log").open("wb")
    proc = subprocess.Popen(argv, stdout=logfile, stderr=subprocess.STDOUT)
    url = f"{transport}://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/", timeout=2, context=context):  # noqa: S310 - loopback
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start; see {workdir / 'moto.log'}") from None
                time.sleep(0.2)
        yield url, ca_bundle
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        logfile.close()


def s3_client(endpoint: str, ca_bundle: Path | None = None):
    import boto3  # noqa: PLC0415 - only the parent needs it

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        verify=str(ca_bundle) if ca_bundle else None,
        region_name=REGION,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
    )


# --------------------------------------------------------------------------- the backup to move


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def random_file(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        left = size
        block = os.urandom(1 << 20)
        while left > 0:
            # new random bytes every MiB: nothing compresses or deduplicates
            block = hashlib.sha512(block).digest() + os.urandom((1 << 20) - 64)
            handle.write(block[: min(left, len(block))])
            left -= min(left, len(block))


def as_backup(source: Path, workdir: Path) -> tuple[Path, str]:
    """(backup_dir, name) of a backup to push: source itself when it has a manifest, else a wrapped copy."""
    name = source.name
    stem = name.split(".", 1)[0]
    if name.startswith("backup_") and (source.parent / f"{stem}.manifest.json").exists():
        return source.parent, stem
    backup_dir = workdir / "wrapped"
    backup_dir.mkdir(mode=0o700)
    when = datetime.datetime.now(datetime.UTC)  # one instant: started_at must fall in the second of the name
    stem = when.strftime("backup_%Y-%m-%d_%H-%M-%S")
    is_dir = source.is_dir()
    data = backup_dir / f"{stem}.{'dir' if is_dir else 'sql.gz'}"
    if is_dir:
        shutil.copytree(source, data)
        files = {}
        for path in sorted(p for p in data.rglob("*") if p.is_file()):
            rel = str(path.relative_to(data))
            files[rel] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        listing = hashlib.sha256()
        for rel in sorted(files):
            listing.update(f"{files[rel]['sha256']}  {files[rel]['size']}  {rel}\n".encode())
        size, digest = sum(f["size"] for f in files.values()), listing.hexdigest()
    else:
        try:
            os.link(source, data)
        except OSError:
            shutil.copyfile(source, data)
        files, size, digest = None, data.stat().st_size, sha256_file(data)
    now = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    manifest = {
        "manifest_version": 1,
        "name": stem,
        "data": data.name,
        "database": "bench",
        "format": "directory" if is_dir else "plain",
        "compression": "zstd" if is_dir else "gzip",
        "size": size,
        "sha256": digest,
        "started_at": now,
        "finished_at": now,
        "tables": [],
    }
    if files is not None:
        manifest["files"] = files
    (backup_dir / f"{stem}.manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return backup_dir, stem


# --------------------------------------------------------------------------- timed processes


def timed(argv: list[str], env: dict | None = None) -> dict:
    """Run argv; wall seconds and peak RSS (MB) of that one process (wait4), its output and exit status."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "seconds": round(wall, 3),
            "rc": proc.returncode,
            "stdout": out.read().decode(errors="replace")[-20000:],
            "stderr": err.read().decode(errors="replace")[-2000:],
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        }


def worker_argv(mode: str, opts: dict) -> list[str]:
    return [str(VENV_BIN / "python"), str(Path(__file__).resolve()), "--worker", mode, "--opts", json.dumps(opts)]


def worker(mode: str, opts: dict) -> None:
    """Child process: one push or pull through the engine; prints the result and the peak RSS."""
    sys.path.insert(0, str(ROOT / ".collections"))
    from ansible_collections.tokotani.dr.plugins.module_utils import s3_offsite  # noqa: PLC0415

    if opts.pop("encrypt", False):
        opts["backup_key"] = os.environ[KEY_ENV]
        opts["allow_unsigned"] = True  # the benchmark's backup is made without a key: the cost measured is encryption
    result = s3_offsite.run(opts, mode)
    result.pop("manifest", None)
    print(json.dumps(result, default=str))


def aws_env(ca_bundle: Path | None = None) -> dict:
    env = dict(os.environ)
    if ca_bundle:
        env["AWS_CA_BUNDLE"] = str(ca_bundle)
    env.update(
        AWS_ACCESS_KEY_ID=env.get("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        AWS_SECRET_ACCESS_KEY=env.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    env.pop("AWS_PROFILE", None)
    return env


def run_offsite_bench(
    source: Path,
    *,
    endpoint: str | None = None,
    bucket: str | None = None,
    runs: int = 1,
    concurrency: int = 8,
    chunk_mb: int = 16,
    workdir: Path | None = None,
    encryption: bool = True,
    transport: str = "https",
) -> dict:
    """Push and pull source with the engine and with `aws s3 cp`; returns the results (also for bench/run.py)."""
    own_tmp = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="tokotani-offsite-bench-")) if own_tmp else workdir
    try:
        with contextlib.ExitStack() as stack:
            ca_bundle = None
            if endpoint is None:
                endpoint, ca_bundle = stack.enter_context(moto_server(workdir, transport))
                log(f"moto server at {endpoint}")
            bucket = bucket or "tokotani-bench"
            client = s3_client(endpoint, ca_bundle)
            with contextlib.suppress(Exception):
                client.create_bucket(Bucket=bucket)
            return _bench(source, endpoint, bucket, runs, concurrency, chunk_mb, workdir, client, encryption, ca_bundle)
    finally:
        if own_tmp:
            shutil.rmtree(workdir, ignore_errors=True)


def _bench(source, endpoint, bucket, runs, concurrency, chunk_mb, workdir, client, encryption, ca_bundle):  # noqa: PLR0917
    backup_dir, name = as_backup(source, workdir)
    manifest = json.loads((backup_dir / f"{name}.manifest.json").read_text())
    data = backup_dir / manifest["data"]
    size = manifest["size"]
    is_dir = manifest["format"] == "directory"
    log(f"{data} ({size / 1e6:.1f} MB, {'directory' if is_dir else 'file'}), {runs} run(s)")
    opts = {
        "bucket": bucket,
        "endpoint_url": endpoint,
        "region": REGION,
        "access_key": os.environ.get("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        "secret_key": os.environ.get("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        "concurrency": concurrency,
        "multipart_threshold": chunk_mb * 1024 * 1024,
        "multipart_chunksize": chunk_mb * 1024 * 1024,
    }
    if ca_bundle:
        opts["ca_bundle"] = str(ca_bundle)
    env = aws_env(ca_bundle)
    aws = [str(VENV_BIN / "aws"), "--endpoint-url", endpoint, "--only-show-errors", "s3", "cp"]
    if is_dir:
        aws.append("--recursive")
    ours = {"ours": ({}, None)}
    if encryption:
        ours["ours+enc"] = ({"encrypt": True}, {**os.environ, KEY_ENV: secrets.token_urlsafe(32)})
    rows = {label: [] for label in LABELS if encryption or "+enc" not in label}
    for run in range(1, runs + 1):
        prefix = f"run{run}-{int(time.time())}"
        # push: ours (plain, then encrypted), then aws (different prefixes, same bytes)
        for label, (extra, worker_env) in ours.items():
            push_opts = {**opts, **extra, "prefix": f"{prefix}/{label}", "backup_dir": str(backup_dir), "backup": name}
            result = timed(worker_argv("push", {**push_opts, "force": True}), worker_env)
            check(result, f"push {label}")
            rows[f"push {label}"].append(result)
        aws_key = f"s3://{bucket}/{prefix}/aws/{data.name}"
        result = timed([*aws, str(data), aws_key], env)
        check(result, "push aws")
        rows["push aws"].append(result)
        # pull: ours (verified; the encrypted copy authenticated and decrypted first), then aws
        for label, (extra, worker_env) in ours.items():
            dest = workdir / f"pull-{label}-{run}"
            pull_opts = {**opts, **extra, "prefix": f"{prefix}/{label}", "backup_dir": str(dest), "backup": name}
            result = timed(worker_argv("pull", pull_opts), worker_env)
            check(result, f"pull {label}")
            rows[f"pull {label}"].append(result)
            shutil.rmtree(dest, ignore_errors=True)
        target = workdir / f"pull-aws-{run}" / data.name
        target.parent.mkdir()
        result = timed([*aws, aws_key, str(target)], env)
        check(result, "pull aws")
        rows["pull aws"].append(result)
        shutil.rmtree(target.parent, ignore_errors=True)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
            keys = [{"Key": o["Key"]} for o in page.get("Contents") or []]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    summary, targets = summarize(rows, size, encryption)
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "endpoint": endpoint,
        "file": str(data),
        "bytes": size,
        "format": manifest["format"],
        "runs": runs,
        "ours": {
            "concurrency": concurrency,
            "part_mb": chunk_mb,
            "threshold_mb": chunk_mb,
            "checksum": "CRC32",
            "client_encryption": "AES-256-GCM, 1 MiB chunks (ours+enc rows)" if encryption else None,
        },
        "aws": {"version": aws_version(), "concurrency": 10, "part_mb": 8, "threshold_mb": 8, "checksum": "CRC32"},
        "results": summary,
        "targets": targets,
    }


def summarize(rows: dict, size: int, encryption: bool) -> tuple[dict, dict]:
    """(summary, targets): each row's best run (with its median and largest RSS), ratios, encryption's cost."""
    summary = {}
    for label, results in rows.items():
        best = min(results, key=lambda r: r["seconds"])
        summary[label] = {
            "seconds": best["seconds"],
            "mb_per_s": round(size / 1e6 / best["seconds"], 1),
            "peak_rss_mb": best.get("peak_rss_mb"),
            "all_seconds": [r["seconds"] for r in results],
            "median_seconds": statistics.median(r["seconds"] for r in results),
            "max_peak_rss_mb": max(r.get("peak_rss_mb") or 0 for r in results),
            "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in results),
        }
    for direction in ("push", "pull"):
        plain, theirs = summary[f"{direction} ours"], summary[f"{direction} aws"]
        summary[f"{direction} ratio ours/aws (MB/s)"] = round(plain["mb_per_s"] / theirs["mb_per_s"], 2)
        if encryption:
            encrypted = summary[f"{direction} ours+enc"]
            summary[f"{direction} encryption cost (MB/s)"] = round(1 - encrypted["mb_per_s"] / plain["mb_per_s"], 3)
            cost = 1 - plain["median_seconds"] / encrypted["median_seconds"]
            summary[f"{direction} encryption cost, medians (MB/s)"] = round(cost, 3)
            extra_cpu = encrypted["median_cpu_seconds"] - plain["median_cpu_seconds"]
            summary[f"{direction} encryption CPU seconds (medians)"] = round(extra_cpu, 2)
    targets = {}
    if encryption:
        targets = {
            "encryption cost of push < 15 %": summary["push encryption cost (MB/s)"] < TARGET_ENCRYPTION_COST,
            "peak RSS with encryption < 150 MB": max(
                summary[f"{d} ours+enc"]["max_peak_rss_mb"] for d in ("push", "pull")
            )
            < TARGET_ENCRYPTED_RSS_MB,
        }
    return summary, targets


def check(result: dict, what: str) -> None:
    if result["rc"] != 0:
        raise RuntimeError(f"{what} failed (rc {result['rc']}): {result['stderr'] or result['stdout'][-2000:]}")


def aws_version() -> str:
    proc = subprocess.run([str(VENV_BIN / "aws"), "--version"], capture_output=True, text=True, check=False)
    return (proc.stdout or proc.stderr).strip()


def print_table(report: dict) -> None:
    res = report["results"]
    print()
    print(f"offsite transfer of {report['bytes'] / 1e6:.1f} MB ({report['format']}) to {report['endpoint']}")
    print(f"{'':16}{'MB/s':>10}{'seconds':>10}{'peak RSS MB':>14}{'CPU s':>8}")
    for label in (label for label in LABELS if label in res):
        row = res[label]
        rss = "-" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f}"
        cpu = row.get("median_cpu_seconds")
        print(f"{label:16}{row['mb_per_s']:>10.1f}{row['seconds']:>10.2f}{rss:>14}{cpu:>8.2f}")
    print(
        f"ours/aws MB/s: push {res['push ratio ours/aws (MB/s)']:.2f}x, pull {res['pull ratio ours/aws (MB/s)']:.2f}x"
    )
    if "push encryption cost (MB/s)" in res:
        print(
            f"client-side encryption costs {res['push encryption cost (MB/s)'] * 100:.1f} % of push throughput, "
            f"{res['pull encryption cost (MB/s)'] * 100:.1f} % of pull throughput (best runs; medians: "
            f"{res['push encryption cost, medians (MB/s)'] * 100:.1f} %, "
            f"{res['pull encryption cost, medians (MB/s)'] * 100:.1f} %)"
        )
        print(
            f"CPU seconds it adds (medians): push {res['push encryption CPU seconds (medians)']:.2f}, "
            f"pull {res['pull encryption CPU seconds (medians)']:.2f}"
        )
        for target, met in report.get("targets", {}).items():
            print(f"  target: {target}: {'met' if met else 'MISSED'}")
    print("(ours: sha256 recomputed beside the push, and verified after the pull before the rename;")
    print(" MB/s, seconds and RSS of the best run, CPU s the median user+system seconds of the process)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--file", type=Path, help="a backup (file or .dir, with or without manifest) or any file")
    what.add_argument("--size-mb", type=int, default=200, help="size of the random file when no --file (200)")
    parser.add_argument("--endpoint", help="S3 endpoint URL (default: start a moto server)")
    parser.add_argument(
        "--transport", choices=["https", "http"], default="https", help="the moto server's transport (https)"
    )
    parser.add_argument("--bucket", help="bucket (created when missing; default tokotani-bench)")
    parser.add_argument("--runs", type=int, default=1, help="runs; the best of each is reported (1)")
    parser.add_argument("--concurrency", type=int, default=8, help="our concurrency (8)")
    parser.add_argument("--chunk-mb", type=int, default=16, help="our multipart threshold and part size in MiB (16)")
    parser.add_argument("--no-encryption", action="store_true", help="skip the ours+enc rows")
    parser.add_argument("--json", type=Path, help="write the results here (default bench/results/offsite-<UTC>.json)")
    parser.add_argument("--worker", choices=["push", "pull"], help=argparse.SUPPRESS)
    parser.add_argument("--opts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.opts))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="tokotani-offsite-bench-"))
    try:
        source = args.file
        if source is None:
            source = workdir / "random.bin"
            log(f"writing {args.size_mb} MB of random data to {source}")
            random_file(source, args.size_mb * 1000 * 1000)
        report = run_offsite_bench(
            source.resolve(),
            endpoint=args.endpoint,
            bucket=args.bucket,
            runs=args.runs,
            concurrency=args.concurrency,
            chunk_mb=args.chunk_mb,
            workdir=workdir,
            encryption=not args.no_encryption,
            transport=args.transport,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(report)
    out = args.json or RESULTS / f"offsite-{datetime.datetime.now(datetime.UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    log(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
