"""Where conda (26.7) is stricter than rattler's lenient parser: the rules a record must also meet so that
conda can load it, match it and request it by name, version and build.

rattler stays the parser; these close the gaps measured by running conda's own VersionOrder, MatchSpec and
PackageRecord over thousands of records and specs rattler accepts (names outside CEP-26, versions with an
empty component, version tails rattler reads as build strings, parentheses, conditions, extras).
"""

from __future__ import annotations

import re

# CEP-26 package names: lowercase, single separators between runs of letters and digits; virtual
# packages start with two underscores.
_NAME = re.compile(r"(?:[a-z0-9]|[a-z0-9_](?!_))[._-]?(?:[a-z0-9]+(?:[._-]|$))*")
_VIRTUAL_NAME = re.compile(r"__[a-z0-9][._-]?(?:[a-z0-9]+(?:[._-]|$))*")
# conda's VersionOrder accepts these characters (case-insensitively); '*' only in specs, as a glob.
_VERSION_CHARACTERS = re.compile(r"[0-9A-Za-z_.+!]+")
_BUILD_STRING = re.compile(r"[A-Za-z0-9_.+]+")
_SPEC_BUILD = re.compile(r"[A-Za-z0-9_.+*]+")
_OPERATOR = re.compile(r"^(==|!=|>=|<=|~=|>|<|=)?")
# Parentheses group version constraints differently in conda (or not at all); ';' ends a spec in rattler.
_SPEC_REFUSED = (";", "(", ")")


def name_problem(name: str) -> str | None:
    if _NAME.fullmatch(name) or _VIRTUAL_NAME.fullmatch(name):
        return None
    return "is not a conda package name (CEP-26: lowercase letters and digits, single '.', '-' or '_')"


def version_problem(version: str) -> str | None:
    """What conda's VersionOrder would refuse in `version` (rattler has already parsed it)."""
    if not _VERSION_CHARACTERS.fullmatch(version):
        return "holds characters conda does not allow in a version"
    if version.count("!") > 1:
        return "has more than one epoch separator '!'"
    epoch, _, rest = version.rpartition("!")
    if epoch and not epoch.isdigit():
        return "has an epoch that is not a whole number"
    if rest.count("+") > 1:
        return "has more than one local version separator '+'"
    main, plus, local = rest.partition("+")
    # A trailing '_' is conda's openssl-style suffix, not a separator.
    parts = [main.removesuffix("_")] + ([local] if plus else [])
    if not main or any(not c for part in parts for c in part.replace("_", ".").split(".")):
        return "has an empty version component"
    return None


def build_problem(build: str) -> str | None:
    if _BUILD_STRING.fullmatch(build):
        return None
    return "may only hold letters, digits, '_', '.' and '+' in conda"


def spec_problem(spec: str, name: str, version: str | None, build: str | None) -> str | None:
    """What conda would refuse, or read otherwise, in a match spec rattler parsed into these parts
    (`version` as rattler prints its version constraint)."""
    if not spec.isascii() or not spec.isprintable() or spec != spec.strip():
        return "must be printable ASCII without surrounding spaces"
    if any(mark in spec for mark in _SPEC_REFUSED):
        return "holds ';' or parentheses, which conda does not read as rattler does"
    if problem := name_problem(name):
        return f"names a package that {problem}"
    if build is not None and not _SPEC_BUILD.fullmatch(build):
        # rattler read a tail of the version as a build string ('pip >=24.0;', 'numpy 1!2!3', '… if x')
        return f"has a build part {build[:32]!r} conda refuses"
    for operator, value in _CONSTRAINT.findall(spec):
        if "*" in value and not _glob_read_alike(operator, value):
            return f"uses '{operator}{value[:32]}', which conda reads otherwise"
    for literal in (part.strip() for part in re.split(r"[,|]", version or "")):
        operator = _OPERATOR.match(literal)
        assert operator is not None  # the pattern matches the empty string
        value = literal[operator.end() :].removesuffix("*").removesuffix(".")
        if operator.group(1) == "~=" and "." not in value:
            return "uses '~=' with a single version component, which conda cannot match"
        if value and (problem := version_problem(value)):
            return f"has a version that {problem}"
    return None


# A constraint as written: an operator and the version after it.
_CONSTRAINT = re.compile(r"(==|!=|>=|<=|~=|>|<|=)\s*([^,|\s\]\"']+)")


def _glob_read_alike(operator: str, value: str) -> bool:
    """A trailing glob both parsers read the same way: '=1.2.*', '==1.*', '!=1.*', and '>=1.2.*' style."""
    if "*" in value.removesuffix("*"):
        return False
    if operator in ("=", "==", "!="):
        return True
    return operator in (">=", "<=", "<") and value.endswith(".*")
