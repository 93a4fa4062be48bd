"""``waiaas audit export`` run down each of its paths, and what it printed on each: for the tests of its output
lines (tests/proxy) and of the deployment's metric filters on those lines (tests/cdk).

Each path is a real run of the command (`policies.cli.main`) over a SQLite log the real `AuditLog` wrote, into a
bucket of moto's S3 (object lock on), each under a prefix of its own. Where S3 itself must answer what moto does
not (a 409 that does not clear, a refused read), `RaceClient` wraps moto's client: the fake sits at the S3 seam.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from parent_proxy import audit_export_cli, audit_export_names
from parent_proxy.audit import AuditLog
from parent_proxy.audit_exports import encode_export
from parent_proxy.audit_source import SqliteAuditSource
from parent_proxy.clock import SystemClock
from parent_proxy.data_bucket import S3Client
from parent_proxy.store.sqlite import SqliteStore
from policies.cli import main
from tests.proxy.audit_log_rewrites import read, rewrite, with_payload
from tests.proxy.locked_bucket import BUCKET, REGION, locked_bucket
from tests.support.aws_env import use_test_credentials

BUCKET_ARG = f"{BUCKET}@{REGION}"


def s3_error(code: str, status: int, operation: str) -> ClientError:
    """The error botocore raises for S3's answer ``status`` with error ``code``."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": code},
            "ResponseMetadata": {
                "RequestId": "",
                "HostId": "",
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        },
        operation,
    )


@dataclass
class RaceClient:
    """The S3 client of one export run: moto's, except that just before the run's put number ``at_put`` (1 for the
    first), ``meanwhile`` runs: what another writer does after this run listed the keys (twice: the run lists them
    again just before its first put) and checked the last export; with ``at_list`` set, just before the run's
    listing call number ``at_list`` instead (2: between its first listing and the second). Then S3 answers that put
    ``conflicts`` times 409 ``ConditionalRequestConflict`` (as it does while another conditional write to the key is
    under way), and every read ``refuse_read`` (an error code) if set."""

    client: Any
    meanwhile: Callable[[], None] = lambda: None
    at_put: int = 1
    at_list: int | None = None
    conflicts: int = 0
    refuse_read: str | None = None
    puts: list[str] = field(default_factory=list)
    reads: list[str] = field(default_factory=list)
    lists: int = 0

    def put_object(self, **kwargs: Any) -> Any:
        self.puts.append(kwargs["Key"])
        if len(self.puts) == self.at_put and self.at_list is None:
            self.meanwhile()
        if self.at_put <= len(self.puts) < self.at_put + self.conflicts:
            raise s3_error("ConditionalRequestConflict", 409, "PutObject")
        return self.client.put_object(**kwargs)

    def list_objects_v2(self, **kwargs: Any) -> Any:
        self.lists += 1
        if self.lists == self.at_list:
            self.meanwhile()
        return self.client.list_objects_v2(**kwargs)

    def get_object(self, **kwargs: Any) -> Any:
        self.reads.append(kwargs["Key"])
        if self.refuse_read is not None:
            raise s3_error(self.refuse_read, 403, "GetObject")
        return self.client.get_object(**kwargs)


def use_client(monkeypatch: pytest.MonkeyPatch, client: RaceClient) -> None:
    """Make ``waiaas audit export`` use ``client`` for the bucket."""

    def made(region: str | None) -> S3Client:
        assert region == REGION
        return client

    monkeypatch.setattr(audit_export_cli, "s3_client", made)


def new_log(db: Path, count: int) -> Path:
    """``db`` with ``count`` more audit records, appended by the proxy's `AuditLog`."""
    store = SqliteStore(db)
    try:
        for i in range(count):
            AuditLog(store, SystemClock()).append("test.appended", {"n": i})
    finally:
        store.close()
    return db


def export_key(db: Path, prefix: str) -> tuple[str, bytes]:
    """The key and the bytes of the export of the whole log of ``db`` (the first export a run writes)."""
    name, body = encode_export(SqliteAuditSource(db).read_all())
    return prefix + name.file_name(), body


