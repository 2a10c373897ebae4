"""The paper's claims and report (tables, figures, REPORT.md) and ``deqexp verify``."""
