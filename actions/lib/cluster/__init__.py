"""The Cassandra ring's operations: status, joins, cleanup, decommission, settle, replacement."""
