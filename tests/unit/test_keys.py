"""Key files in cosign's encrypted format, passwords, and signing primitives."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelpack.cli import cli
from modelpack.errors import InvalidInputError
from modelpack.supply.keys import (
    LEGACY_PRIVATE_PEM_TYPES,
    PRIVATE_PEM_TYPE,
    KeyFileError,
    encrypt_private_key,
    generate_private_key,
    key_id,
    keygen,
    load_private_key,
    load_public_key,
    load_signing_key,
    load_verification_key,
    pem_decode,
    public_key_pem,
    sign_bytes,
    verify_bytes,
)

DATA = Path(__file__).resolve().parent / "data" / "keys"


@pytest.fixture(autouse=True)
def _no_password_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODELPACK_KEY_PASSWORD", "COSIGN_PASSWORD", "MODELPACK_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_encrypted_key_envelope_has_cosign_shape() -> None:
    pem = encrypt_private_key(generate_private_key(), b"pw")
    pem_type, body = pem_decode(pem)
    assert pem_type == PRIVATE_PEM_TYPE == "ENCRYPTED SIGSTORE PRIVATE KEY"
    envelope = json.loads(body)
    assert envelope["kdf"]["name"] == "scrypt"
    assert envelope["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(envelope["kdf"]["salt"])) == 32
    assert envelope["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(envelope["cipher"]["nonce"])) == 24
    assert base64.b64decode(envelope["ciphertext"])  # secretbox output without the nonce


def test_roundtrip_and_wrong_password() -> None:
    key = generate_private_key()
    pem = encrypt_private_key(key, b"pw")
    assert key_id(load_private_key(pem, b"pw")) == key_id(key)
    with pytest.raises(KeyFileError, match="wrong password"):
        load_private_key(pem, b"nope")
    with pytest.raises(KeyFileError, match="password is needed"):
        load_private_key(pem, None)


def test_reads_a_key_generated_by_cosign() -> None:
    key = load_private_key((DATA / "cosign-generated.key").read_bytes(), b"cpw")
    public = load_public_key((DATA / "cosign-generated.pub").read_bytes())
    assert key_id(key) == key_id(public)
    assert verify_bytes(public, b"payload", sign_bytes(key, b"payload"))


def test_reads_the_legacy_cosign_pem_type() -> None:
    text = (DATA / "cosign-generated.key").read_text().replace(PRIVATE_PEM_TYPE, LEGACY_PRIVATE_PEM_TYPES[0])
    public = load_public_key((DATA / "cosign-generated.pub").read_bytes())
    assert key_id(load_private_key(text, b"cpw")) == key_id(public)


def test_signature_made_by_cosign_with_our_key_verifies() -> None:
    # cosign decrypted a key written by `modelpack keygen` and signed blob.txt with it
    public = load_verification_key(DATA / "ours.pub")
    signature = base64.b64decode((DATA / "blob.txt.ours.sig").read_text())
    assert verify_bytes(public, (DATA / "blob.txt").read_bytes(), signature)
    assert not verify_bytes(public, b"other", signature)


def test_public_key_pem_roundtrip_and_type_check() -> None:
    key = generate_private_key()
    pem = public_key_pem(key)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert key_id(load_public_key(pem)) == key_id(key)
    with pytest.raises(KeyFileError, match="PUBLIC KEY"):
        load_public_key(encrypt_private_key(key, b""))
    with pytest.raises(KeyFileError, match="not a PEM"):
        load_public_key("garbage")


def test_keygen_writes_private_key_0600_and_refuses_overwrite(tmp_path: Path) -> None:
    files = keygen(tmp_path / "k", b"pw")
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600
    assert files.public_key.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
    before = files.private_key.read_bytes()
    with pytest.raises(InvalidInputError, match="already exists"):
        keygen(tmp_path / "k", b"pw")
    assert files.private_key.read_bytes() == before
    again = keygen(tmp_path / "k", b"pw", force=True)
    assert again.private_key.read_bytes() != before
    assert stat.S_IMODE(again.private_key.stat().st_mode) == 0o600


def test_signing_key_from_env_and_password_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    key = generate_private_key()
    monkeypatch.setenv("MODELPACK_SIGNING_KEY", encrypt_private_key(key, b"").decode())
    with pytest.raises(KeyFileError, match="no key password"):
        load_signing_key(None)
    monkeypatch.setenv("COSIGN_PASSWORD", "")  # set but empty: the empty password
    assert key_id(load_signing_key(None)) == key_id(key)
    monkeypatch.setenv("MODELPACK_KEY_PASSWORD", "wrong")  # takes precedence over COSIGN_PASSWORD
    with pytest.raises(KeyFileError, match="MODELPACK_SIGNING_KEY: cannot decrypt"):
        load_signing_key(None)


def test_signing_key_missing_or_from_prompt(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no signing key"):
        load_signing_key(None)
    with pytest.raises(InvalidInputError, match="cannot read key"):
        load_signing_key(tmp_path / "absent.key")
    files = keygen(tmp_path / "k", b"typed")
    assert key_id(load_signing_key(files.private_key, prompt=lambda: "typed")) == files.key_id


def test_cli_keygen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELPACK_KEY_PASSWORD", "pw")
    runner = CliRunner()
    result = runner.invoke(cli, ["keygen", "--output", str(tmp_path / "ci"), "--json"])
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["private_key"].endswith("ci.key") and report["key_id"].startswith("sha256:")
    assert "BEGIN" not in result.output and "pw" not in result.stdout.replace(str(tmp_path), "")
    again = runner.invoke(cli, ["keygen", "--output", str(tmp_path / "ci")])
    assert again.exit_code == 2
    assert "already exists" in again.stderr and "Traceback" not in again.output


def test_cli_keygen_prompts_for_a_password(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["keygen", "-o", str(tmp_path / "p")], input="abc\nabc\n")
    assert result.exit_code == 0, result.output
    assert key_id(load_private_key((tmp_path / "p.key").read_bytes(), b"abc")) == load_key_id(
        tmp_path / "p.pub"
    )


def load_key_id(path: Path) -> str:
    return key_id(load_verification_key(path))


def test_unreadable_or_malformed_key_files_are_invalid_input(tmp_path: Path) -> None:
    """Binary files, odd scrypt parameters and non-EC DER are bad input (exit 2), never a crash."""
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 64)
    with pytest.raises(KeyFileError, match="not UTF-8"):
        load_signing_key(binary, password=b"")
    with pytest.raises(KeyFileError, match="not UTF-8"):
        load_verification_key(binary)
    empty = tmp_path / "empty.key"
    empty.write_text("")
    with pytest.raises(KeyFileError, match=r"empty\.key: not a PEM key"):
        load_signing_key(empty, password=b"")
    key = generate_private_key()
    _, body = pem_decode(encrypt_private_key(key, b"pw"))
    envelope = json.loads(body)
    for params in ({"N": 3, "r": 8, "p": 1}, {"N": 1 << 40, "r": 8, "p": 1}, {"N": 32768, "r": 0, "p": 1}):
        envelope["kdf"]["params"] = params
        pem = (
            "\n".join(
                [
                    f"-----BEGIN {PRIVATE_PEM_TYPE}-----",
                    base64.b64encode(json.dumps(envelope).encode()).decode(),
                ]
            )
            + f"\n-----END {PRIVATE_PEM_TYPE}-----\n"
        )
        with pytest.raises(KeyFileError, match="scrypt parameters"):
            load_private_key(pem, b"pw")
    # an unencrypted PKCS#8 body that is not DER at all
    garbage = (
        f"-----BEGIN PRIVATE KEY-----\n{base64.b64encode(b'not der').decode()}\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(KeyFileError, match="not a valid"):
        load_private_key(garbage, None)


def test_cli_sign_and_verify_with_a_binary_key_exit_2(tmp_path: Path) -> None:
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe\x00\x01" * 64)
    runner = CliRunner()
    for command in (
        ["sign", "127.0.0.1:1/a/b:v1", "--key", str(binary)],
        ["verify", "127.0.0.1:1/a/b:v1", "--key", str(binary)],
    ):
        result = runner.invoke(cli, command, env={"MODELPACK_KEY_PASSWORD": "pw"})
        assert result.exit_code == 2, (command, result.output)
        assert "internal error" not in result.output and "Traceback" not in result.output


def test_cli_sign_rejects_a_malformed_manifest_digest(tmp_path: Path) -> None:
    files = keygen(tmp_path / "k", b"pw")
    result = CliRunner().invoke(
        cli,
        ["sign", "127.0.0.1:1/a/b:v1", "--key", str(files.private_key), "--manifest-digest", "../v1"],
        env={"MODELPACK_KEY_PASSWORD": "pw"},
    )
    assert result.exit_code == 2, result.output
    assert "invalid --manifest-digest" in result.stderr and "Traceback" not in result.output


def test_cli_keygen_into_an_unusable_folder_is_invalid_input(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = CliRunner().invoke(
        cli, ["keygen", "--output", str(tmp_path / "file" / "k")], env={"MODELPACK_KEY_PASSWORD": "pw"}
    )
    assert result.exit_code == 2, result.output
    assert "cannot write" in result.stderr and "internal error" not in result.output
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]
