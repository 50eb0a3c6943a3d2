"""Registry credentials as the docker CLI stores them, and the challenge of a registry that asks.

`~/.docker/config.json` (or `$DOCKER_CONFIG/config.json`): `auths` entries and `credHelpers` /
`credsStore` helpers (`docker-credential-<name> get`). Used by `modelpack.oci.registry`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path

from modelpack.oci.reference import DEFAULT_REGISTRY

DOCKER_HUB_API = "registry-1.docker.io"


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def _config_keys(registry: str) -> list[str]:
    keys = [
        registry,
        f"https://{registry}",
        f"http://{registry}",
        f"https://{registry}/v1/",
        f"https://{registry}/v2/",
    ]
    if registry in (DEFAULT_REGISTRY, DOCKER_HUB_API, "index.docker.io"):
        keys += ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    return keys


def _helper_credentials(helper: str, registry: str) -> tuple[str, str] | None:
    try:
        proc = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=registry.encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    try:
        data = json.loads(proc.stdout)
        return str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        return None


def docker_credentials(registry: str, config_path: Path | None = None) -> tuple[str, str] | None:
    """Look up ``(username, password)`` for ``registry`` the way the docker CLI stores them."""
    path = config_path or docker_config_path()
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    keys = _config_keys(registry)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _helper_credentials(str(helpers[key]), key)
    auths = config.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            return user, password
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
    if config.get("credsStore"):
        for key in keys[:2]:
            found = _helper_credentials(str(config["credsStore"]), key)
            if found:
                return found
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split a ``WWW-Authenticate`` header into its scheme and parameters."""
    scheme, _, rest = header.strip().partition(" ")
    params = {k.lower(): v for k, v in re.findall(r'(\w+)\s*=\s*"([^"]*)"', rest)}
    for k, v in re.findall(r'(\w+)\s*=\s*([^",\s]+)', rest):
        params.setdefault(k.lower(), v)
    return scheme.lower(), params
