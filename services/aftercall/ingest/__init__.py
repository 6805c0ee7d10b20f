"""Calls in: live streams and recordings (CallIngest), their spool and durable jobs, and the processor."""
