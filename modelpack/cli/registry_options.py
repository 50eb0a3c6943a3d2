"""Registry credentials from the command line, shared by `build` and `push`.

Kept apart from `_common` (which every command loads) and from `push_cmd` (which loads the
build stages): `build` answers an unchanged rebuild from its record without either.
"""

from __future__ import annotations

import sys

from modelpack.errors import InvalidInputError
from modelpack.image.results import RegistryAuth


def registry_auth(username: str | None, password_stdin: bool) -> RegistryAuth | None:
    """``--registry-username`` with ``--registry-password-stdin`` as credentials; None when neither is given.

    The password is the first line of stdin. Either option without the other, or an
    empty password, is invalid input.
    """
    if not (password_stdin or username):
        return None
    if not (password_stdin and username):
        raise InvalidInputError("--registry-username and --registry-password-stdin go together")
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise InvalidInputError("--registry-password-stdin: no password on stdin")
    return RegistryAuth(username, password)
