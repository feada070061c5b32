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
_SPEC_BUILD = re.compile(r"[A-Za-z0-9_*][A-Za-z0-9_.+*]*")
_OPERATOR = re.compile(r"^(==|!=|>=|<=|~=|>|<|=)?")
# Parentheses group version constraints differently in conda (or not at all); ';' ends a spec in rattler.
_SPEC_REFUSED = (";", "(", ")")


# conda's Platform enum, by value and by name: a record's `platform` must be one of them.
_PLATFORMS = frozenset(
    {"freebsd", "linux", "win", "win32", "openbsd", "openbsd5", "osx", "darwin", "zos", "emscripten", "wasi"}
)


def platform_known(platform: str) -> bool:
    return platform in _PLATFORMS


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
    (`version` as rattler prints its version constraint): the text itself is checked too, since rattler's
    lenient parser drops some of it or moves it into the build."""
    if not spec.isascii() or not spec.isprintable() or spec != spec.strip():
        return "must be printable ASCII without surrounding spaces"
    if any(mark in spec for mark in _SPEC_REFUSED):
        return "holds ';' or parentheses, which conda does not read as rattler does"
    if problem := name_problem(name):
        return f"names a package that {problem}"
    if build is not None and not _SPEC_BUILD.fullmatch(build):
        # rattler read a tail of the version as a build ('pip >=24.0;', 'numpy 1!2!3', 'numpy 1+a+b')
        return f"has a build part {build[:32]!r} conda refuses"
    if problem := _text_problem(spec):
        return problem
    for literal in (part.strip() for part in re.split(r"[,|]", version or "")):
        operator = _OPERATOR.match(literal)
        assert operator is not None  # the pattern matches the empty string
        value = literal[operator.end() :].removesuffix("*").removesuffix(".")
        if operator.group(1) == "~=" and "." not in value:
            return "uses '~=' with a single version component, which conda cannot match"
        if value and (problem := version_problem(value)):
            return f"has a version that {problem}"
    return None


_CHANNEL = re.compile(r"[A-Za-z0-9_.\-/:]+")
# A constraint as written: an operator and the version after it (a '=build' part is not part of it).
_CONSTRAINT = re.compile(r"(==|!=|>=|<=|~=|>|<|=)\s*([^,|\s\]\"'=]+)")
_BRACKET_VERSION_OR_BUILD = re.compile(r"(?:^|,)\s*(?:version|build)\s*=")


def _text_problem(spec: str) -> str | None:
    """The spec as conda reads it: `[channel::]name[ version[ build]]` or `name=version=build`, then an
    optional `[key=value, ...]` part."""
    channel, _, rest = spec.rpartition("::")
    if channel and not _CHANNEL.fullmatch(channel):
        return "has a channel part conda reads otherwise"
    body, bracket, fields = rest.partition("[")
    body = body.split("#", 1)[0].strip()
    if ":" in body:
        return "holds ':' outside the channel part, which conda reads otherwise"
    if bracket and not fields.removesuffix("]").strip():
        return "has empty brackets"
    if "if" in body.split():
        return "holds a condition, which conda does not read"
    if re.search(r"=(?=$|\s)", body):
        return "has an empty version or build after '='"
    if re.search(r"\s[,|]|[,|]\s", body):
        return "has spaces around ',' or '|', which conda does not join"
    if bracket and len(body.split()) + body.count("=") > 1 and _BRACKET_VERSION_OR_BUILD.search(fields):
        return "gives a version or build both before and inside brackets"
    for operator, value in _CONSTRAINT.findall(body + " " + fields):
        if "*" in value and not _glob_read_alike(operator, value):
            return f"uses '{operator}{value[:32]}', which conda reads otherwise"
    words = body.split()
    if len(words) > 1 and not _OPERATOR.match(words[1]).group(1):  # type: ignore[union-attr]
        for value in re.split(r"[,|]", words[1]):
            if "*" in value.removesuffix("*") and value != "*":
                return f"has a version {value[:32]!r} with '*' inside, which conda reads otherwise"
    return None


def _glob_read_alike(operator: str, value: str) -> bool:
    """A glob both parsers read the same way: after '=' or '==' (versions and builds of
    'name=version=build' alike), and a trailing '.*' after '!=', '>=', '<=' and '<'."""
    if operator in ("=", "=="):
        return True
    return "*" not in value.removesuffix("*") and operator in ("!=", ">=", "<=", "<") and value.endswith(".*")
