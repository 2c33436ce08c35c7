"""`vidal report`: a static, self-contained HTML report of a built dataset."""

from vidal.report.html import collect, write_report

__all__ = ["collect", "write_report"]
