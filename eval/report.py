"""The evaluation report: the same tables as Markdown and HTML, plus matplotlib plots, from results.json alone.

    write_report(results, out_dir) -> [paths]      report.md, report.html, recall_at_k.png, latency.png

Every cell is computed from `results`; text from the data is escaped in HTML (never rendered as markup). Accuracy
cells read "mean [low, high]" where the run recorded a 95% bootstrap interval ("ci95"); results.json files written
before intervals existed render their means alone, and without a "paired" entry the paired table is left out.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from eval.metrics import DEFAULT_METRICS
from eval.redial_bench import PUBLISHED, TOP

STAGES = ("understand", "retrieve", "rank", "explain", "total")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    examples: list[str] = field(default_factory=list)


def build_tables(results: dict) -> list[Table]:
    systems = results["systems"]
    labels = [m.label for m in DEFAULT_METRICS]
    tables = []
    for setting, note in (("seen_removed", "Items mentioned earlier in the dialogue removed from ground truth and "
                                           "predictions: the setting of He et al. 2023, whose numbers are in italics."),
                          ("raw", "Nothing removed.")):
        rows = [[name, *(_with_interval(r[setting][label]) for label in labels),
                 str(r[setting]["Recall@10"]["turns"])] for name, r in systems.items()]
        if any("ci95" in r[setting][label] for r in systems.values() for label in labels):
            note += f" In brackets: the 95% interval, {_bootstrap(results)}."
        answerable = {n: r["answerable_only"] for n, r in systems.items() if "answerable_only" in r}
        if answerable:
            note += (" LLM systems scored only the turns with an answer among their candidates (the others' numbers "
                     "are the same under any order): " + "; ".join(
                         f"{n} {a['scored_turns']} scored, {a['unscored_turns']} not" for n, a in answerable.items())
                     + ".")
        if setting == "seen_removed":
            rows += [[f"*{name}*", *(_num(p.get(label)) for label in labels), ""] for name, p in PUBLISHED.items()]
        tables.append(Table(f"Accuracy ({setting.replace('_', ' ')})", ["system", *labels, "turns scored"], rows,
                            note))
    if results.get("paired"):
        tables.append(_paired_table(results))
    tables.append(Table(
        "Grounding", ["system", "out of catalog", "out of candidates", "repeats (seen or recommended)",
                      "duplicates", "ranking fallback turns", "explanations composed from facts"],
        [[name, *(_pct(r["grounding"].get(k)) for k in ("out_of_catalog", "out_of_candidates", "repeats",
                                                        "duplicates", "fallback_turns", "explanations_composed"))]
         for name, r in systems.items()],
        f"Shares of all ranked items (top {results.get('depth', 50)}), of the LLM's picks (out of candidates), "
        "of turns (fallback) and of explanations (composed: the generated sentence was rejected by the fact check)."))
    faith_rows, examples = [], []
    for name, r in systems.items():
        for kind in ("shown", "generated"):
            e = r.get("explanations", {}).get(kind)
            if not e or not e["explanations"]:
                continue
            faith_rows.append([f"{name}: {kind}", str(e["explanations"]), _pct(e["supported_claim_rate"]),
                               _pct(e["with_unsupported"]), _pct(e["citing_a_fact"]),
                               _num(e["claims_per_explanation"], 2), _num(e["words"], 1), _num(e["distinct_2"]),
                               _pct(e["empty"])])
            examples += [f"{name} ({kind}): {x}" for x in e["unsupported_examples"][:3]]
    if faith_rows:
        tables.append(Table(
            "Explanation faithfulness", ["explanations", "count", "supported claims", "with an unsupported claim",
                                         "citing a fact", "claims each", "words", "distinct-2", "empty"],
            faith_rows, "\"shown\": what users see (generated sentences that pass the fact check, else sentences "
                        "composed from facts); \"generated\": the model's own sentences before the check. Claims: "
                        "people with their role, genres, years, decades, countries, languages, other movies; an "
                        "explanation with a word no fact licenses counts as having an unsupported claim.",
            examples))
    personal_rows = [[name, _pct(e.get("model_written_share")), _pct(e["shown"].get("personalisation_rate")),
                      _pct(e["shown"].get("personal_ceiling")), _pct(e["shown"].get("asked_fact_citation_rate")),
                      _num(e["shown"].get("facts_per_explanation"), 2)]
                     for name, r in systems.items() if (e := r.get("explanations")) and e["shown"]["explanations"]]
    if personal_rows:
        tables.append(Table(
            "Explanations users see", ["system", "model-written", "personal", "personal at most", "cite what was asked",
                                       "facts each"],
            personal_rows, "Model-written: the model's own sentence passed the fact check (else one composed from "
                           "facts is shown). Personal: of explanations in sessions with a liked movie or a request, "
                           "those citing a liked movie the pick shares facts with, a person of a liked movie, or "
                           "what was asked. Personal at most: of the same, those whose pick has any of these to "
                           "cite. Cite what was asked: of explanations in sessions that asked for people, "
                           "genres or a period, those citing one of them. Facts each: supported claims per "
                           "explanation."))
    memory = results.get("memory")
    if memory:
        tables.append(Table(
            "Memory accuracy", ["opinion", "precision", "recall", "F1", "predicted", "actual"],
            [[kind, _num(m["precision"]), _num(m["recall"]), _num(m["f1"]), str(m["predicted"]), str(m["actual"])]
             for kind, m in memory.items() if isinstance(m, dict)],
            f"The session memory at the end of each of {memory['dialogues']} dialogues against the seeker's movie "
            f"form (liked = 1, did not like = 0); micro-averaged. Messages read by: {memory.get('read_by', '?')}."))
    tables.append(Table(
        "Beyond accuracy", ["system", f"coverage@{TOP}", f"diversity@{TOP}", f"novelty@{TOP}"],
        [[name, _pct(r["beyond"][f"coverage@{TOP}"]), _num(r["beyond"][f"diversity@{TOP}"]),
          _num(r["beyond"][f"novelty@{TOP}"], 2)] for name, r in systems.items()],
        "Coverage: share of the catalog in any top-10 list. Diversity: mean pairwise cosine distance of the items' "
        "embeddings in a list. Novelty: mean -log2 of an item's share of training mentions (add-one smoothed)."))
    tables.append(Table(
        "Latency (seconds per turn)", ["system", *(f"{s} p50 / p95" for s in STAGES)],
        [[name, *(_latency(r["latency"].get(s)) for s in STAGES)] for name, r in systems.items()],
        "Understand: the seeker's last utterance; total: the stages a turn ran (for LLM systems, turns with "
        "explanations). Wall time per system: " + ", ".join(f"{n} {r['seconds']} s" for n, r in systems.items())
        + "."))
    return tables


def _paired_table(results: dict) -> Table:
    rows = [[comparison, label, _signed(d["difference"]), _interval(d["ci95"], signed=True),
             f"{d['a_better']} / {d['b_better']} / {d['turns']}", "yes" if d["significant"] else "no"]
            for comparison, metrics in results["paired"].items() for label, d in metrics.items()]
    return Table("Paired differences (bootstrap over dialogues, 95%)",
                 ["comparison (a - b)", "metric (seen removed)", "difference", "95% interval",
                  "turns a better / b better / scored", "significant"], rows,
                 f"Mean of a - b over the turns both systems score; interval: {_bootstrap(results)}, each resample "
                 "drawing the same dialogues for both systems. Significant: the interval excludes 0.")


def _bootstrap(results: dict) -> str:
    bootstrap = results.get("bootstrap") or {}
    return (f"bootstrap over dialogues ({bootstrap.get('samples', 1000)} resamples of the turn-weighted mean, "
            f"seed {bootstrap.get('seed', 0)})")


def markdown(results: dict, tables: list[Table], plots: list[str]) -> str:
    lines = ["# convrec offline evaluation", "", _summary(results), ""]
    for table in tables:
        lines += [f"## {table.title}", "", "| " + " | ".join(table.header) + " |",
                  "|" + "---|" * len(table.header)]
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines += ["", table.note, ""] if table.note else [""]
        if table.examples:
            lines += ["Examples of rejected claims:", ""] + [f"- {_md_escape(x)}" for x in table.examples] + [""]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def html_page(results: dict, tables: list[Table], plots: list[str]) -> str:
    e = html.escape
    body = [f"<h1>convrec offline evaluation</h1><p>{e(_summary(results))}</p>"]
    for table in tables:
        head = "".join(f"<th>{e(h)}</th>" for h in table.header)
        rows = "".join("<tr>" + "".join(f"<td>{e(c.strip('*'))}</td>" for c in row) + "</tr>" for row in table.rows)
        body.append(f"<h2>{e(table.title)}</h2><table><tr>{head}</tr>{rows}</table><p>{e(table.note)}</p>")
        if table.examples:
            body.append("<p>Examples of rejected claims:</p><ul>"
                        + "".join(f"<li>{e(x)}</li>" for x in table.examples) + "</ul>")
    body += [f'<figure><img src="{e(p)}" alt="{e(p)}"></figure>' for p in plots]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>convrec evaluation</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def plot_recall(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [m.n for m in DEFAULT_METRICS if m.label.startswith("Recall@")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results["systems"].items():
        ax.plot(ks, [r["seen_removed"][f"Recall@{k}"]["mean"] or 0 for k in ks], marker="o", label=name)
    for (name, published), marker in zip(PUBLISHED.items(), ("*", "D"), strict=False):
        points = [(k, published[f"Recall@{k}"]) for k in ks if f"Recall@{k}" in published]
        ax.scatter(*zip(*points, strict=True), marker=marker, s=90, color="black", label=name, zorder=3)
    ax.set(xscale="log", xticks=ks, xticklabels=[str(k) for k in ks], xlabel="k", ylabel="Recall@k (seen removed)",
           title=f"ReDial, {results['dialogues']} dialogues, {results['turns']} turns")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latency(results: dict, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = {n: r for n, r in results["systems"].items() if "rank" in r["latency"]}
    if not systems:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(systems)
    for k, (name, r) in enumerate(systems.items()):
        stages = [s for s in STAGES if s in r["latency"]]
        xs = [STAGES.index(s) + k * width for s in stages]
        ax.bar(xs, [r["latency"][s]["p95"] for s in stages], width, alpha=0.35, label=f"{name} p95")
        ax.bar(xs, [r["latency"][s]["p50"] for s in stages], width, label=f"{name} p50")
    ax.set(xticks=[i + 0.4 - width / 2 for i in range(len(STAGES))], xticklabels=STAGES, ylabel="seconds",
           title="Latency per stage (this CPU)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(results: dict, out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plots = ["recall_at_k.png"]
    plot_recall(results, out / "recall_at_k.png")
    if plot_latency(results, out / "latency.png"):
        plots.append("latency.png")
    tables = build_tables(results)
    (out / "report.md").write_text(markdown(results, tables, plots), encoding="utf-8")
    (out / "report.html").write_text(html_page(results, tables, plots), encoding="utf-8")
    return [out / name for name in ("report.md", "report.html", *plots)]


def _summary(results: dict) -> str:
    config = results.get("config", {})
    parts = [f"{results['dialogues']} dialogues, {results['turns']} evaluation turns from {results['path']} "
             f"({results['format']} format)",
             f"explanations generated for the turns of the first {results['explained_dialogues']} dialogues",
             f"run time {results.get('run_seconds', '?')} s"]
    parts += [f"{k} {v}" for k, v in config.items() if v not in (None, "")]
    return "; ".join(parts) + "."


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _with_interval(metric: dict) -> str:
    """"0.102 [0.089, 0.116]", or the mean alone where no interval was recorded."""
    return _num(metric["mean"]) + (f" {_interval(metric['ci95'])}" if metric.get("ci95") else "")


def _interval(bounds: list[float] | None, signed: bool = False) -> str:
    if not bounds:
        return "–"
    low, high = (_signed(b) if signed else _num(b) for b in bounds)
    return f"[{low}, {high}]"


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.4f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def _latency(stage: dict | None) -> str:
    return "–" if not stage else f"{stage['p50']:.3f} / {stage['p95']:.3f}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")
