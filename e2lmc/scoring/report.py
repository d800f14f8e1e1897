"""The detailed results page (`detailed_results.html`): one self-contained HTML file.

Figures are inline PNGs, there is no script and no external resource, so it opens
offline and inside Codabench's iframe. Text that comes from the submission (task
name, leakage excerpts) is escaped. Values of hidden checkpoints appear only when
the reference data sets `show_hidden_values`.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt

from ..formats.series import tokens_text
from .advice import advise, metrics_sq, visible_points
from .evaluation import Evaluation
from .formulas import NOISE_SIGMAS
from .html import csv_text, html_table, page, png_image
from .uncertainty import PreviousRun, build_spread

CSV_FILE = "released_values.csv"
SQ_ONLY_NOTE = ("These checkpoints are the released ones only: ranking consistency, scientific compliance and the "
                "global score need the hidden checkpoints, which only the competition's scoring sees.")
SIZE_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]


def token_unit(largest: float) -> tuple[float, str]:
    """A scale that makes the x axis readable: billions on the real series, thousands or
    millions on the embedded set (whose models see about a quarter of a million tokens)."""
    for scale, name in ((1e9, "billions"), (1e6, "millions"), (1e3, "thousands")):
        if largest >= scale:
            return scale, name
    return 1.0, ""


def curves_figure(ev: Evaluation) -> str:
    """Metric vs training tokens for every model (released window unless allowed), with
    the task's chance level; the legend outside the axes."""
    sizes = list(dict.fromkeys(m.size for m in ev.reference.models))
    sign = 1 if ev.results.higher_is_better else -1
    shown = {m.id: visible_points(ev, m.id) for m in ev.reference.models}
    largest = max((p.checkpoint.tokens for points in shown.values() for p in points), default=0.0)
    scale, unit = token_unit(largest)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for model in ev.reference.models:
        if not shown[model.id]:
            continue
        ax.plot(
            [p.checkpoint.tokens / scale for p in shown[model.id]],
            [sign * p.value for p in shown[model.id]],
            marker="o" if model.mixture == "science" else "x",
            markersize=3,
            linestyle="-" if model.architecture == "arch1" else "--",
            color=SIZE_COLORS[sizes.index(model.size) % len(SIZE_COLORS)],
            label=f"{model.id} ({model.size}, {model.architecture}, {model.mixture})",
        )
    chance = ev.results.chance_level
    if chance is not None:
        ax.axhline(chance, color="0.35", linestyle=":", linewidth=1.2, label=f"chance level ({chance:.3g})")
    if ev.reference.show_hidden_values:
        released = [c.tokens / scale for m in ev.reference.models for c in m.checkpoints if c.role == "released"]
        if released:
            ax.axvspan(0, max(released), color="0.92", zorder=0, label="released window")
    ax.set_xlabel(f"training tokens ({unit})" if unit else "training tokens")
    ax.set_ylabel(ev.results.task_metric)
    ax.set_title(f"{ev.results.task_name}: score vs training tokens".replace("$", r"\$"))  # no mathtext
    ax.grid(alpha=0.3)
    n_models = sum(1 for points in shown.values() if points)
    if n_models:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), handlelength=3.5, frameon=False)
    window = "every checkpoint" if ev.reference.show_hidden_values else "the released checkpoints"
    alt = (f"Line chart of {ev.results.task_metric} against training tokens for {n_models} models over {window}"
           + (f"; a dotted line marks the chance level {chance:.3g}" if chance is not None else "")
           + ". Solid lines are arch1 models, dashed arch2; circles science mixture, crosses web-only.")
    return png_image(fig, alt)


def released_values_csv(ev: Evaluation) -> str:
    """The values the report plots, one row per checkpoint (the metric as the task reports it)."""
    sign = 1 if ev.results.higher_is_better else -1
    rows = [["model", "checkpoint", "iteration", "tokens", "role", ev.results.task_metric]]
    for model in ev.reference.models:
        rows += [[model.id, p.checkpoint.name, p.checkpoint.iteration, f"{p.checkpoint.tokens:.0f}", p.checkpoint.role,
                  repr(sign * p.value)] for p in visible_points(ev, model.id)]
    return csv_text(rows)


def _reasons(reasons: tuple[str, ...]) -> str:
    return escape("; ".join(reasons)) if reasons else ""


