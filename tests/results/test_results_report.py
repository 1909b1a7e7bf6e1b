"""results.report / results.plots: a report of a realistic fake suite renders; every figure is a real PNG."""

import base64
import struct
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from results import load, names, plots, quality_plots, report, schema, seeds

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Checker(HTMLParser):
    """Collects tags, checks nesting, and gathers <img> sources and table headers."""

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.headers, self.errors = [], [], [], []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "table":
            self.tables += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "th":
            self.headers.append(data)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _arrays() -> report.LoadArrays:
    rng = np.random.default_rng(0)
    return report.LoadArrays(
        expert_tokens={"moe/tiny": rng.poisson(200, size=(4, 8))},
        l3_rows_per_token={"l3/tiny": np.clip(rng.zipf(1.8, size=256), 1, 512)},
    )


def test_full_report_renders_with_every_figure(raw_runs, history, tmp_path):
    paths = report.build_report(raw_runs, history, out_dir=tmp_path, load_arrays=_arrays())
    # every figure has data in the fake suite (4 sizes: two log-log scaling plots, no per-config dot plot)
    assert len(paths.figures) == len(report._FIGURES) + 3
    assert {p.stem for p in paths.figures} >= {"quality_vs_params_active", "quality_vs_params_total"}
    for fig in paths.figures:
        width, height = _png_size(fig.read_bytes())
        assert width > 100 and height > 100, fig
    checker = _Checker()
    checker.feed(paths.html.read_text(encoding="utf-8"))
    checker.close()
    assert not checker.errors and checker.stack == []
    assert len(checker.images) == len(paths.figures)
    for src in checker.images:  # self-contained: every image embedded, and a decodable PNG
        assert src.startswith("data:image/png;base64,")
        _png_size(base64.b64decode(src.split(",", 1)[1]))
    assert checker.tables >= 8  # iso, L3 vs MoE, 2 fits, 3 ablations, inference, not-finished
    for header in ("delta_val_loss", "tokens_per_s_ratio", "total_error", "match_flag", "peak_device_GiB"):
        assert header in checker.headers
    md = paths.markdown.read_text(encoding="utf-8")
    for fig in paths.figures:
        assert f"({fig.relative_to(tmp_path).as_posix()})" in md
    assert "moe-medium-failed" in md  # the failed run is listed
    assert all(f"## Ablation: {axis}" in md for axis in ("l3_allocation", "l3_cap", "l3_tied"))


def test_flagged_comparison_is_highlighted_and_listed(raw_runs, tmp_path):
    raw = raw_runs.copy()
    raw.loc[raw["run_id"].eq("moe-small-0"), f"tags.{names.TAG_MATCH_ERROR}"] = "0.035"
    paths = report.build_report(raw, out_dir=tmp_path, figures=False)
    assert paths.figures == () and not (tmp_path / report.FIGURE_DIR).exists()
    text = paths.html.read_text(encoding="utf-8")
    assert '<tr class="flag">' in text
    md = paths.markdown.read_text(encoding="utf-8")
    assert "2 comparison(s) off by more than 2%" in md  # the iso-active row and the L3-vs-MoE pair


def test_report_without_history_arrays_or_runs_still_renders(tmp_path):
    paths = report.build_report(pd.DataFrame(), out_dir=tmp_path)
    assert paths.figures == ()
    md = paths.markdown.read_text(encoding="utf-8")
    assert "no finished train runs" in md and "not drawn: no metric history given" in md
    checker = _Checker()
    checker.feed(paths.html.read_text(encoding="utf-8"))
    assert not checker.errors


def test_ambiguous_dense_reference_becomes_a_note_not_a_crash(raw_runs, tmp_path):
    raw = raw_runs.copy()
    extra = raw[raw["run_id"].eq("dense-tiny-0")].assign(run_id="dense-tiny-wide")
    extra[f"tags.{names.TAG_VARIANT}"] = "wide"
    paths = report.build_report(pd.concat([raw, extra]), out_dir=tmp_path, figures=False)
    assert "not built: groups ['tiny/base'] have several dense configs" in paths.markdown.read_text()


