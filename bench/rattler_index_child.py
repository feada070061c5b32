"""rattler-index on one channel in S3, in a fresh interpreter: py-rattler's index_s3, as a benchmarked child.

argv: the endpoint URL, the channel URL (s3://bucket/prefix), then optionally an access key and a secret key
(moto's `testing` keys when left out). Prints DONE_MARKER once index_s3 has returned.
"""

from __future__ import annotations

import asyncio
import sys

# py-rattler 0.28 sometimes crashes (SIGSEGV/SIGABRT) while the interpreter shuts down, after index_s3 has
# returned: the tokio runtime of pyo3-async-runtimes racing interpreter finalization. The marker tells such
# a crash from a failed run.
DONE_MARKER = "RATTLER-INDEX-DONE"
REGION = "us-east-1"


def main(argv: list[str] | None = None) -> int:
    # Imported here, not above: the benchmark imports this module for DONE_MARKER without loading rattler.
    from rattler.index import S3Credentials, index_s3

    args = sys.argv[1:] if argv is None else list(argv)
    endpoint, channel_url = args[0], args[1]
    access_key, secret_key = (args[2], args[3]) if len(args) > 3 else ("testing", "testing")
    credentials = S3Credentials(endpoint, REGION, access_key, secret_key, addressing_style="path")
    asyncio.run(index_s3(channel_url, credentials=credentials))
    print(DONE_MARKER, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
