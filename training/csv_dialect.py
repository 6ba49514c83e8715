"""The CSV dialect of an interaction log, sniffed from its header line: one rule for the
line-by-line reader (`training.readers`) and the pyarrow one (`training.arrow_readers`)."""

from __future__ import annotations

import csv


def sniff_dialect(header_line: str) -> type[csv.Dialect] | str:
    try:
        return csv.Sniffer().sniff(header_line, delimiters=",\t;|")
    except csv.Error:
        return "excel"
