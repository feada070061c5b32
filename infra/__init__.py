"""CDK constructs and stacks that deploy a self-indexing conda channel. Never imports lambdas/."""
