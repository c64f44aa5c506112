"""The bundled OHIF viewer: its app-config.js for this server, and files of its dist."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

__all__ = [
    "ROUTER_BASENAME",
    "app_config",
    "find_file",
    "gzipped",
    "is_installed",
    "not_installed_page",
]

ROUTER_BASENAME = "/viewer"


def app_config(dicomweb_root: str) -> str:
    """OHIF's window.config with one DICOMweb data source: this server's `dicomweb_root`."""
    source: dict[str, Any] = {
        "friendlyName": "dicomhub",
        "name": "dicomhub",
        "qidoRoot": dicomweb_root,
        "wadoRoot": dicomweb_root,
        "wadoUriRoot": dicomweb_root,
        "qidoSupportsIncludeField": True,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": True,
        "supportsWildcard": True,
        "supportsReject": False,
        "staticWado": False,
        "omitQuotationForMultipartRequest": True,
        "bulkDataURI": {"enabled": True},
    }
    config: dict[str, Any] = {
        "routerBasename": ROUTER_BASENAME,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        # same origin: no cross-origin warning to give
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "defaultDataSourceName": "dicomhub",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "dicomhub",
                "configuration": source,
            }
        ],
    }
    body = json.dumps(config, indent=2)
    return f"/** Written by dicomhub for this server. @type {{AppTypes.Config}} */\nwindow.config = {body};\n"


def is_installed(root: Path) -> bool:
    return (root / "index.html").is_file()


def find_file(root: Path, path: str) -> Path | None:
    """The file at `path` inside `root`, or None (missing, a folder, or outside root)."""
    if not path or "\x00" in path:
        return None
    try:
        target = (root / path).resolve()
    except (OSError, RuntimeError):  # a symlink loop, a name the OS refuses
        return None
    if not target.is_relative_to(root) or not target.is_file():
        return None
    return target


def gzipped(found: Path) -> Path | None:
    """The gzip-compressed copy `make viewer` keeps beside a file (name.gz), if any."""
    copy = found.with_name(found.name + ".gz")
    return copy if copy.is_file() else None


def not_installed_page(root: Path) -> str:
    where = html.escape(str(root))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Viewer not installed - dicomhub</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:44em;margin:3em auto;padding:0 1em}}
code{{background:#eee;padding:.1em .3em}}</style></head>
<body><h1>The OHIF viewer is not installed</h1>
<p>dicomhub serves the OHIF viewer at <code>/viewer</code> from a folder holding its prebuilt
<code>dist</code>, and there is none at <code>{where}</code>.</p>
<p>To install it (this needs Node.js and npm), run in the dicomhub repository:</p>
<pre><code>make viewer</code></pre>
<p>or point <code>DICOMHUB_VIEWER_DIR</code> at the <code>dist</code> folder of an OHIF build
made with <code>PUBLIC_URL=/viewer/</code>. Then reload this page.</p>
<p><a href="/">Back to the study list</a></p>
</body></html>
"""