def test_plots_raise_no_data_on_empty_tables_and_accept_run_tables():
    empty = load.runs_from_mlflow(pd.DataFrame())
    for make in (plots.val_loss_vs_params, plots.tokens_per_s_vs_sparsity, plots.memory_breakdown,
                 plots.offload_decode_ratio):  # fmt: skip
        with pytest.raises(plots.NoData):
            make(empty)
    with pytest.raises(plots.NoData):
        plots.load_distributions({}, {})
    with pytest.raises(plots.NoData, match="train/loss"):
        quality_plots.loss_curves(pd.DataFrame(columns=["run_id", "key", "step", "value"]), empty)
    with pytest.raises(plots.NoData):
        quality_plots.quality_dots(empty)


def test_figure_contents_follow_the_data(raw_runs, history, tmp_path):
    runs = load.runs_from_mlflow(raw_runs)
    ratio = plots.offload_decode_ratio(runs)
    lines = [ln for ln in ratio.axes[0].get_lines() if len(ln.get_xdata()) == 3]
    assert len(lines) == 4  # one per L3 infer run
    assert list(lines[0].get_ydata()) == pytest.approx([0.5, 0.7, 0.9])
    # CPU runs have no device to offload from: each line and the title say so; a GPU run's does not.
    cpu = runs["hardware"].eq("cpu").fillna(False)
    labels = [ln.get_label() for ln in lines]
    assert all(label.endswith(plots.CPU_OFFLOAD_NOTE) for label in labels) == bool(cpu.all())
    assert "no device transfer" in ratio.axes[0].get_title()
    gpu = plots.offload_decode_ratio(runs.assign(hardware="h100"))
    assert "no device transfer" not in gpu.axes[0].get_title()
    assert not any(plots.CPU_OFFLOAD_NOTE in ln.get_label() for ln in gpu.axes[0].get_lines())
    path = plots.save_png(ratio, tmp_path / "sub" / "ratio.png")
    assert path.read_bytes()[:8] == PNG_MAGIC


def _one_size(raw_runs: pd.DataFrame) -> pd.DataFrame:
    preset = raw_runs[f"tags.{names.TAG_PRESET}"]
    return raw_runs[preset.eq("tiny") | preset.isna()]


def test_one_size_suite_says_once_that_no_scaling_curve_fits(raw_runs, tmp_path):
    md = report.build_report(_one_size(raw_runs), out_dir=tmp_path, figures=False).markdown.read_text()
    assert md.count("Scaling fits") == 1 and "## Scaling fits\n\n_no curve fitted (" in md
    assert "val loss vs params_active" not in md


def test_notes_errors_flags_and_wide_tables_are_styled_apart(raw_runs, tmp_path):
    raw = raw_runs.copy()
    failed = raw["run_id"].eq("moe-medium-failed")
    raw.loc[failed, f"tags.{names.TAG_ERROR}"] = "RuntimeError: dummy job failing on request at step 3"
    text = report.build_report(raw, out_dir=tmp_path, figures=False).html.read_text()
    assert "<p class='note'>none above 2%. " in text  # "none" is not an error
    assert text.count("<table>") == text.count("<div class='scroll'><table>")  # wide tables scroll
    not_finished = text.split("<details open><summary>Runs not finished", 1)[1]
    assert "<th>error</th>" in not_finished and "failing on request at step 3" in not_finished
    raw.loc[raw["run_id"].eq("moe-small-0"), f"tags.{names.TAG_MATCH_ERROR}"] = "0.035"
    flagged = report.build_report(raw, out_dir=tmp_path / "f", figures=False).html.read_text()
    assert "<p class='error'>2 comparison(s) off by more than 2%" in flagged
    assert flagged.count("<table>") == text.count("<table>")  # flagged rows highlighted, not repeated


