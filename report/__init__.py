"""The cycle report: the closed cycles of a time window as an HTML page with plots and a KPI CSV.

``build_report`` (report.build) is the entry; report.fetch reads the data (SQL, Redis, a bundle's
tracks), report.kpis computes the KPIs, report.plots and report.site_map draw, report.html writes
the page. The public API is re-exported here.
"""

from report.build import build_report
from report.model import ReportError, ReportRequest, ReportResult, parse_time

__all__ = ["ReportError", "ReportRequest", "ReportResult", "build_report", "parse_time"]
