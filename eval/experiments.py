"""An A/B experiment's report from the session store: per arm, the like rate per exposure with its 95% interval,
a significance test against the control arm (the split's first), and the guardrails.

    report = experiment_report(store.experiment_rows("pipeline-vs-popularity"))
    print(format_report(report));  Path("report.html").write_text(html_report(report, rows))

The unit is the session (a user): its exposures (picks shown under the arm) and its outcomes (a like or click event
on an exposed item, after it was shown) go together. The like rate of an arm is its outcomes over its exposures.
Its interval resamples the arm's sessions (bootstrap, BOOTSTRAP_SAMPLES draws, the seed); the test shuffles the arm
labels of the two arms' sessions (a permutation test of the difference in like rate, two-sided, PERMUTATIONS
draws): exact under "the arm makes no difference", with no assumption that a session's picks are independent.
Guardrails per arm: turn latency p95 (seconds, whole turns), fallback rate (turns where any step fell back),
error rate (failed turns over all turns).
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict

import numpy as np

BOOTSTRAP_SAMPLES = 2000
PERMUTATIONS = 5000
ALPHA = 0.05
POSITIVE = ("like", "click")


def outcomes(rows: dict) -> list[tuple[str, str, bool]]:
    """(arm, session, liked after it was shown) of each exposure, in the order they were shown."""
    liked_at: dict[tuple[str, str], float] = {}
    for session_id, kind, item_id, created_at in rows["events"]:
        if kind in POSITIVE:
            key = (session_id, item_id)
            liked_at[key] = max(liked_at.get(key, created_at), created_at)
    return [(arm, session_id, liked_at.get((session_id, item_id), -1.0) >= shown_at)
            for session_id, arm, _turn, item_id, _rank, shown_at in rows["exposures"]]


def session_counts(rows: dict) -> dict[str, dict[str, list[int]]]:
    """arm -> session -> [exposures, outcomes]."""
    counts: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for arm, session_id, liked in outcomes(rows):
        cell = counts[arm][session_id]
        cell[0] += 1
        cell[1] += liked
    return counts


def _rate(cells: np.ndarray) -> float:
    return float(cells[:, 1].sum() / cells[:, 0].sum()) if cells.size and cells[:, 0].sum() else float("nan")


def _interval(cells: np.ndarray, rng: np.random.Generator) -> list[float] | None:
    if not len(cells):
        return None
    picks = rng.integers(0, len(cells), size=(BOOTSTRAP_SAMPLES, len(cells)))
    draws = cells[picks]  # samples x sessions x 2
    rates = draws[:, :, 1].sum(axis=1) / np.maximum(draws[:, :, 0].sum(axis=1), 1)
    return [round(float(x), 4) for x in np.percentile(rates, [2.5, 97.5])]


def permutation_p_value(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> float:
    """Two-sided p-value of the difference in like rate between the sessions of a and of b."""
    observed = abs(_rate(a) - _rate(b))
    pooled = np.concatenate([a, b])
    hits = 0
    for _ in range(PERMUTATIONS):
        order = rng.permutation(len(pooled))
        if abs(_rate(pooled[order[:len(a)]]) - _rate(pooled[order[len(a):]])) >= observed - 1e-12:
            hits += 1
    return (hits + 1) / (PERMUTATIONS + 1)


def experiment_report(rows: dict, seed: int = 0) -> dict:
    definition = rows["definition"]
    arms = list(definition["split"])
    counts = session_counts(rows)
    cells = {arm: np.array(list(counts.get(arm, {}).values()), dtype=float).reshape(-1, 2) for arm in arms}
    trials = defaultdict(list)
    for _session, arm, seconds, fallback, failed in rows["trials"]:
        trials[arm].append((seconds, fallback, failed))
    rng = np.random.default_rng(seed)
    report = {"name": definition["name"], "primary_metric": definition["primary_metric"], "control": arms[0],
              "split": definition["split"], "arms": {}, "comparisons": [], "unit": "session",
              "bootstrap_samples": BOOTSTRAP_SAMPLES, "permutations": PERMUTATIONS, "seed": seed}
    for arm in arms:
        done = [t for t in trials[arm] if not t[2]]
        latencies = [t[0] for t in done if t[0] is not None]
        guardrails = {
            "latency_p95_seconds": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
            "fallback_rate": round(sum(t[1] for t in done) / len(done), 4) if done else None,
            "error_rate": round(sum(t[2] for t in trials[arm]) / len(trials[arm]), 4) if trials[arm] else None}
        limits = definition["guardrails"]
        rate = _rate(cells[arm])
        report["arms"][arm] = {
            "sessions": len(cells[arm]), "turns": len(trials[arm]), "exposures": int(cells[arm][:, 0].sum()),
            "likes": int(cells[arm][:, 1].sum()), "like_rate": None if np.isnan(rate) else round(rate, 4),
            "ci95": _interval(cells[arm], rng), "guardrails": guardrails,
            "guardrails_ok": all(v is None or v <= limits[k] for k, v in guardrails.items())}
    control = cells[arms[0]]
    for arm in arms[1:]:
        if not len(cells[arm]) or not len(control):
            continue
        p_value = permutation_p_value(cells[arm], control, rng)
        report["comparisons"].append({
            "arm": arm, "against": arms[0], "difference": round(_rate(cells[arm]) - _rate(control), 4),
            "p_value": round(p_value, 4), "significant": p_value < ALPHA})
    return report


def format_report(report: dict) -> str:
    lines = [f"experiment {report['name']}: {report['primary_metric']} per exposure, by arm "
             f"(95% bootstrap intervals over sessions; control: {report['control']})", "",
             f"{'arm':<14} {'sessions':>8} {'turns':>6} {'exposures':>9} {'likes':>6} {'like rate':>9} "
             f"{'95% interval':>17} {'p95 s':>7} {'fallback':>8} {'errors':>7} guardrails"]
    for arm, a in report["arms"].items():
        g = a["guardrails"]
        interval = f"[{a['ci95'][0]:.4f}, {a['ci95'][1]:.4f}]" if a["ci95"] else "-"
        lines.append(f"{arm:<14} {a['sessions']:>8} {a['turns']:>6} {a['exposures']:>9} {a['likes']:>6} "
                     f"{_num(a['like_rate']):>9} {interval:>17} {_num(g['latency_p95_seconds']):>7} "
                     f"{_num(g['fallback_rate']):>8} {_num(g['error_rate']):>7} "
                     f"{'ok' if a['guardrails_ok'] else 'BROKEN'}")
    lines.append("")
    for c in report["comparisons"]:
        verdict = "significant" if c["significant"] else "not significant"
        lines.append(f"{c['arm']} - {c['against']}: {c['difference']:+.4f} like rate, permutation p = "
                     f"{c['p_value']:.4f} ({report['permutations']} shuffles of the sessions' arms): {verdict} at 0.05")
    return "\n".join(lines)


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) and value < 10 else str(value)


def html_report(report: dict, rows: dict) -> str:
    """A page with the table, the comparison and two plots (like rate with intervals; like rate as exposures
    accumulate). Every name is escaped: nothing in it is markup."""
    text = html.escape(format_report(report))
    plot = _plots(report, rows)
    return ("<!doctype html><meta charset='utf-8'><title>" + html.escape(report["name"]) + "</title>"
            "<style>body{font-family:sans-serif;margin:2em}pre{font-size:13px}</style>"
            f"<h1>Experiment {html.escape(report['name'])}</h1><pre>{text}</pre>"
            f"<img alt='like rate by arm' src='data:image/png;base64,{plot}'>")


def _plots(report: dict, rows: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bars, curve) = plt.subplots(1, 2, figsize=(11, 4))
    arms = list(report["arms"])
    rates = [report["arms"][a]["like_rate"] or 0.0 for a in arms]
    errors = [[r - (report["arms"][a]["ci95"] or [r, r])[0] for a, r in zip(arms, rates, strict=True)],
              [(report["arms"][a]["ci95"] or [r, r])[1] - r for a, r in zip(arms, rates, strict=True)]]
    bars.bar(arms, rates, yerr=errors, capsize=6)
    bars.set_ylabel("likes per exposure (95% interval)")
    bars.set_title("like rate by arm")
    shown = outcomes(rows)
    for arm in arms:
        hits = np.cumsum([liked for a, _session, liked in shown if a == arm])
        if len(hits):
            curve.plot(np.arange(1, len(hits) + 1), hits / np.arange(1, len(hits) + 1), label=arm)
    curve.set_xlabel("exposures so far")
    curve.set_ylabel("like rate so far")
    curve.set_title("like rate as the experiment runs")
    curve.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()