def _put(s3: Any, key: str, body: bytes) -> Callable[[], None]:
    """What another writer does meanwhile: put ``body`` at ``key``."""

    def put() -> None:
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    return put


@dataclass(frozen=True)
class Printed:
    case: str
    code: int
    out: list[str]
    err: list[str]


def export(db: Path, prefix: str, *extra: str, bucket: str = BUCKET_ARG) -> tuple[int, str, str]:
    """One run of ``waiaas audit export`` as the hosts' unit runs it; its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["audit", "export", "--db", str(db), "--bucket", bucket, "--prefix", prefix, *extra])
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Fake credentials and moto's S3 with the locked bucket; yields moto's client."""
    use_test_credentials(monkeypatch)
    with locked_bucket() as s3:
        yield s3


def every_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Printed]:
    """One run down each path of the command (exit 0, 1 and 2), each over a log and a prefix of its own."""
    printed: list[Printed] = []

    def record(case: str, result: tuple[int, str, str]) -> None:
        code, out, err = result
        printed.append(Printed(case, code, out.splitlines(), err.splitlines()))

    with aws(monkeypatch) as s3:
        db = new_log(tmp_path / "ok.db", 3)
        record("first export", export(db, "ok/"))
        record("nothing new", export(db, "ok/"))
        s3.put_object(Bucket=BUCKET, Key="ok/notes.txt", Body=b"x")
        new_log(db, 1)
        record("keys not named as exports", export(db, "ok/"))

        # Another host exports what this run read, and a record more, between this run's two listings.
        db = new_log(tmp_path / "overtaken.db", 2)

        def other_host() -> None:
            new_log(db, 1)
            with pytest.MonkeyPatch.context() as patch:
                use_client(patch, RaceClient(s3))
                assert export(db, "overtaken/")[0] == 0

        with pytest.MonkeyPatch.context() as patch:
            use_client(patch, RaceClient(s3, meanwhile=other_host, at_list=2))
            record("another host exported meanwhile", export(db, "overtaken/"))

        # Honest overlapping exports below the last one, more than a run reads.
        db = new_log(tmp_path / "overlaps.db", 4)
        records = SqliteAuditSource(db).read_all()
        for last in range(1, 5):
            name, body = encode_export(records[:last])
            s3.put_object(Bucket=BUCKET, Key=f"overlaps/{name.file_name()}", Body=body)
        new_log(db, 1)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(audit_export_names, "SUSPECTS_PER_RUN", 2)
            record("overlapping names left for later runs", export(db, "overlaps/"))

        db = new_log(tmp_path / "short.db", 3)
        assert export(db, "short/")[0] == 0
        rewrite(db, read(db)[:-1])
        record("log cut short", export(db, "short/"))

        db = new_log(tmp_path / "rewritten.db", 3)
        assert export(db, "rewritten/")[0] == 0
        records = read(db)
        rewrite(db, [records[0], with_payload(records[1], forged=True), *records[2:]])
        new_log(db, 1)
        record("history rewritten", export(db, "rewritten/"))

        db = new_log(tmp_path / "errors.db", 3)
        record("bad --bucket", export(db, "errors/", bucket="Not_A_Bucket"))
        record("bad --prefix", export(db, "errors"))
        record("no such bucket", export(db, "errors/", bucket=f"waiaas-elsewhere@{REGION}"))
        record("no log", export(tmp_path / "absent.db", "errors/"))
        # The object appears after the run listed the keys: as another writer's put would.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("parent_proxy.data_bucket.CONFLICT_RETRY_SECONDS", 0.0)
            for prefix, case, change, conflicts, refuse_read in [
                ("other/", "another object under the export's name", b"appendee", 0, None),
                ("refused/", "the read-back refused", b"appended", 0, "AccessDenied"),
                ("conflict/", "a conflict that does not clear", None, 1000, None),
            ]:
                key, body = export_key(db, prefix)
                meanwhile = _put(s3, key, body.replace(b"appended", change, 1)) if change else lambda: None
                race = RaceClient(s3, meanwhile=meanwhile, conflicts=conflicts, refuse_read=refuse_read)
                use_client(patch, race)
                record(case, export(db, prefix))
    return printed
