"""Results of isosparse suites: pandas run tables, iso-sparse analysis, figures and reports.

names (MLflow tag/param/metric names, no pandas) → load (mlflow.search_runs frame → run table) → schema
(typed columns) → analysis / fits (tables, power-law fits) → plots (matplotlib Figures) → report (HTML +
Markdown). Never imports ray, mlflow, torch or workloads: the orchestrator hands DataFrames in.
"""
