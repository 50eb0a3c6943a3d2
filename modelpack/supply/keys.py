"""Signing keys in cosign's formats, so cosign keys work here and ours work in cosign.

Private key file: PEM block ``ENCRYPTED SIGSTORE PRIVATE KEY`` (cosign also wrote
``ENCRYPTED COSIGN PRIVATE KEY``; both are read) whose body is the JSON of go-securesystemslib's
``encrypted`` package::

    {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": "<b64>"},
     "cipher": {"name": "nacl/secretbox", "nonce": "<b64>"},
     "ciphertext": "<b64>"}

The secretbox key is scrypt(password, salt) (32 bytes); the plaintext is the PKCS#8 DER of an
ECDSA P-256 key. Public keys are PKIX ``PUBLIC KEY`` PEM. Passwords come from
``MODELPACK_KEY_PASSWORD`` or ``COSIGN_PASSWORD`` (set-but-empty means the empty password), else a
prompt supplied by the caller. ``MODELPACK_SIGNING_KEY`` may hold the private key PEM itself (CI secrets).

Key material never goes to logs or exception messages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack.errors import InvalidInputError, StorageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey

PRIVATE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
LEGACY_PRIVATE_PEM_TYPES = ("ENCRYPTED COSIGN PRIVATE KEY",)
PUBLIC_PEM_TYPE = "PUBLIC KEY"
PASSWORD_ENV_VARS = ("MODELPACK_KEY_PASSWORD", "COSIGN_PASSWORD")
SIGNING_KEY_ENV = "MODELPACK_SIGNING_KEY"

SCRYPT_N = 32768
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_SIZE = 32
_KEY_SIZE = 32
_NONCE_SIZE = 24


class KeyFileError(InvalidInputError):
    """A key file is unreadable, malformed, or the password is wrong (bad input: exit 2)."""


def _missing_extra(error: ImportError) -> InvalidInputError:
    return InvalidInputError(f"signing needs the 'sign' extra (pip install 'modelpack[sign]'): {error.name}")


# --- PEM ------------------------------------------------------------------------------------------


def pem_encode(pem_type: str, body: bytes) -> bytes:
    b64 = base64.b64encode(body).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return ("\n".join([f"-----BEGIN {pem_type}-----", *lines, f"-----END {pem_type}-----"]) + "\n").encode()


def pem_decode(data: bytes | str) -> tuple[str, bytes]:
    """The type and body of the first PEM block in ``data``."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    begin = text.find("-----BEGIN ")
    if begin < 0:
        raise KeyFileError("not a PEM key (no BEGIN line)")
    header_end = text.find("-----", begin + 11)
    pem_type = text[begin + 11 : header_end]
    end_marker = f"-----END {pem_type}-----"
    end = text.find(end_marker, header_end)
    if header_end < 0 or end < 0:
        raise KeyFileError(f"malformed PEM block {pem_type!r}")
    body_lines = [
        line.strip() for line in text[header_end + 5 : end].splitlines() if line.strip() and ":" not in line
    ]
    try:
        return pem_type, base64.b64decode("".join(body_lines), validate=True)
    except ValueError:
        raise KeyFileError(f"malformed base64 in PEM block {pem_type!r}") from None


# --- encryption (go-securesystemslib "encrypted" format) -------------------------------------------


def _derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=_KEY_SIZE, n=n, r=r, p=p).derive(password)


def encrypt_secret(plaintext: bytes, password: bytes) -> bytes:
    """The securesystemslib JSON envelope (scrypt + nacl/secretbox) around ``plaintext``."""
    try:
        import nacl.secret
        import nacl.utils
    except ImportError as error:
        raise _missing_extra(error) from None
    salt = os.urandom(_SALT_SIZE)
    nonce = nacl.utils.random(_NONCE_SIZE)
    key = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    sealed = nacl.secret.SecretBox(key).encrypt(plaintext, nonce).ciphertext
    envelope = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    return json.dumps(envelope, separators=(",", ":")).encode()