def test_params_axis_reads_6_52m_and_cpu_memory_has_no_peak_entry(raw_runs, tmp_path):
    runs = load.runs_from_mlflow(raw_runs)
    ax = plots.val_loss_vs_params(runs).axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")  # several sizes: a power law is a line
    plots.save_png(ax.figure, tmp_path / "v.png")  # draws: tick labels are set
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all(label[-1] in "MB" for label in labels), labels
    with pytest.raises(plots.NoData, match="one model size"):
        plots.val_loss_vs_params(load.runs_from_mlflow(_one_size(raw_runs)))
    short = [plots.params_label(v) for v in (6.52e6, 33.79e6, 1.2e9, 950e3)]
    assert short == ["6.52M", "33.8M", "1.2B", "950K"]
    on_cpu = runs.assign(**{names.MEM_PEAK_DEVICE_BYTES: np.nan})
    legend = plots.memory_breakdown(on_cpu).axes[0].get_legend()
    assert "peak device" not in [t.get_text() for t in legend.get_texts()]
    legend = plots.memory_breakdown(runs).axes[0].get_legend()
    assert "peak device" in [t.get_text() for t in legend.get_texts()]


def test_figures_follow_what_the_suite_varies(raw_runs, history, tmp_path):
    one = report.build_report(_one_size(raw_runs), history, out_dir=tmp_path / "one").figures
    several = report.build_report(raw_runs, history, out_dir=tmp_path / "several").figures
    assert "quality_per_config" in {p.stem for p in one}
    assert not any(p.stem.startswith("quality_vs_") for p in one)
    assert "quality_per_config" not in {p.stem for p in several}


# val loss per seed of a one-size suite: the dot plot's ◆ sits at the mean, its bar is the t interval
DOTS = {"dense": (4.20, 4.21, 4.24), "l3": (4.14, 4.14, 4.16), "moe": (4.40, 4.46, 4.54)}


def _one_size_runs() -> pd.DataFrame:
    rows = [{"run_id": f"{f}{s}", "status": "FINISHED", "kind": "train", "family": f, "preset": "tiny",
             "variant": "base", "group": "tiny/base", "seed": s, "hardware": "cpu", names.EVAL_VAL_LOSS: v}
            for f, vs in DOTS.items() for s, v in enumerate(vs)]  # fmt: skip
    return schema.coerce(pd.DataFrame(rows))


def test_dot_plot_marks_seeds_means_and_intervals():
    ax = quality_plots.quality_dots(_one_size_runs()).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["MoE", "dense", "L3"]  # best at the top
    means = [ln for ln in ax.get_lines() if ln.get_marker() == "D"]
    expected = [sum(DOTS[f]) / 3 for f in ("moe", "dense", "l3")]
    assert [ln.get_xdata()[0] for ln in means] == pytest.approx(expected)
    dots = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
    assert sorted(dots[2].get_xdata()) == pytest.approx(sorted(DOTS["l3"]))
    _, low, high = seeds.t_interval(DOTS["l3"])
    bars = [c for c in ax.collections if len(c.get_segments())]
    l3_bar = bars[2].get_segments()[0]
    assert (l3_bar[0][0], l3_bar[1][0]) == pytest.approx((low, high))


def test_smoothing_and_loss_curves_band_over_seeds():
    assert quality_plots.smooth([0.0, 1.0], span=3) == pytest.approx([0.0, 1 / 1.5])  # α = 0.5, adjusted
    assert quality_plots.smooth([2.0] * 5, span=4) == pytest.approx([2.0] * 5)
    runs = _one_size_runs()
    steps = range(0, 50, 5)
    flat = [(r, names.TRAIN_LOSS, step, 5.0 + i) for i, r in enumerate(runs["run_id"]) for step in steps]
    hist = pd.DataFrame(flat, columns=["run_id", "key", "step", "value"])
    fig = quality_plots.loss_curves(hist, runs)
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and [ln.get_label() for ln in ax.get_lines()] == [
        "dense (3 seeds)", "L3 (3 seeds)", "MoE (3 seeds)"]  # fmt: skip
    assert ax.get_lines()[1].get_ydata() == pytest.approx([9.0] * 10)  # l3 runs: 8, 9, 10 flat
    band = ax.collections[1].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(8.0) and band.max() == pytest.approx(10.0)


