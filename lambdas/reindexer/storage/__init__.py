"""Store implementations: Amazon S3 and compatible services, and local folders."""
