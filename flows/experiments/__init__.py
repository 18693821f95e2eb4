"""Experiments: spec loading, inputs from a store or a table, the runner, reports and tracking."""