def render(ev: Evaluation, previous: PreviousRun | None = None) -> str:
    """The report as an HTML string; `previous`: the earlier run of the same submission, compared in the advice."""
    lb, ref, res = ev.leaderboard, ev.reference, ev.results
    w = ref.weights
    spread = build_spread(ref)
    parts = [
        f"<h1>E2LM evaluation report — {escape(res.task_name)}</h1>",
        f'<p class="note">Phase <b>{escape(ref.phase)}</b> · metric <code>{escape(res.task_metric)}</code> '
        f"({'higher' if res.higher_is_better else 'lower'} is better) · {res.n_samples} samples</p>",
    ]
    if ev.n_missing:
        parts.append(
            f'<p class="bad">Partial results: {ev.n_missing} of {ref.n_checkpoints} checkpoints have no value and are '
            "left out of every score.</p>"
        )
    if ref.sq_only:
        parts += ["<h2>Signal quality only</h2>", f'<p class="big">SQ {lb.signal_quality:.4f}</p>',
                  f"<p>{escape(SQ_ONLY_NOTE)}</p>"]
    else:
        parts += [
            "<h2>Global score</h2>",
            f'<p class="big">{lb.score:.4f}'
            + (f' <span class="note">± {spread.score:.3f} across builds of this set</span>' if spread else "") + "</p>",
            f"<p>score = {w['signal_quality']:g} × SQ {lb.signal_quality:.4f} + {w['ranking_consistency']:g} × RC "
            f"{lb.ranking_consistency:.4f} + {w['scientific_compliance']:g} × CS {lb.scientific_compliance:.4f}"
            + ("" if ev.verdict.valid else ' — <span class="bad">set to 0: the submission is invalid</span>')
            + "</p>",
        ]
        if spread:
            parts.append(f'<p class="note">On another build of this embedded set (another seed) the scores would '
                         f"move: one standard deviation across builds is {spread.score:.3f} for the score, "
                         f"{spread.signal_quality:.3f} for SQ, {spread.ranking_consistency:.3f} for RC and "
                         f"{spread.scientific_compliance:.3f} for CS (measured over {spread.builds} builds and "
                         "five science tasks: zoo.md, the noise floor). A difference between two of your runs "
                         "smaller than that is not an improvement you can count on.</p>")

    parts += ["<h2>What to improve</h2>", "<ul>"]
    parts += [f"<li>{escape(d.sentence)}</li>" for d in advise(ev, previous)]
    parts.append("</ul>")

    # Validation
    v = res.validation
    status = '<span class="ok">valid</span>' if ev.verdict.valid else '<span class="bad">invalid</span>'
    parts += [
        "<h2>Validation</h2>",
        f"<p>{status}</p>",
        html_table(
            ["check", "value", "rule"],
            [
                ["samples", str(res.n_samples), f"{ref.validation.min_samples} – {ref.validation.max_samples}"],
                [
                    "longest prompt (tokens)",
                    "not measured" if v.max_prompt_tokens is None else f"{v.rule_prompt_tokens}"
                    + ("" if v.longest_prompt_sample is None else f" ({escape(v.longest_prompt_where())})")
                    + v.how_counted(),
                    f"≤ {ref.validation.max_prompt_tokens} tokens of the real models' tokenizer",
                ],
                [
                    "requests beyond the checkpoints' context",
                    "not measured" if v.context_tokens is None else f"{v.truncated_requests}"
                    + (f" (cut by up to {v.max_truncated_tokens} tokens)" if v.truncated_requests else ""),
                    "none: what does not fit is cut from the left" if v.context_tokens is None
                    else f"context {v.context_tokens} tokens",
                ],
                [
                    "gold answer leaked into its prompt",
                    f"{v.leakage_count} samples ({ev.verdict.leakage_fraction:.1%})",
                    f"≤ {ref.validation.max_leakage_fraction:.1%}",
                ],
                [
                    "the metric computed by",
                    "the submission's own code" if res.custom_code else "lm-eval's own metrics (trusted)",
                    {"allow": "either", "flag": "either; the submission's own code is flagged for review",
                     "refuse": "lm-eval's own metrics only"}[ref.custom_metric_code],
                ],
            ],
        ),
    ]
    if res.custom_code:
        parts += ["<p>The submission's own functions between the models' responses and the metric (for the "
                  "organizers' review: such code sees every response and could recognise public checkpoints):</p>",
                  "<ul>", *(f"<li><code>{escape(name)}</code></li>" for name in res.custom_code), "</ul>"]
    parts += [f'<p class="bad">{escape(p)}.</p>' for p in ev.verdict.problems]
    if v.leakage_examples:
        parts += [
            "<p>Samples whose gold answer appears in the prompt:</p>",
            html_table(
                ["sample", "answer", "prompt excerpt"],
                [[str(e.sample), escape(e.answer), escape(e.excerpt)] for e in v.leakage_examples],
                left=3,
            ),
        ]

    parts += alignment_section(ev)

    # Signal quality
    sel = ref.scores.signal_quality
    selection_text = f"roles {', '.join(sel.roles)}"
    if sel.every_iterations:
        selection_text += f", iterations that are multiples of {sel.every_iterations}"
    if sel.max_tokens is not None:
        selection_text += f", at most {tokens_text(sel.max_tokens)} tokens"
    parts += [
        "<h2>Signal quality (SQ)</h2>",
        curves_figure(ev),
        f'<p class="note"><a download="{CSV_FILE}" href="data:text/csv;base64,'
        f'{base64.b64encode(released_values_csv(ev).encode()).decode()}">Download the plotted values</a> '
        f"({CSV_FILE}: model, checkpoint, iteration, tokens, role, value).</p>",
        f'<p class="note">Checkpoints used: {escape(selection_text)}. SQ = (monotonicity + autocorrelation) / 2, '
        "monotonicity from ordinal ranks, autocorrelation = mean |Pearson| over lags 1 … n//4−1.</p>",
        html_table(
            ["model", "points", "monotonicity", "autocorrelation", "SQ", "notes"],
            [
                [escape(m), str(s.n_points), f"{s.monotonicity:.4f}", f"{s.autocorrelation:.4f}",
                 f"{s.score:.4f}", _reasons(s.reasons)]
                for m, s in ev.signal_quality.items()
            ]
            + [["<b>mean</b>", "", f"{lb.monotonicity:.4f}", f"{lb.autocorrelation:.4f}",
                f"<b>{lb.signal_quality:.4f}</b>", ""]],
        ),
    ]
    compared = metrics_sq(ev)
    if len(compared) > 1:
        parts += ["<p>Every metric the task computes, on the same released checkpoints (only the submitted "
                  "<code>task_metric</code> is scored; metadata.yaml chooses it):</p>",
                  html_table(["metric", "SQ"], [[f"<code>{escape(m)}</code>" + (" (submitted)" if m ==
                                                  res.task_metric else ""), f"{sq:.4f}"] for m, sq in
                                                compared.items()])]

    if not ref.sq_only:
        parts += _hidden_sections(ev)
    return page(f"E2LM report — {res.task_name}", "\n".join(parts))


