"""Refreshes the GraphiQL assets served from the package (api/static/vendor/): fetches the
pinned npm packages with `npm pack`, copies the files the page loads, their licences, and
writes VERSIONS.json (package, version, licence, source path and SHA-256 of each file, and
the packages webpack bundled into graphiql.min.js).

To move to other versions, change PACKAGES and run:

    .venv/bin/python scripts/refresh_graphiql.py

then check the page (tests/api/test_graphiql.py) and commit api/static/vendor/."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "api" / "static" / "vendor"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    files: dict[str, str] = field(default_factory=dict)  # path in the package -> served name
    # a package that ships no licence file: the one of the package of the same repository
    licence_from: str | None = None


PACKAGES = [
    Package("react", "18.2.0", {"umd/react.production.min.js": "react.production.min.js"}),
    Package(
        "react-dom", "18.2.0", {"umd/react-dom.production.min.js": "react-dom.production.min.js"}
    ),
    Package(
        "graphiql",
        "3.8.3",
        {"graphiql.min.js": "graphiql.min.js", "graphiql.min.css": "graphiql.min.css"},
    ),
    Package(
        "@graphiql/plugin-explorer",
        "1.0.2",
        {"dist/index.umd.js": "plugin-explorer.umd.js", "dist/style.css": "plugin-explorer.css"},
        licence_from="graphiql",  # both in github.com/graphql/graphiql
    ),
    # bundled into plugin-explorer.umd.js: only its licence is kept
    Package("graphiql-explorer", "0.9.0"),
]
LICENCE_FILES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE")
# webpack names each bundled module by its path: ../../../node_modules/<package>/...
_BUNDLED = re.compile(r'"(?:\.\./)+node_modules/((?:@[^/"]+/)?[^/"]+)/')


def _unpacked(package: Package, work: Path) -> Path:
    """The package's files, from the npm registry, unpacked into `work`."""
    spec = f"{package.name}@{package.version}"
    done = subprocess.run(
        ["npm", "pack", spec, "--silent", "--pack-destination", str(work)],
        check=True,
        capture_output=True,
        text=True,
    )
    tarball = work / done.stdout.strip().splitlines()[-1]
    target = work / package.name.replace("/", "+")
    with tarfile.open(tarball) as archive:
        archive.extractall(target, filter="data")
    return target / "package"


def _licence(root: Path) -> str | None:
    for name in LICENCE_FILES:
        if (root / name).is_file():
            return (root / name).read_text(encoding="utf-8")
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refresh() -> dict[str, object]:
    if VENDOR.exists():
        shutil.rmtree(VENDOR)
    (VENDOR / "LICENSES").mkdir(parents=True)
    record: dict[str, object] = {}
    texts: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        roots = {package.name: _unpacked(package, work) for package in PACKAGES}
        for package in PACKAGES:
            root = roots[package.name]
            manifest = json.loads((root / "package.json").read_text(encoding="utf-8"))
            text = _licence(root) or (
                _licence(roots[package.licence_from]) if package.licence_from else None
            )
            if text is None:
                raise SystemExit(f"{package.name} ships no licence file: set licence_from")
            texts[package.name] = text
            licence_file = f"LICENSES/{package.name.replace('/', '+')}.txt"
            (VENDOR / licence_file).write_text(text, encoding="utf-8")
            files = {}
            for source, served in package.files.items():
                shutil.copyfile(root / source, VENDOR / served)
                files[served] = {"from": source, "sha256": _sha256(VENDOR / served)}
            entry: dict[str, object] = {
                "version": manifest["version"],
                "license": manifest.get("license"),
                "licenseFile": licence_file,
                "files": files,
            }
            if package.licence_from:
                entry["licenseFrom"] = package.licence_from
            record[package.name] = entry
    bundle = (VENDOR / "graphiql.min.js").read_text(encoding="utf-8")
    graphiql = record["graphiql"]
    assert isinstance(graphiql, dict)
    graphiql["bundles"] = sorted(set(_BUNDLED.findall(bundle)))
    (VENDOR / "VERSIONS.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def main() -> None:
    if shutil.which("npm") is None:
        raise SystemExit("npm is needed on PATH")
    record = refresh()
    for name, entry in record.items():
        assert isinstance(entry, dict)
        print(f"{name}@{entry['version']} ({entry['license']}): {', '.join(entry['files'])}")
    print(f"written to {VENDOR}", file=sys.stderr)


if __name__ == "__main__":
    main()