def decrypt_secret(envelope: bytes, password: bytes) -> bytes:
    try:
        import nacl.exceptions
        import nacl.secret
    except ImportError as error:
        raise _missing_extra(error) from None
    try:
        data: dict[str, Any] = json.loads(envelope)
        kdf, cipher = data["kdf"], data["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise KeyFileError(f"unsupported key encryption {kdf['name']}/{cipher['name']}")
        params = kdf["params"]
        salt = base64.b64decode(kdf["salt"])
        nonce = base64.b64decode(cipher["nonce"])
        sealed = base64.b64decode(data["ciphertext"])
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
    except KeyFileError:
        raise
    except (ValueError, KeyError, TypeError):
        raise KeyFileError("malformed encrypted private key") from None
    if not (1 < n <= 1 << 20 and n & (n - 1) == 0 and 1 <= r <= 64 and 1 <= p <= 16):
        raise KeyFileError("malformed encrypted private key: unsupported scrypt parameters")
    try:
        key = _derive(password, salt, n, r, p)
    except (ValueError, TypeError, MemoryError):
        raise KeyFileError("malformed encrypted private key: unsupported scrypt parameters") from None
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(sealed, nonce))
    except nacl.exceptions.CryptoError:
        raise KeyFileError("cannot decrypt the private key: wrong password") from None


# --- keys -----------------------------------------------------------------------------------------


def generate_private_key() -> EllipticCurvePrivateKey:
    try:
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError as error:
        raise _missing_extra(error) from None
    return ec.generate_private_key(ec.SECP256R1())


def encrypt_private_key(key: EllipticCurvePrivateKey, password: bytes) -> bytes:
    """The cosign encrypted private key PEM for ``key``."""
    from cryptography.hazmat.primitives import serialization

    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem_encode(PRIVATE_PEM_TYPE, encrypt_secret(der, password))


