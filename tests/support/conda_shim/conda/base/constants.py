"""conda.base.constants.PLATFORM_DIRECTORIES as conda defines it (conda/base/constants.py: "noarch" and then
PLATFORMS): conda-index takes it as the folder names a channel's subdirs may have (utils.DEFAULT_SUBDIRS)."""

PLATFORMS = (
    "emscripten-wasm32",
    "wasi-wasm32",
    "freebsd-64",
    "linux-32",
    "linux-64",
    "linux-aarch64",
    "linux-armv6l",
    "linux-armv7l",
    "linux-ppc64",
    "linux-ppc64le",
    "linux-riscv64",
    "linux-s390x",
    "osx-64",
    "osx-arm64",
    "win-32",
    "win-64",
    "win-arm64",
    "zos-z",
)
KNOWN_SUBDIRS = ("noarch", *PLATFORMS)
PLATFORM_DIRECTORIES = KNOWN_SUBDIRS
