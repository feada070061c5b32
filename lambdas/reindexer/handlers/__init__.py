"""AWS Lambda entry points: thin adapters from events to the indexing use cases."""
