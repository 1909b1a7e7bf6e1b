"""The L3 lookup op: per-token softmax attention of one query over the token's own table rows."""
