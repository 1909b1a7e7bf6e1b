"""SCONE (Yu et al., arXiv 2502.01637; L3_SPEC §6): f-gram discovery, suffix tagging, the f-gram table."""
