"""conda's rules on top of rattler's lenient parser: specs, names, versions and build strings rattler reads
but conda (26.7) refuses or reads otherwise are refused; the specs real packages use are not."""

from __future__ import annotations

import pytest

from reindexer.conda_grammar import build_problem, name_problem, version_problem
from reindexer.layout import parse_package_filename
from reindexer.package_reader import ArchiveDigests, BadPackageError, PackageMetadata
from reindexer.records import build_record
from tests.support.archives import index_json

DIGESTS = ArchiveDigests(md5="0" * 32, sha256="1" * 64, size=1)


def build_with(**fields: object) -> dict[str, object]:
    name, version, build = (
        str(fields.pop(key, default))
        for key, default in (("name", "pkg"), ("version", "1.0"), ("build", "h0_0"))
    )
    filename = parse_package_filename(f"{name}-{version}-{build}.conda")
    assert filename is not None
    return build_record(
        filename, "linux-64", PackageMetadata(index_json(name, version, build, **fields), None), DIGESTS
    )


@pytest.mark.parametrize(
    "spec",
    [
        "python >=3.8,<4.0a0",
        "numpy",
        "libc 2.*",
        "python_abi 3.12.* *_cp312",
        "libfoo 1.2.3 h1234567_0",
        "numpy=1.2=py38_0",
        "numpy >=1.2.*",
        "numpy <1.5.*",
        "numpy !=1.*",
        "numpy 1.21|1.22",
        "__glibc >=2.17",
        "_openmp_mutex >=4.5",
        "zope.interface",
        "openssl >=1.1.1_",
        "x[version='>1']",
        'numpy[build_number=">2"]',
        "conda-forge::numpy",
        "python * *_cpython",
        "numpy ~=1.2",
        "blas=*=mkl",
        "libblas=*=*mkl",
        "pytorch=2.1=*cuda*",
        "numpy=1.2.*=py38*",
        "pytorch * cuda*",
        "python 2.7*",
        "numpy[version='>=1.21,<2']",
        "typing_extensions ==4.12.2 pyha770c72_0",
        "https://conda.anaconda.org/conda-forge::numpy",
        "numpy >=1.0 # a comment",
    ],
)
def test_specs_of_real_packages_are_accepted(spec):
    assert build_with(depends=[spec])["depends"] == [spec]


@pytest.mark.parametrize(
    ("spec", "phrase"),
    [
        ("numpy >1.0.*", "which conda reads otherwise"),  # conda: >1.0, rattler: >=1.0
        ("numpy >=1*", "which conda reads otherwise"),
        ("numpy ~=1", "single version component"),  # conda fails while matching
        ("numpy >=1+a_", "empty version component"),
        ("numpy 1!2!3", "build part '!3'"),  # rattler reads '!3' as a build string
        ("pip >=24.0;", "';' or parentheses"),
        ("numpy (>=1,<2)|>=3", "';' or parentheses"),
        ("numpy >=1 if __unix", "build part 'if __unix'"),
        ("numpy[extras=[a]]", "does not parse"),
        ("numpy[flags=[cuda]]", "does not parse"),
        ("foo__bar", "CEP-26"),
        (" numpy", "printable ASCII"),
        ("numpy 1.0\u00e9", "printable ASCII"),
        ("numpy >=1 <2", "build part '<2'"),
        ("numpy 1.0 a|b", "build part 'a|b'"),
        # found by running conda 26.7.1 over what the first version of these rules accepted
        ("numpy 1+a+b", "build part '+b'"),
        ("numpy 1.0=", "empty version or build after '='"),
        ("numpy 1a!2[build=x]", "both before and inside brackets"),
        ("numpy: 1.0", "':' outside the channel part"),
        ("numpy >=1, <2", "spaces around ','"),
        ("numpy[]", "empty brackets"),
        ("numpy=1.0.", "build part '.'"),
        ("numpy *1", "with '*' inside"),
        ("numpy 1.*.*", "with '*' inside"),
        ("numpy !=1*", "which conda reads otherwise"),
        ("numpy if __unix", "condition"),
        ("~ /x::numpy", "channel part"),
    ],
)
def test_specs_conda_refuses_or_reads_otherwise_are_refused(spec, phrase):
    with pytest.raises(BadPackageError, match="does not parse") as error:
        build_with(depends=[spec])
    assert phrase in str(error.value)


@pytest.mark.parametrize("name", ["foo__bar", ".b", "foo..bar", "foo.-bar", "___x"])
def test_names_outside_cep_26_are_refused(name):
    assert name_problem(name) is not None
    with pytest.raises(BadPackageError, match="CEP-26"):
        build_with(name=name)


@pytest.mark.parametrize(
    "name", ["numpy", "_libgcc_mutex", "__glibc", "zope.interface", "r-base", "python_abi"]
)
def test_names_of_real_packages_are_conda_names(name):
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("version", "phrase"),
    [("1+a_", "empty version component"), ("1.0+x__", "empty version component"), ("1+a+b", "local version")],
)
def test_versions_conda_refuses_are_refused(version, phrase):
    assert phrase in (version_problem(version) or "")


@pytest.mark.parametrize(
    "version", ["1.0", "1.0.2_", "1!2.0", "1.0+local", "1.0a0", "1.0.post1", "2024.01.01"]
)
def test_versions_of_real_packages_pass_conda_rules(version):
    assert version_problem(version) is None
    assert build_with(version=version)["version"] == version


@pytest.mark.parametrize("build", ["h=0", "a,b", "a@b", "a~b"])
def test_build_strings_conda_refuses_are_refused(build):
    assert build_problem(build) is not None
    with pytest.raises(BadPackageError, match="build string"):
        build_with(build=build)


def test_pytorch_style_build_strings_pass():
    assert build_with(build="py3.9_cuda11.3_cudnn8.2.0_0")["build"] == "py3.9_cuda11.3_cudnn8.2.0_0"


def test_track_features_names_with_spaces_are_refused_as_conda_would_split_them():
    with pytest.raises(BadPackageError, match="must not hold spaces or commas"):
        build_with(track_features=["a b"])
    assert build_with(track_features=["a", "b"])["track_features"] == ["a", "b"]
