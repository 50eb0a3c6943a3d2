"""requirements.txt read the way pip reads it (its own reader is the reference: continued lines,
comments, line ends), and shipped in the image as the user wrote it but for index options and
URL credentials."""

from __future__ import annotations

import pytest
from pip._internal.req.req_file import preprocess

from modelpack.pipeline.lock_file import parse_lock
from modelpack.project.requirements import logical_lines, parse_requirements, shipped_requirements
from modelpack.supply.sbom import parse_lock as sbom_parse_lock

# each a file whose lines pip joins, or does not join, in a way of its own
CONTINUED = {
    "inside a version": "numpy==2.\\\n2.6\n",
    "a space after the backslash": "numpy==2.\\ \n2.6\n",
    "into a comment line": "six \\\n# a comment\nidna\n",
    "into an indented comment line": "six \\\n    # a comment\nidna\n",
    "a comment before the backslash": "six # a comment \\\nidna\nattrs\n",
    "a comment line ending in a backslash": "# a comment \\\nsix\n",
    "at the end of the file": "six\\",
    "at the end of the file, then a line end": "six \\\n",
    "an option's value": "--index-url \\\nhttps://h.example/simple\nsix\n",
    "an option's name": "--index-\\\nurl https://h.example/simple\n",
    "two backslashes": "six\\\\\n==1.16\n",
    "a leading backslash": "\\six\\\n==1.16\n",
    "into a blank line": "six \\\n\nidna\n",
    "three lines": "six\\\n==\\\n1.16 ; python_version >= '3.8'\nidna\n",
    "Windows line ends": "numpy==2.\\\r\n2.6\r\nsix\r\n",
    "a hash option": "six==1.16 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n",
}


@pytest.mark.parametrize("case", sorted(CONTINUED))
def test_lines_are_joined_as_pip_joins_them(case: str) -> None:
    text = CONTINUED[case]
    assert logical_lines(text) == list(preprocess(text))


def test_a_continued_version_is_the_version_pip_installs() -> None:
    lines, problems = parse_requirements("numpy==2.\\\n2.6\nsix # pinned below \\\nidna\n")
    assert not problems
    assert [(line.line, line.name, line.specifier) for line in lines] == [(1, "numpy", "==2.2.6"), (3, "six", "")]
    lines, problems = parse_requirements("numpy==2.\\ \n2.6\n")  # a space after it: no continuation
    assert [problem.line for problem in problems] == [1] and [line.name for line in lines] == ["2-6"]


def test_windows_line_ends_are_read() -> None:
    lines, problems = parse_requirements("six==1.16\r\nidna \\\r\n  >=3\r\n--pre\r\n")
    assert not problems
    assert [(line.line, line.text) for line in lines] == [(1, "six==1.16"), (2, "idna   >=3"), (4, "--pre")]


@pytest.mark.parametrize(
    "text",
    [
        "six==1.16\r\nidna>=3  # é, a comment\r\n",
        "six==1.16\r\nidna>=3",
        "six==1.16\nidna>=3\r\n\r\n",
        "six==1.16\ridna>=3\r",
        "",
        "\r\n",
    ],
)
def test_a_file_without_index_options_ships_as_written(text: str) -> None:
    assert shipped_requirements(text) == text


def test_shipped_lines_keep_their_line_ends() -> None:
    text = "six\r\n--index-url https://u:p@h.example/simple\r\nidna\n"
    assert shipped_requirements(text) == "six\r\n# (index option removed by modelpack)\r\nidna\n"


@pytest.mark.parametrize(
    "text",
    [
        "--index-\\\nurl https://h.example/TOKEN/simple\nsix\n",  # the option's name continued
        "--extra-index-url \\\n\\\n  https://h.example/TOKEN/simple\nsix\n",
        "-i\\\nhttps://h.example/TOKEN/simple\nsix\n",
        "six @ https://user:TO\\\nKEN@h.example/six.whl\n",  # a credential continued
        "six @ https://us\\\ner:TOKEN\\\n@h.example/six.whl  # a comment\n",
    ],
)
def test_continued_index_options_and_credentials_do_not_ship(text: str) -> None:
    shipped = shipped_requirements(text)
    assert "TOKEN" not in shipped and "TO\\" not in shipped
    assert len(shipped.splitlines()) == len(text.splitlines())  # messages keep their line numbers
    wanted = [line for _, line in logical_lines(text) if not line.startswith("-")]
    assert [line.replace("***@", "") for _, line in logical_lines(shipped)] == [
        line.replace("user:TOKEN@", "") for line in wanted
    ]


def test_only_what_pip_continues_is_blanked() -> None:
    # a space after the backslash ends the option's line for pip: the next line is a requirement
    text = "--index-url https://h.example/simple \\ \nsix==1.16\n--extra-index-url https://e/s \\\n# c\nidna\n"
    assert shipped_requirements(text).splitlines() == [
        "# (index option removed by modelpack)",
        "six==1.16",
        "# (index option removed by modelpack)",
        "# (index option removed by modelpack)",
        "idna",
    ]


def test_lock_readers_join_lines_as_pip_does() -> None:
    """pip installs the image from the lock: what it reads is what the record and SBOM say."""
    text = "six==1.\\\n16.0 \\\n    --hash=sha256:aa\nidna==3.7\t# pinned \\\n    --hash=sha256:bb\n"
    assert [(p.name, p.version, p.hashes) for p in parse_lock(text)] == [
        ("six", "1.16.0", ("sha256:aa",)),
        ("idna", "3.7", ()),
    ]
    assert [(p.name, p.version, p.hashes) for p in sbom_parse_lock(text)] == [
        ("idna", "3.7", ()),
        ("six", "1.16.0", (("sha256", "aa"),)),
    ]
