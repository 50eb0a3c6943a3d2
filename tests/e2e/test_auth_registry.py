"""A registry that requires authentication, over TLS, on loopback: Debian's distribution
(`docker-registry`) with htpasswd (bcrypt, from `htpasswd -B`) and a certificate of a throwaway
CA. It listens on 127.0.0.2 because modelpack and the engine speak plain HTTP to 127.0.0.1 and
localhost; the engine trusts the CA through /etc/docker/certs.d/HOST:PORT/ca.crt (removed after),
modelpack's client through REQUESTS_CA_BUNDLE.

Pushed both ways: `modelpack push IMAGE --tag REPO` (the engine pushes, with the credentials of
--registry-password-stdin) and `build --push --sign` (modelpack's client composes the final
image, credentials from $DOCKER_CONFIG); then `verify --deep`. The password never appears in
what the commands print.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from clirun import run_modelpack
from loopback import free_port

from modelpack.oci.registry import fallback_tag

pytestmark = pytest.mark.e2e

HOST = "127.0.0.2"  # loopback, but not a name modelpack or the engine reach over plain HTTP
USER = "ci-robot"
CERTS_D = Path("/etc/docker/certs.d")


class AuthRegistry:
    def __init__(self, root: Path, port: int, password: str) -> None:
        self.root = root
        self.port = port
        self.password = password
        self.address = f"{HOST}:{port}"
        self.ca = root / "ca.crt"
        self.process: subprocess.Popen[bytes] | None = None

    def docker_config(self, folder: Path) -> Path:
        """A $DOCKER_CONFIG folder whose config.json holds this registry's credentials."""
        folder.mkdir(parents=True, exist_ok=True)
        auth = base64.b64encode(f"{USER}:{self.password}".encode()).decode()
        (folder / "config.json").write_text(json.dumps({"auths": {self.address: {"auth": auth}}}))
        return folder

    def tags(self, repository: str) -> list[str]:
        import requests

        response = requests.get(
            f"https://{self.address}/v2/{repository}/tags/list",
            auth=(USER, self.password),
            verify=str(self.ca),
            timeout=10,
        )
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])


def _write_certificates(root: Path) -> None:
    """A CA and a server certificate for HOST signed by it (cryptography, P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelpack test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (root / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (root / "server.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (root / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.fixture
def auth_registry(
    tmp_path: Path, service_missing: Callable[[str], NoReturn], docker_client: Any
) -> Iterator[AuthRegistry]:
    import secrets

    import requests

    for tool in ("docker-registry", "htpasswd"):
        if shutil.which(tool) is None:
            service_missing(f"{tool} is missing (Debian docker-registry, apache2-utils); run scripts/setup.sh")
    root = tmp_path / "auth-registry"
    root.mkdir()
    registry = AuthRegistry(root, free_port(HOST), f"pw-{secrets.token_hex(12)}")
    _write_certificates(root)
    subprocess.run(
        ["htpasswd", "-Bbc", str(root / "htpasswd"), USER, registry.password], check=True, capture_output=True
    )
    (root / "config.yml").write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "version": 0.1,
                "log": {"level": "info"},
                "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
                "http": {
                    "addr": registry.address,
                    "tls": {"certificate": str(root / "server.crt"), "key": str(root / "server.key")},
                },
                "auth": {"htpasswd": {"realm": "modelpack-test", "path": str(root / "htpasswd")}},
            }
        )
    )
    engine_ca = CERTS_D / registry.address / "ca.crt"
    engine_ca.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(registry.ca, engine_ca)
    log = (root / "registry.log").open("wb")
    registry.process = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        for _ in range(100):
            try:
                answer = requests.get(f"https://{registry.address}/v2/", verify=str(registry.ca), timeout=2)
                if answer.status_code == 401:
                    break
            except requests.RequestException:
                pass
            if registry.process.poll() is not None:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the TLS registry did not answer")
        assert registry.process.poll() is None, (root / "registry.log").read_text()[-2000:]
        yield registry
    finally:
        registry.process.terminate()
        registry.process.wait(30)
        log.close()
        shutil.rmtree(engine_ca.parent, ignore_errors=True)
        for image in docker_client.images.list():  # a name filter's `*` stops at a `/`
            for tag in image.tags:
                if tag.startswith(registry.address + "/"):
                    docker_client.images.remove(tag)


def test_push_build_sign_and_verify_against_a_registry_that_requires_authentication(
    auth_registry: AuthRegistry,
    hello_dir: Path,
    registry_repo: Any,
    wheel_index: Any,
    tmp_path: Path,
    docker_client: Any,
) -> None:
    from modelpack.supply.keys import keygen

    password = auth_registry.password
    base_env = {
        "REQUESTS_CA_BUNDLE": str(auth_registry.ca),  # modelpack's client trusts the test CA
        "PIP_INDEX_URL": wheel_index.url,  # the builder stage installs from the loopback index
        "DOCKER_CONFIG": str(tmp_path / "no-credentials"),
        "MODELPACK_KEY_PASSWORD": "key-pw",
    }
    printed: list[str] = []

    def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Any:
        done = run_modelpack(*args, env={**base_env, **(env or {})}, stdin=stdin)
        printed.append(done.stdout + done.stderr)
        return done

    # an image in the local engine, not pushed anywhere yet
    local = run("build", str(hello_dir), "--tag", registry_repo.ref, "--json")
    assert local.returncode == 0, local.stderr
    image = json.loads(local.stdout)["image"]

    # the registry refuses an anonymous push: one line, exit 1
    target = f"{auth_registry.address}/team/hello"
    anonymous = run("push", image, "--tag", target)
    assert anonymous.returncode == 1 and len(anonymous.stderr.strip().splitlines()) >= 1, anonymous.stderr
    assert "Traceback" not in anonymous.stderr

    # `modelpack push IMAGE --tag REPO`: the engine pushes over TLS with the given credentials
    pushed = run(
        "push", image, "--tag", target, "--registry-username", USER, "--registry-password-stdin", "--json",
        stdin=password + "\n",
    )  # fmt: skip
    assert pushed.returncode == 0, pushed.stderr
    result = json.loads(pushed.stdout)
    assert result["image"] == f"{target}:v1"
    expected = ["v1", result["content_tag"], fallback_tag(result["digest"])]  # + v1's note (a referrer)
    assert auth_registry.tags("team/hello") == sorted(expected)

    # `build --push --sign`: modelpack's own client composes and signs; credentials from $DOCKER_CONFIG
    keys = keygen(tmp_path / "signer", b"key-pw")
    with_config = {"DOCKER_CONFIG": str(auth_registry.docker_config(tmp_path / "docker-config"))}
    signed_target = f"{auth_registry.address}/team/signed"
    built = run(
        "build", str(hello_dir), "--tag", signed_target, "--push", "--sign", "--key", str(keys.private_key),
        "--json", env=with_config,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["image"] == f"{signed_target}:v1"
    verified = run("verify", f"{signed_target}:v1", "--key", str(keys.public_key), "--deep", env=with_config)
    assert verified.returncode == 0, verified.stderr
    # the same verify without the credentials is refused by the registry: it was the auth that let it in
    refused = run("verify", f"{signed_target}:v1", "--key", str(keys.public_key), "--deep")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr

    encoded = base64.b64encode(f"{USER}:{password}".encode()).decode()
    assert not [text for text in printed if password in text or encoded in text]
