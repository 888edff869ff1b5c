"""Tests of the strategy engine (rollwise.strategy): table tests, property tests, plan I/O."""
