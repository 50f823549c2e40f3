"""The AgBONN synthesis objective: the loss, replicate medians, failed droplets, the box, CSV files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from screening.bo.objective import Objective
from screening.errors import RecordError
from screening.objectives.synthesis.objective import (
    FRACTION_SUM_MAX,
    PAPER_EXPANDED_BOUNDS,
    SPECTRUM_COLUMNS,
    SynthesisObjective,
    condition_id,
    read_droplet_spectra_csv,
    synthesis_box,
    write_conditions_csv,
)
from screening.objectives.synthesis.spectral_loss import (
    WAVELENGTHS_NM,
    condition_loss,
    intensity_factor,
    load_target,
    minmax,
    spectrum_losses,
)

N = WAVELENGTHS_NM.size


def spike(values: dict[int, float], base: float = 0.0) -> np.ndarray:
    s = np.full(N, base)
    for i, v in values.items():
        s[i] = v
    return s


class FixedLab:
    """A lab that returns pre-set droplet blocks, one per measured condition, in order."""

    def __init__(self, blocks):
        self.blocks = list(blocks)

    def measure(self, X):
        return [self.blocks.pop(0) for _ in range(len(X))]


# --- the loss -------------------------------------------------------------------------------


def test_loss_of_a_hand_computed_case():
    target = spike({10: 1.0})
    # min-max of the spectrum: ones at 10 and 30 -> cos = 1/sqrt(2); peak 0.8 -> delta = 1
    s = spike({10: 0.8, 30: 0.8})
    assert spectrum_losses(s, target)[0] == pytest.approx(1 - 1 / np.sqrt(2), abs=1e-12)
    # the same shape at peak 0.35: delta = 0.35 / 0.7 = 0.5
    assert spectrum_losses(spike({10: 0.35, 30: 0.35}), target)[0] == pytest.approx(1 - 0.5 / np.sqrt(2), abs=1e-12)
    # a perfect shape inside [0.7, 1.2] scores 0; a saturated one (> 1.2) scores 1
    assert spectrum_losses(0.9 * target + 0.05, target)[0] == pytest.approx(0.0, abs=1e-12)
    assert spectrum_losses(1.5 * target, target)[0] == pytest.approx(1.0)


def test_intensity_factor_and_failed_spectra_are_nan_not_zero():
    np.testing.assert_allclose(intensity_factor(np.array([0.35, 0.7, 1.2, 1.21])), [0.5, 1.0, 1.0, 0.0])
    target = spike({10: 1.0})
    bad = np.vstack([np.full(N, np.nan), np.zeros(N), -np.ones(N)])
    assert np.isnan(spectrum_losses(bad, target)).all()
    assert np.isnan(minmax(np.ones(N))).all()


def test_replicate_median_ignores_failed_droplets():
    target = spike({10: 1.0})
    # droplet losses 1 - 0.5/sqrt2, 1 - 1/sqrt2, 0 (perfect), and one failed droplet
    block = np.vstack([spike({10: 0.35, 30: 0.35}), spike({10: 0.8, 30: 0.8}), 0.9 * target, np.full(N, np.nan)])
    c = condition_loss(block, target)
    assert (c.n_ok, c.n_failed) == (3, 1)
    assert c.loss == pytest.approx(1 - 1 / np.sqrt(2))
    # a zero in place of the failed droplet would have changed the median: it is excluded instead
    assert np.median([1 - 0.5 / np.sqrt(2), 1 - 1 / np.sqrt(2), 0.0, 0.0]) != pytest.approx(c.loss)


@pytest.mark.shared
def test_loss_reproduces_the_papers_droplet_losses(shared_dir):
    ref = shared_dir / "reference" / "agbonn"
    spectra = pd.read_csv(ref / "agbonn_repo" / "run1_spectra.csv", index_col=0)
    fixture = pd.read_csv(ref / "derived" / "run1_droplet_loss_fixture.csv")
    target = pd.read_csv(ref / "derived" / "target_spectrum_1nm.csv")["absorbance_target_slinear"].to_numpy()
    np.testing.assert_allclose(spectra.index.to_numpy(dtype=float), WAVELENGTHS_NM)
    losses = spectrum_losses(spectra.to_numpy().T, target)
    np.testing.assert_allclose(losses, fixture["loss"].to_numpy(), atol=2e-6)


@pytest.mark.shared
def test_shipped_parametric_target_matches_the_papers(shared_dir):
    ref = shared_dir / "reference" / "agbonn"
    reference = pd.read_csv(ref / "derived" / "target_spectrum_1nm.csv")["absorbance_target_slinear"].to_numpy()
    shipped = load_target()
    a, b = minmax(shipped), minmax(reference)
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.999
    assert abs(WAVELENGTHS_NM[shipped.argmax()] - 642) <= 3
    # the droplet losses of Run 1 barely move when the shipped target replaces the paper's
    spectra = pd.read_csv(ref / "agbonn_repo" / "run1_spectra.csv", index_col=0).to_numpy().T
    assert np.max(np.abs(spectrum_losses(spectra, shipped) - spectrum_losses(spectra, reference))) < 0.01


def test_target_from_csv(tmp_path):
    lam = np.arange(370, 811, 5.0)
    pd.DataFrame({"wavelength_nm": lam, "absorbance": np.exp(-0.5 * ((lam - 600) / 30) ** 2)}).to_csv(
        tmp_path / "t.csv", index=False
    )
    t = load_target(str(tmp_path / "t.csv"))
    assert t.shape == (N,) and WAVELENGTHS_NM[t.argmax()] == 600
    pd.DataFrame({"wavelength_nm": [400, 500], "absorbance": [1, 2]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(RecordError, match="cover 380"):
        load_target(str(tmp_path / "short.csv"))


# --- the objective --------------------------------------------------------------------------


def test_objective_satisfies_the_protocol_and_takes_medians():
    target = spike({10: 1.0})
    good = np.vstack([spike({10: 0.8, 30: 0.8}), 0.9 * target, spike({10: 0.35, 30: 0.35})])
    obj = SynthesisObjective(lab=FixedLab([good]), target=target)
    assert isinstance(obj, Objective)
    (ev,) = obj.evaluate([[10, 20, 10, 10, 500]])
    assert ev.ok and np.shape(ev.y) == (3, N)
    assert obj.loss(ev.y) == pytest.approx(1 - 1 / np.sqrt(2), abs=1e-5)
    assert obj.is_hit(np.vstack([0.9 * target] * 3))


def test_failed_droplets_are_excluded_and_recorded():
    target = spike({10: 1.0})
    block = np.vstack([0.9 * target, np.full(N, np.nan), spike({10: 0.8, 30: 0.8}), -np.ones(N)])
    all_failed = np.full((3, N), np.nan)
    obj = SynthesisObjective(lab=FixedLab([block, all_failed]), target=target)
    x1, x2 = [10, 20, 10, 10, 500], [12, 20, 10, 10, 500]
    ev1, ev2 = obj.evaluate([x1, x2])
    assert ev1.ok and np.shape(ev1.y) == (2, N)  # the two usable droplets only
    assert ev2.error is not None and "all 3 droplets failed" in ev2.error
    summary = obj.failure_summary()
    assert summary[condition_id(x1)] == {"ok": 2, "failed": 2}
    assert summary[condition_id(x2)] == {"ok": 0, "failed": 3}
    reasons = {r.reason for r in obj.droplet_log if not r.ok}
    assert reasons == {"no spectrum (NaN)", "non-positive peak"}


def test_box_lhs_respects_the_90_percent_constraint():
    for initial in ("paper", "full"):
        box = synthesis_box(initial)
        X = box.latin_hypercube(15, seed=3)
        assert X.shape == (15, 5)
        assert box.feasible(X).all()
        assert (X[:, :4].sum(axis=1) <= FRACTION_SUM_MAX + 1e-9).all()
    full = synthesis_box("full")
    # the full box allows 45 + 40 + 30 + 20 = 135 %: the constraint must be what keeps designs legal
    assert sum(hi for _, hi in PAPER_EXPANDED_BOUNDS[:4]) > FRACTION_SUM_MAX
    big = full.uniform(500, np.random.default_rng(0))
    assert (big[:, :4].sum(axis=1) <= FRACTION_SUM_MAX + 1e-9).all()
    assert np.allclose(full.hard_lower, [b[0] for b in PAPER_EXPANDED_BOUNDS])


def test_paper_box_expands_only_up_to_the_hard_limits():
    box = synthesis_box("paper")
    at_face = np.array([[20.0, 25.0, 10.0, 10.0, 600.0]])
    for _ in range(10):
        box = box.expanded_at_boundary(at_face * [box.upper[0] / 20.0, 1, 1, 1, 1])
    assert box.upper[0] == pytest.approx(45.0)
    assert all(e.dim == 0 and e.side == "upper" for e in box.expansions)


# --- CSV exchange ---------------------------------------------------------------------------


def test_conditions_and_droplet_spectra_csv_round_trip(tmp_path):
    X = synthesis_box("paper").latin_hypercube(3, seed=0)
    frame = pd.read_csv(write_conditions_csv(tmp_path / "ask.csv", X), float_precision="round_trip")
    assert list(frame.columns[:2]) == ["condition_id", "Q_AgNO3"]
    np.testing.assert_array_equal(frame[["Q_AgNO3", "Q_PVA", "Q_TSC", "Q_seed", "Q_tot"]].to_numpy(), X)
    rows = []
    for cid in frame["condition_id"]:
        for d in range(3):
            rows.append({"condition_id": cid, **{c: (0.5 if d < 2 else "") for c in SPECTRUM_COLUMNS}})
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    res = read_droplet_spectra_csv(tmp_path / "results.csv")
    assert set(res) == set(frame["condition_id"])
    block = res[frame["condition_id"][0]]
    assert block.shape == (3, N) and np.isnan(block[2]).all() and np.isfinite(block[:2]).all()


def test_malformed_results_csv_names_file_and_line(tmp_path):
    pd.DataFrame({"condition_id": ["c1"], "380": [0.1]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(RecordError, match="missing columns"):
        read_droplet_spectra_csv(tmp_path / "short.csv")
    row = {"condition_id": "c1", **{c: 0.1 for c in SPECTRUM_COLUMNS}}
    bad = dict(row, **{"500": "abc"})
    pd.DataFrame([row, bad]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(RecordError) as err:
        read_droplet_spectra_csv(tmp_path / "bad.csv")
    assert "line 3" in str(err.value) and "500 nm" in str(err.value) and "bad.csv" in str(err.value)


def test_the_best_spectrum_plot_draws_and_names_every_curve(tmp_path, monkeypatch) -> None:
    """The legend names each curve drawn, and the absolute absorbance is visible even where it lies
    on the scaled curve (it used to be named in the axis label but hidden under it)."""
    import numpy as np

    from screening.objectives.synthesis import plots

    seen = {}

    def keep(fig, path, dpi=120):
        seen["fig"] = fig

    monkeypatch.setattr(plots, "save_figure_atomic", keep)
    n = len(plots.WAVELENGTHS_NM)
    spectrum = np.linspace(0.0, 1.0, n) ** 2  # minimum 0: the two curves coincide
    plots.plot_spectrum_vs_target(spectrum, spectrum[::-1], tmp_path / "b.png", label="best")
    ax, ax2 = seen["fig"].axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["best (min-max)", "target (min-max)", "best (absorbance, right axis)"]
    (absolute,) = ax2.get_lines()
    assert absolute.get_linestyle() == ":" and absolute.get_zorder() > ax.get_lines()[0].get_zorder()
    assert "red" not in ax2.get_ylabel()