def test_report_opens_with_the_verdict_and_folds_the_wide_tables(raw_runs, tmp_path):
    paths = report.build_report(raw_runs, out_dir=tmp_path, figures=False)
    text = paths.html.read_text(encoding="utf-8")
    body = text.split("<body>", 1)[1]
    assert body.index("<h2>Verdict</h2>") < body.index("<table") < body.index("<h2>Figures</h2>")
    # the fake suite: per size L3 < MoE < dense; both seeds shift every family alike: every gap is real
    for preset in ("small", "medium", "large"):
        assert f"<p class='verdict'>{preset} cpu: L3 &lt; MoE &lt; dense</p>" in text
    tiny = "tiny cpu: L3 base &lt; L3 cap64 &lt; L3 tied &lt; L3 uniform &lt; MoE &lt; dense</p>"
    assert f"<p class='verdict'>{tiny}" in text  # ablations: one seed each, but the rest have two
    narrow = body.split("<table class='narrow'>", 1)[1].split("</table>", 1)[0]
    assert narrow.count("<th>") == 6 and "<td>small L3</td><td>2</td><td>3.034 ± 0.014</td>" in narrow
    assert text.count("<details") == len(paths.tables)  # every wide table folded, with its CSV
    for csv in paths.tables:
        assert csv.parent == tmp_path / report.TABLE_DIR and f"CSV: tables/{csv.name}" in text
    iso = pd.read_csv(tmp_path / report.TABLE_DIR / "iso_active_comparison_vs_dense_of_each_group.csv")
    assert len(iso) == 15 and {"val_loss", "delta_val_loss", "match_flag"} <= set(iso.columns)
    md = paths.markdown.read_text(encoding="utf-8")
    assert md.index("## Verdict") < md.index("**small cpu: L3 < MoE < dense**") < md.index("## Details")
    widths = [line.count(" | ") + 1 for line in md.splitlines() if line.startswith("| ")]
    assert widths and max(widths) <= report.MARKDOWN_MAX_COLUMNS
    assert "[tables/iso_active_comparison_vs_dense_of_each_group.csv]" in md


def test_mixed_tokenizers_fit_and_read_bits_per_byte(raw_runs, tmp_path):
    raw = raw_runs.copy()
    train = raw[f"tags.{names.TAG_JOB_KIND}"].eq("train")
    bpt = 4.0 + raw["run_id"].str.startswith("l3").astype(float)  # L3's tokenizer: 5 bytes per token
    raw.loc[train, f"metrics.{names.DATA_VAL_BYTES_PER_TOKEN}"] = bpt[train]
    raw.loc[train, f"metrics.{names.EVAL_VAL_BPB}"] = raw[f"metrics.{names.EVAL_VAL_LOSS}"] / (
        np.log(2) * bpt
    )
    md = report.build_report(raw, out_dir=tmp_path, figures=False).markdown.read_text()
    assert "read val_bpb (bits per byte)" in md and "## Scaling fits: val bpb vs params_active" in md
    same = raw.copy()
    same.loc[train, f"metrics.{names.DATA_VAL_BYTES_PER_TOKEN}"] = 4.0
    md = report.build_report(same, out_dir=tmp_path / "same", figures=False).markdown.read_text()
    assert "read val_bpb" not in md and "## Scaling fits: val loss vs params_active" in md


