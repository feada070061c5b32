"""CDK constructs and stacks that deploy a self-indexing conda channel. From lambdas/ it imports only
reindexer.contract, the pure module of facts both sides must agree on (a test guards it)."""
