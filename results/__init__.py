"""Results of isosparse suites: pandas run tables, iso-sparse analysis, figures and reports.
Details: docs/results.md#results."""
