#!/usr/bin/env python3
"""Install the OHIF viewer's prebuilt dist/ (npm package @ohif/app) for dicomhub's /viewer.

The published dist is built for the site root (PUBLIC_URL "/"); this rewrites its asset
paths to /viewer/ so it can be served under that prefix. `make viewer` runs it; by hand:

    python3 scripts/install_viewer.py [--version 3.13.2] [--dest .viewer/dist]
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@ohif/app"
PINNED_VERSION = "3.13.2"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_DEST = REPO / ".viewer" / "dist"
PREFIX = "/viewer/"
# Text files served often: kept gzipped beside the original too (name.gz), so the server can
# send the 17 MB app bundle as 3.4 MB without compressing on every request.
PRECOMPRESS = {".js", ".css", ".json", ".svg", ".html", ".txt"}

# webpack's runtime public path, compiled into the app bundle and each worker bundle
_WEBPACK_PUBLIC_PATH = re.compile(rb'__webpack_require__\.p = "/";')
# the microscopy viewer is imported by an absolute path that webpack does not rewrite
_MICROSCOPY = b"'/dicom-microscopy-viewer/"


def pack(version: str, workdir: Path) -> Path:
    """`npm pack` the package into workdir (the tarball only: no dependencies, no scripts)."""
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("npm is not installed: install Node.js and npm (e.g. apt-get install npm)")
    out = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{version}", "--silent"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    if not out:
        sys.exit(f"npm pack {PACKAGE}@{version} named no tarball")
    return workdir / out[-1]


def extract_dist(tarball: Path, target: Path) -> None:
    """package/dist/* of the tarball into target."""
    with tarfile.open(tarball) as tar:
        members = []
        for member in tar.getmembers():
            if not member.name.startswith("package/dist/") or not (
                member.isfile() or member.isdir()
            ):
                continue
            member.name = member.name.removeprefix("package/dist/")
            if member.name.startswith("/") or ".." in Path(member.name).parts:
                sys.exit(f"{tarball.name}: unsafe path {member.name!r}")
            members.append(member)
        if not any(m.name == "index.html" for m in members):
            sys.exit(f"{tarball.name} has no dist/index.html: not a prebuilt OHIF viewer")
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4+: refuses links and odd paths
            tar.extractall(target, members=members, filter="data")
        else:
            tar.extractall(target, members=members)


def rebase(dist: Path, prefix: str) -> None:
    """Point the asset URLs of a dist built for "/" at `prefix` (which ends with /)."""
    index = dist / "index.html"
    html = index.read_text(encoding="utf-8")
    html = html.replace('window.PUBLIC_URL="/"', f'window.PUBLIC_URL="{prefix}"')
    # every absolute path of the page (href="/x", src="/x"), never protocol-relative ones
    html = re.sub(r'((?:href|src)=")/(?!/)', rf"\1{prefix}", html)
    index.write_text(html, encoding="utf-8")

    # fonts and images named by absolute URLs in the style sheets
    for path in dist.glob("*.css"):
        css = path.read_text(encoding="utf-8")
        path.write_text(
            re.sub(r"""url\((["']?)/(?!/)""", rf"url(\1{prefix}", css), encoding="utf-8"
        )
    manifest = dist / "manifest.json"
    if manifest.is_file():
        text = manifest.read_text(encoding="utf-8")
        manifest.write_text(text.replace('"/assets/', f'"{prefix}assets/'), encoding="utf-8")

    public_path = f'__webpack_require__.p = "{prefix}";'.encode()
    for path in dist.glob("*.js"):
        data = path.read_bytes()
        new = _WEBPACK_PUBLIC_PATH.sub(public_path, data)
        new = new.replace(_MICROSCOPY, f"'{prefix}dicom-microscopy-viewer/".encode())
        if new != data:
            path.write_bytes(new)
    # chunks, workers and WebAssembly load from the app bundle's public path: it must be ours
    app_bundles = list(dist.glob("app.bundle.*.js"))
    if len(app_bundles) != 1 or public_path not in app_bundles[0].read_bytes():
        sys.exit("the app bundle's public path was not found: this OHIF build is not supported")


def precompress(dist: Path) -> None:
    for path in dist.rglob("*"):
        if path.suffix in PRECOMPRESS and path.is_file() and path.stat().st_size > 1024:
            data = path.read_bytes()
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(data, 6, mtime=0))


def install(version: str, dest: Path, prefix: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".install-") as tmp:
        work = Path(tmp)
        tarball = pack(version, work)
        staged = work / "dist"
        extract_dist(tarball, staged)
        rebase(staged, prefix)
        precompress(staged)
        # swap in whole: a server reading the old dist never sees a half-written one
        old = work / "old"
        if dest.exists():
            dest.rename(old)
        staged.rename(dest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=PINNED_VERSION, help="version of @ohif/app")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="folder of the dist")
    parser.add_argument("--prefix", default=PREFIX, help="URL path the viewer is served at")
    args = parser.parse_args()
    prefix = "/" + args.prefix.strip("/") + "/"
    install(args.version, args.dest.resolve(), prefix)
    size = sum(p.stat().st_size for p in args.dest.rglob("*") if p.is_file())
    print(f"OHIF viewer {args.version} installed in {args.dest} ({size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
