"""The local tools of reindexer: the `reindexer` command and the local stack (embedded S3 + SQS and a
worker running the Lambda handler). Not part of the Lambda asset."""