def alignment_section(ev: Evaluation) -> list[str]:
    """The judge's verdict on the task's drawn samples; "not checked" with the reason when
    it was not asked — never a silent pass. Rejected samples are the participant's own data."""
    result, settings = ev.alignment, ev.reference.alignment
    parts = ["<h2>Scientific alignment</h2>"]
    if result is None or result.rate is None:
        reason = result.problem if result is not None and result.problem else "alignment not checked"
        return parts + [f'<p class="note">{escape(reason)}.</p>']
    threshold = "" if settings.threshold is None else f" (at least {settings.threshold:.0%} required)"
    parts.append(f"<p>The judge (<code>{escape(settings.model)}</code>, {settings.votes} vote"
                 f"{'s' if settings.votes > 1 else ''} per sample, accepted when every vote accepts) accepted "
                 f"<b>{result.accepted} of {result.judged}</b> drawn samples as scientific: "
                 f"<b>{result.rate:.0%}</b>{threshold}.</p>")
    if result.malformed:
        parts.append(f'<p class="note">{result.malformed} samples got no usable answer and are left out.</p>')
    if result.rejected:
        parts += ["<p>Rejected samples:</p>", html_table(
            ["task", "sample", "as the judge read it"],
            [[escape(r.task), str(r.doc_id), escape(r.text[-600:]).replace("\n", "<br>")] for r in result.rejected],
            left=3)]
    return parts


def _hidden_sections(ev: Evaluation) -> list[str]:
    """RC and CS: aggregates of hidden checkpoints, never their values."""
    ref = ev.reference
    parts = []
    rc = ev.ranking_consistency
    parts += [
        "<h2>Ranking consistency (RC)</h2>",
        f"<p>RC = <b>{rc.score:.4f}</b>: mean Kendall τ<sub>b</sub> between the ranking of {rc.n_models} models "
        f"at each of {rc.n_steps} later checkpoints and their ranking at the final checkpoint (clipped at 0).</p>",
    ]
    if rc.reasons:
        parts.append(f'<p class="note">{_reasons(rc.reasons)}</p>')

    # Scientific compliance
    cs, cs_sel = ev.scientific_compliance, ref.scores.scientific_compliance
    n_shared = cs.wins + cs.ties + cs.losses + cs.at_chance
    parts += [
        "<h2>Scientific compliance (CS)</h2>",
        f"<p>The science-mixture model <code>{escape(cs_sel.science_model)}</code> against the web-only model "
        f"<code>{escape(cs_sel.web_model)}</code> at N = {n_shared} shared checkpoints, leaving out those where "
        f"both are within {NOISE_SIGMAS:g} standard deviations of a guessing model's accuracy from the chance level "
        "and from each other (both guessing):</p>",
        html_table(
            ["science model higher (W)", "tie (T)", "web-only model higher (L)", "both at chance (left out)",
             "CS = max(0, (W − L) / max(W + T + L, N/4))"],
            [[str(cs.wins), str(cs.ties), str(cs.losses), str(cs.at_chance), f"<b>{cs.score:.4f}</b>"]],
            left=0,
        ),
    ]
    if cs.reasons:
        parts.append(f'<p class="note">{_reasons(cs.reasons)}</p>')
    if not ref.show_hidden_values:
        parts.append(
            '<p class="note">Values of hidden checkpoints are not shown; RC and CS are reported as aggregates only.</p>'
        )
    return parts


def write_report(ev: Evaluation, path: Path, previous: PreviousRun | None = None) -> Path:
    """The report, and beside it the CSV of the values it plots."""
    path.write_text(render(ev, previous), encoding="utf-8")
    (path.parent / CSV_FILE).write_text(released_values_csv(ev), encoding="utf-8")
    return path
