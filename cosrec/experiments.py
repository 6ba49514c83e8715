"""The statistics of `cosrec experiment report`: per variant, the click-through and conversion
rates of its recommendations with 95% intervals, and each challenger against the control.

Rates are per recommendation: the share of served recommendations with at least one attributed
interaction of the type (`contract.attribution`). Intervals are Wilson score intervals; a
difference is tested with the two-sided two-proportion z-test (pooled standard error under the
null hypothesis of equal rates), its interval with the unpooled normal approximation. Plain
`math`: no scipy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from contract.attribution import Attribution

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ((0, 1) when there are no trials)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Difference:
    """Challenger rate minus control rate."""

    difference: float
    low: float  # 95% interval of the difference
    high: float
    z: float
    p_value: float  # two-sided


def two_proportion_test(x_control: int, n_control: int, x_other: int, n_other: int) -> Difference:
    """The two-sided two-proportion z-test of other against control."""
    if n_control == 0 or n_other == 0:
        return Difference(0.0, -1.0, 1.0, 0.0, 1.0)
    p_control, p_other = x_control / n_control, x_other / n_other
    difference = p_other - p_control
    pooled = (x_control + x_other) / (n_control + n_other)
    standard_error = math.sqrt(pooled * (1 - pooled) * (1 / n_control + 1 / n_other))
    z = difference / standard_error if standard_error > 0 else 0.0
    p_value = math.erfc(abs(z) / math.sqrt(2))
    unpooled = math.sqrt(
        p_control * (1 - p_control) / n_control + p_other * (1 - p_other) / n_other
    )
    return Difference(
        difference, difference - Z_95 * unpooled, difference + Z_95 * unpooled, z, p_value
    )


@dataclass(frozen=True)
class Rate:
    successes: int
    trials: int
    rate: float
    low: float
    high: float
    versus_control: Difference | None  # None for the control itself


@dataclass(frozen=True)
class VariantReport:
    variant: str
    served: int
    click_through: Rate
    conversion: Rate
    interactions: dict[str, int]


def experiment_report(
    attribution: Attribution, control: str, click_type: str, conversion_type: str
) -> list[VariantReport]:
    """Every variant with recorded recommendations, the control first."""
    variants = attribution.variants
    names = sorted(variants, key=lambda name: (name != control, name))
    base = variants.get(control)

    def rate(name: str, kind: str) -> Rate:
        counts = variants[name]
        x, n = counts.acted.get(kind, 0), counts.served
        versus = None
        if name != control and base is not None:
            versus = two_proportion_test(base.acted.get(kind, 0), base.served, x, n)
        return Rate(x, n, x / n if n else 0.0, *wilson_interval(x, n), versus)

    return [
        VariantReport(
            name,
            variants[name].served,
            rate(name, click_type),
            rate(name, conversion_type),
            dict(sorted(variants[name].interactions.items())),
        )
        for name in names
    ]


def as_json(reports: list[VariantReport]) -> list[dict]:
    return [asdict(report) for report in reports]


def format_report(reports: list[VariantReport], control: str, unmatched: int) -> str:
    """A table: per variant, both rates with intervals and the test against the control."""
    header = (
        f"{'variant':<10} {'served':>8}  {'click-through [95% CI]':<26} {'vs ' + control:<30}"
        f"  {'conversion [95% CI]':<26} {'vs ' + control:<30}"
    )
    lines = [header, "-" * len(header)]
    for report in reports:
        cells = [f"{report.variant:<10} {report.served:>8}"]
        for rate in (report.click_through, report.conversion):
            cells.append(f"{_rate(rate):<26}")
            cells.append(f"{_versus(rate.versus_control):<30}")
        lines.append("  ".join(cells))
    lines.append(
        "rates: share of recommendations with at least one attributed interaction of the type; "
        "vs: difference, 95% CI, two-sided two-proportion z-test"
    )
    if unmatched:
        lines.append(f"{unmatched} events named a recommendation that did not show their item")
    return "\n".join(lines)


def _rate(rate: Rate) -> str:
    return f"{rate.rate:.4f} [{rate.low:.4f}, {rate.high:.4f}]"


def _versus(versus: Difference | None) -> str:
    if versus is None:
        return "(control)"
    return (
        f"{versus.difference:+.4f} [{versus.low:+.4f}, {versus.high:+.4f}] p={versus.p_value:.3g}"
    )