def test_eval_runs_get_a_downstream_tasks_section(raw_runs, tmp_path):
    raw = raw_runs.copy()
    evals = []
    for family, acc in (("dense", 0.25), ("l3", 0.5)):
        for seed, delta in ((0, -0.05), (1, 0.05)):
            row = raw[raw["run_id"].eq(f"{family}-tiny-{seed}")].iloc[0].copy()
            row["run_id"], row[f"tags.{names.TAG_JOB_KIND}"] = f"eval-{family}-{seed}", "eval"
            row[f"tags.{names.TAG_FINGERPRINT}"] = f"fp-eval-{family}-{seed}"
            row[f"metrics.{names.lm_eval_key('mc', 'acc')}"] = acc + delta
            row[f"metrics.{names.lm_eval_key('mc', 'acc_stderr')}"] = 0.1
            row[f"metrics.{names.lm_eval_key('mc', 'acc_norm')}"] = acc
            row[f"metrics.{names.lm_eval_key('mc', 'acc_norm_stderr')}"] = 0.1
            evals.append(row)
    raw = pd.concat([raw, pd.DataFrame(evals)], ignore_index=True)
    md = report.build_report(raw, out_dir=tmp_path, figures=False).markdown.read_text()
    section = md.split("Downstream tasks (lm-evaluation-harness)", 1)[1]
    assert "mc/acc" in section and "mc/acc_stderr" in section
    runs = load.runs_from_mlflow(raw)
    table = report.analysis.downstream_table(runs).set_index("family")
    assert table.loc["l3", "mc/acc"] == pytest.approx(0.5) and table.loc["dense", "mc/acc"] == pytest.approx(
        0.25
    )
    assert table.loc["l3", "n_seeds"] == 2
    want = ["mc/acc", "mc/acc_stderr", "mc/acc_norm", "mc/acc_norm_stderr"]
    assert list(table.columns[-4:]) == want  # each value next to its error
    assert "Downstream tasks" not in report.build_report(raw_runs, out_dir=tmp_path / "none", figures=False
                                                         ).markdown.read_text()  # fmt: skip


def test_floor_fractions_sit_beside_the_speeds_they_qualify(raw_runs, tmp_path):
    raw = raw_runs.copy()
    train = raw[f"tags.{names.TAG_JOB_KIND}"].eq("train").to_numpy(dtype=bool)
    seed = pd.to_numeric(raw[f"tags.{names.TAG_SEED}"], errors="coerce").fillna(0).to_numpy()
    raw[f"metrics.{names.TRAIN_FLOOR_FRAC}"] = np.where(train, 0.2 + 0.1 * seed, np.nan)  # seeds 0.2, 0.3
    for bs in (1, 8):
        raw[f"metrics.{names.batch_size_key(names.INFER_DECODE_FLOOR_FRAC, bs)}"] = np.where(
            ~train, bs / 100, np.nan
        )
        raw[f"metrics.{names.batch_size_key(names.INFER_PREFILL_FLOOR_FRAC, bs)}"] = np.where(
            ~train, bs / 10, np.nan
        )
    paths = report.build_report(raw, out_dir=tmp_path, figures=False)
    iso = pd.read_csv(tmp_path / report.TABLE_DIR / "iso_active_comparison_vs_dense_of_each_group.csv")
    cols = list(iso.columns)
    assert cols.index("floor_frac") == cols.index("tokens_per_s_ratio") + 1
    moe = iso.set_index(["preset", "family"]).loc[
        ("small", "moe"), "floor_frac"
    ]  # "~": timed under contention
    assert float(str(moe).removeprefix("~")) == pytest.approx(0.25)  # the mean of seeds 0.2 and 0.3
    infer = pd.read_csv(tmp_path / report.TABLE_DIR / "inference_per_batch_size.csv")
    cols = list(infer.columns)
    assert cols.index("decode_floor_frac") + 1 == cols.index("decode_tokens_per_s")
    assert cols.index("prefill_floor_frac") + 1 == cols.index("prefill_tokens_per_s")
    by_bs = infer.groupby("batch_size")[["decode_floor_frac", "prefill_floor_frac"]].first()
    assert [float(str(v).removeprefix("~")) for v in by_bs.loc[8]] == [
        pytest.approx(0.08),
        pytest.approx(0.8),
    ]
    narrow = paths.html.read_text(encoding="utf-8").split("<table class='narrow'>", 1)[1].split("</table>")[0]
    assert narrow.count("<th>") == 6 and "floor" not in narrow  # the opening table stays narrow
