"""Imports the handlers from a Lambda bundle alone and prints a JSON report (where modules came from, the AWS
SDK's versions, whether botocore knows conditional writes), then "ok". Run by path with -I -S so that only
the bundle is on sys.path: python -I -S tests/support/bundle_check.py BUNDLE"""

# Only the standard library before the bundle is on sys.path, and nothing from tests: the check must see
# the bundle and nothing else.
from __future__ import annotations

import json
import sys
from types import ModuleType
from typing import Any


def bundle_report(bundle: str) -> dict[str, Any]:
    """Puts `bundle` first on sys.path, imports what the handlers need from it and reports on it."""
    sys.path.insert(0, bundle)
    import aws_xray_sdk  # type: ignore[import-untyped]
    import boto3
    import botocore
    import botocore.session
    import jinja2
    import markupsafe
    import obstore
    import rattler
    import zstandard

    import reindexer
    import reindexer.handlers.full_reindex
    import reindexer.handlers.package_events
    from reindexer.channel_page import page_of, render_page
    from reindexer.channeldata import ChannelSnapshot, build_channeldata
    from reindexer.record_schema import checked_run_exports

    checked_run_exports({"weak": ["python >=3.10"]})  # rattler's parsers load on first use
    # The channel page: Jinja2 and the package's templates folder, loaded from the bundle.
    snapshot = ChannelSnapshot(("noarch",), ())
    page = render_page(page_of("<bundle>", snapshot, build_channeldata(snapshot)))
    put_object = botocore.session.get_session().get_service_model("s3").operation_model("PutObject")
    put_object_members = set(put_object.input_shape.members) if put_object.input_shape else set()
    modules: list[ModuleType] = [
        aws_xray_sdk,
        boto3,
        botocore,
        jinja2,
        markupsafe,
        obstore,
        rattler,
        reindexer,
        zstandard,
    ]
    return {
        "files": {module.__name__: module.__file__ for module in modules},
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "conditional_writes": {"IfMatch", "IfNoneMatch"} <= put_object_members,
        "channel_page": b"<title>&lt;bundle&gt; " in page,
    }


def main(argv: list[str]) -> None:
    (bundle,) = argv
    print(json.dumps(bundle_report(bundle)))
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1:])