def load_private_key(pem: bytes | str, password: bytes | None) -> EllipticCurvePrivateKey:
    """Read a cosign encrypted key (or an unencrypted PKCS#8/SEC1 EC key) into a P-256 key."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError as error:
        raise _missing_extra(error) from None
    pem_type, body = pem_decode(pem)
    if pem_type in (PRIVATE_PEM_TYPE, *LEGACY_PRIVATE_PEM_TYPES):
        if password is None:
            raise KeyFileError("the private key is encrypted: a password is needed")
        der = decrypt_secret(body, password)
    elif pem_type in ("PRIVATE KEY", "EC PRIVATE KEY"):
        der = body
    else:
        raise KeyFileError(f"unsupported private key type {pem_type!r}")
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError("the private key is not a valid PKCS#8/SEC1 key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError("only ECDSA P-256 keys are supported")
    return key


def public_key_pem(key: EllipticCurvePrivateKey | EllipticCurvePublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_public_key(pem: bytes | str) -> EllipticCurvePublicKey:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
    except ImportError as error:
        raise _missing_extra(error) from None
    pem_type, body = pem_decode(pem)
    if pem_type != PUBLIC_PEM_TYPE:
        raise KeyFileError(f"expected a PUBLIC KEY PEM, got {pem_type!r}")
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        key = serialization.load_der_public_key(body)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError("malformed public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFileError("only ECDSA public keys are supported")
    return key


def key_id(key: EllipticCurvePrivateKey | EllipticCurvePublicKey) -> str:
    """A short public fingerprint: sha256 of the PKIX DER, ``sha256:<hex>``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def sign_bytes(key: EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-SHA256, ASN.1 DER (what cosign stores base64 in the signature annotation)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify_bytes(key: EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


# --- passwords and files --------------------------------------------------------------------------


def password_from_env() -> bytes | None:
    """The key password from the environment; None when neither variable is set."""
    for name in PASSWORD_ENV_VARS:
        value = os.environ.get(name)
        if value is not None:
            return value.encode("utf-8")
    return None


def resolve_password(prompt: Callable[[], str] | None = None) -> bytes:
    found = password_from_env()
    if found is not None:
        return found
    if prompt is None:
        raise KeyFileError("no key password: set MODELPACK_KEY_PASSWORD (or COSIGN_PASSWORD)")
    return prompt().encode("utf-8")


def write_private_file(path: Path, data: bytes, *, force: bool = False, mode: int = 0o600) -> None:
    """Write atomically (temp file + rename) with ``mode``; refuse to overwrite unless ``force``."""
    if path.exists() and not force:
        raise InvalidInputError(f"{path} already exists (use --force to overwrite)")
    _install([_temp_file(path, data, mode)])


def _temp_file(path: Path, data: bytes, mode: int) -> tuple[str, Path]:
    """`data` written and synced to a temp file beside `path`: (temp name, path). A folder that
    cannot take it is bad input (exit 2); a write that fails (a full disk) is exit 1, no temp left."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise InvalidInputError(f"cannot write {path}: {error.strerror or error}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as error:
        _discard([tmp])
        if isinstance(error, OSError):
            raise StorageError(f"cannot write {path}: {error.strerror or error}") from None
        raise
    return tmp, path


def _install(written: list[tuple[str, Path]]) -> None:
    """Rename the temp files over their targets (the step that cannot run out of space)."""
    try:
        for tmp, path in written:
            os.replace(tmp, path)
    except OSError as error:
        raise StorageError(f"cannot write {path}: {error.strerror or error}") from None
    finally:
        _discard([tmp for tmp, _ in written])


def _discard(temps: list[str]) -> None:
    for tmp in temps:
        if os.path.lexists(tmp):
            os.unlink(tmp)


@dataclass(frozen=True)
class KeyPairFiles:
    private_key: Path
    public_key: Path
    key_id: str

    def to_dict(self) -> dict[str, str]:
        return {
            "private_key": str(self.private_key),
            "public_key": str(self.public_key),
            "key_id": self.key_id,
        }


def keygen(prefix: str | Path, password: bytes, *, force: bool = False) -> KeyPairFiles:
    """Create ``PREFIX.key`` (encrypted, mode 0600) and ``PREFIX.pub``; cosign-compatible."""
    base = Path(prefix)
    private_path = base.with_name(base.name + ".key")
    public_path = base.with_name(base.name + ".pub")
    if not force:
        for existing in (private_path, public_path):
            if existing.exists():
                raise InvalidInputError(f"{existing} already exists (use --force to overwrite)")
    key = generate_private_key()
    # both written before either is in place: a full disk leaves no half of a pair
    private = _temp_file(private_path, encrypt_private_key(key, password), 0o600)
    try:
        public = _temp_file(public_path, public_key_pem(key), 0o644)
    except BaseException:
        _discard([private[0]])
        raise
    _install([private, public])
    return KeyPairFiles(private_path, public_path, key_id(key))


def load_signing_key(
    key: str | Path | None, *, password: bytes | None = None, prompt: Callable[[], str] | None = None
) -> EllipticCurvePrivateKey:
    """Load the private key from a file, or from ``MODELPACK_SIGNING_KEY`` when ``key`` is None.

    ``key`` may also be ``env://VAR`` to read the PEM from another variable. The password is
    asked for (env, then ``prompt``) only when the key is encrypted.
    """
    if key is None:
        pem = os.environ.get(SIGNING_KEY_ENV)
        if not pem:
            raise InvalidInputError(f"no signing key: pass --key KEY or set {SIGNING_KEY_ENV}")
        source = SIGNING_KEY_ENV
    elif isinstance(key, str) and key.startswith("env://"):
        var = key[len("env://") :]
        pem = os.environ.get(var, "")
        if not pem:
            raise InvalidInputError(f"no signing key in environment variable {var}")
        source = var
    else:
        path = Path(key)
        try:
            pem = path.read_text(encoding="utf-8")
        except OSError as error:
            raise InvalidInputError(f"cannot read key {path}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise KeyFileError(f"{path}: not a PEM key (not UTF-8 text)") from None
        source = str(path)
    try:
        pem_type, _ = pem_decode(pem)
    except KeyFileError as error:
        raise KeyFileError(f"{source}: {error.message}") from None
    needs_password = pem_type.startswith("ENCRYPTED")
    if needs_password and password is None:
        password = resolve_password(prompt)
    try:
        return load_private_key(pem, password)
    except KeyFileError as error:
        raise KeyFileError(f"{source}: {error.message}") from None


def load_verification_key(key: str | Path) -> EllipticCurvePublicKey:
    """Read a ``PUBLIC KEY`` PEM file (or ``env://VAR``)."""
    if isinstance(key, str) and key.startswith("env://"):
        pem = os.environ.get(key[len("env://") :], "")
        source = key
    else:
        try:
            pem = Path(key).read_text(encoding="utf-8")
        except OSError as error:
            raise InvalidInputError(f"cannot read public key {key}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise KeyFileError(f"{key}: not a PEM key (not UTF-8 text)") from None
        source = str(key)
    try:
        return load_public_key(pem)
    except KeyFileError as error:
        raise KeyFileError(f"{source}: {error.message}") from None


__all__ = [
    "KeyFileError",
    "KeyPairFiles",
    "encrypt_private_key",
    "generate_private_key",
    "key_id",
    "keygen",
    "load_private_key",
    "load_public_key",
    "load_signing_key",
    "load_verification_key",
    "public_key_pem",
    "sign_bytes",
    "verify_bytes",
]
