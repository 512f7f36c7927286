"""The command line, run as a real process against a real database file."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def _usagegraph(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": f"sqlite://{tmp_path / 'cli.sqlite3'}"}
    env.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def migrated_once(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database file `migrate` made on a fresh directory (once: a process start and every
    migration take seconds)."""
    directory = tmp_path_factory.mktemp("cli")
    result = _usagegraph(directory, "migrate")
    assert result.returncode == 0, result.stderr
    return directory / "cli.sqlite3"


@pytest.fixture
def migrated(tmp_path: Path, migrated_once: Path) -> Path:
    """A directory with a migrated database file of the test's own (a copy of that one)."""
    shutil.copyfile(migrated_once, tmp_path / "cli.sqlite3")
    return tmp_path


def test_create_org_prints_its_key_last(migrated: Path) -> None:
    result = _usagegraph(migrated, "create-org", "Acme Mail")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("ug_") and len(key.split("_", 2)[2]) >= 32
    with sqlite3.connect(migrated / "cli.sqlite3") as db:
        key_id, secret_hash = db.execute("SELECT key_id, secret_hash FROM api_key").fetchone()
        assert key.split("_")[1] == key_id
        assert key.split("_", 2)[2] not in secret_hash  # only the hash is stored


def test_create_org_refuses_an_empty_name(migrated: Path) -> None:
    result = _usagegraph(migrated, "create-org", "  ")
    assert result.returncode == 2
    assert "VALIDATION" in result.stderr


def test_migrate_twice_is_a_no_op(migrated: Path) -> None:
    result = _usagegraph(migrated, "migrate")
    assert result.returncode == 0, result.stderr


def test_verify_exits_1_on_a_difference(migrated: Path) -> None:
    assert _usagegraph(migrated, "create-org", "Acme").returncode == 0
    ok = _usagegraph(migrated, "verify")
    assert ok.returncode == 0, ok.stderr
    with sqlite3.connect(migrated / "cli.sqlite3") as db:
        db.execute(
            "INSERT INTO application (organization_id, name, created_at) VALUES (1, 'a', 'x')"
        )
        db.execute(
            "INSERT INTO credit_pool (application_id, key, name, purchased, allocated, used,"
            " expired, end_user_remaining, version, created_at) VALUES (1, 'k', 'k', 7, 0, 0, 0,"
            " 0, 0, 'x')"
        )
    bad = _usagegraph(migrated, "verify")
    assert bad.returncode == 1
    assert "purchased is 7, the ledger says 0" in bad.stderr


def test_rebuild_rollups_sums_a_billing_rollup_that_drifted(migrated: Path) -> None:
    with sqlite3.connect(migrated / "cli.sqlite3") as db:
        db.execute(
            "INSERT INTO billing_rollup_day (pool_id, lot_id, day, changed, purchased, used,"
            " expired, allocated, purchases) VALUES (1, 1, '2026-01-01 00:00:00+00:00',"
            " 0, 5, 0, 0, 0, 1)"
        )
    bad = _usagegraph(migrated, "verify")
    assert bad.returncode == 1 and "billing day" in bad.stderr
    rebuilt = _usagegraph(migrated, "rebuild-rollups")
    assert rebuilt.returncode == 0, rebuilt.stderr
    ok = _usagegraph(migrated, "verify")
    assert ok.returncode == 0, ok.stderr
