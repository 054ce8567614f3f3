"""CounterfactualExplainer with DifCluE: fields, success flags, persistence, classifier kinds, bad input."""

import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from skcfx import CounterfactualExplainer, CounterfactualExplanation, ModalDirectionFinder
from skcfx.methods import DifCluE
from skcfx.methods.difclue import AUTO_GUIDANCE_SCALE


@pytest.fixture(scope="module")
def task(digits8):
    X, digits = digits8
    y = np.isin(digits, [1, 7]).astype(int)  # a class with two modes
    return X[:300], y[:300], X[300:340], y[300:340]


@pytest.fixture(scope="module")
def pixel_classifier(task):
    X, y, _, _ = task
    return LogisticRegression(max_iter=1000).fit(X.reshape(len(X), -1), y)


@pytest.fixture(scope="module")
def explainer(task, fitted_tiny_encoder, pixel_classifier):
    X, y, _, _ = task
    return CounterfactualExplainer(
        encoder=fitted_tiny_encoder, direction_finder=ModalDirectionFinder(n_modes=2, random_state=0),
        classifier=pixel_classifier, method=DifCluE(max_decodes=3), random_state=0,
    ).fit(X, y)


def test_explanation_fields_and_shapes(explainer, task):
    _, _, Xq, _ = task
    e = explainer.explain(Xq[:6])
    assert isinstance(e, CounterfactualExplanation)
    assert e.images.shape == (6, 8, 8, 1) and e.images.dtype == np.float32
    assert e.counterfactuals.shape == (6, 2, 8, 8, 1) and e.counterfactuals.dtype == np.float32
    assert e.counterfactuals.min() >= 0 and e.counterfactuals.max() <= 1
    assert e.success.shape == (6, 2) and e.success.dtype == bool
    assert e.original_proba.shape == (6, 2) and e.cf_proba.shape == (6, 2, 2)
    assert e.target_class.shape == (6,) and e.alphas.shape == (6, 2)
    assert np.isfinite(e.alphas).all()
    assert e.n_function_evals > 0 and e.wall_time_s > 0
    # binary: the target is the opposite of the predicted class
    np.testing.assert_array_equal(e.target_class, 1 - e.original_proba.argmax(1))
    # each query's two slots are the two modes of its target class
    finder = explainer.direction_finder_
    for i in range(6):
        assert sorted(e.mode_ids[i]) == sorted(finder.modes_for_class(explainer.classes_[e.target_class[i]]))


def test_success_agrees_with_classifier(explainer, task, pixel_classifier):
    _, _, Xq, _ = task
    e = explainer.explain(Xq[:6])
    flat = e.counterfactuals.reshape(12, -1)
    pred = pixel_classifier.predict(flat).reshape(6, 2)
    np.testing.assert_array_equal(e.success, pred == e.cf_target_class)
    np.testing.assert_allclose(e.cf_proba.reshape(12, 2), pixel_classifier.predict_proba(flat), atol=1e-6)


def test_nfe_is_bounded(explainer, task, fitted_tiny_encoder):
    _, _, Xq, _ = task
    e = explainer.explain(Xq[:4])
    enc, steps = fitted_tiny_encoder, explainer.method_.decode_steps
    # inversion shared by the query's 2 modes + at most max_decodes decodes per counterfactual,
    # plus the extension's and the fallback's for the counterfactuals the ladder did not get accepted,
    # and all of them again, guided (two calls per step), for what is still not accepted
    method = explainer.method_
    one_pass = (method.max_decodes + method.extend_decodes + method.fallback_decodes) * steps
    guided = 2 if method.resolved_retry_guidance(enc.model_) > 0 else 0
    upper = enc.encode_steps / 2 + one_pass * (1 + guided)
    assert steps <= e.n_function_evals <= upper + 1e-9


def test_fixed_alpha_uses_one_decode(task, fitted_tiny_encoder, pixel_classifier):
    X, y, Xq, _ = task
    ex = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                 method=DifCluE(alpha=0.4), random_state=0).fit(X, y)
    e = ex.explain(Xq[:4])
    np.testing.assert_allclose(e.alphas, 0.4)
    # the decode is guided (the encoder has a null latent) in the steps with 0.1 T <= t <= 0.6 T:
    # 6 of DifCluE's 10 (t = 100, ..., 600) cost a second call
    steps = ex.method_.decode_steps
    guided = sum(100 <= int(t) <= 600 for t in fitted_tiny_encoder.model_.schedule(steps).timesteps)
    assert guided == 6
    assert e.n_function_evals == pytest.approx(fitted_tiny_encoder.encode_steps / 2 + steps + guided)


def test_deterministic(explainer, task):
    _, _, Xq, _ = task
    a, b = explainer.explain(Xq[:3]), explainer.explain(Xq[:3])
    np.testing.assert_array_equal(a.counterfactuals, b.counterfactuals)


def test_batches_give_same_result(explainer, task):
    _, _, Xq, _ = task
    whole = explainer.explain(Xq[:5])
    explainer.set_params(batch_size=2)
    try:
        split = explainer.explain(Xq[:5])
    finally:
        explainer.set_params(batch_size=64)
    np.testing.assert_allclose(split.counterfactuals, whole.counterfactuals, atol=1e-5)
    np.testing.assert_array_equal(split.success, whole.success)


def test_explicit_target_and_unknown_target(explainer, task):
    _, _, Xq, _ = task
    e = explainer.explain(Xq[:3], target_class=1)
    assert (e.target_class == 1).all()
    with pytest.raises(ValueError, match="target_class"):
        explainer.explain(Xq[:3], target_class=5)
    with pytest.raises(ValueError, match="target_class"):
        explainer.explain(Xq[:3], target_class=[0, 1])


def test_bad_images(explainer):
    with pytest.raises(ValueError, match="8x8"):
        explainer.explain(np.zeros((2, 16, 16, 1)))
    with pytest.raises(ValueError, match="NaN"):
        explainer.explain(np.full((2, 8, 8, 1), np.nan))
    with pytest.raises(TypeError):
        explainer.explain("not images")


def test_fit_reuses_fitted_encoder(explainer, fitted_tiny_encoder):
    assert explainer.encoder_ is fitted_tiny_encoder


def test_save_load_and_joblib(explainer, task, tmp_path):
    _, _, Xq, _ = task
    e = explainer.explain(Xq[:3])
    e.save(tmp_path / "e.npz")
    assert CounterfactualExplanation.load(tmp_path / "e.npz") == e
    joblib.dump(explainer, tmp_path / "ex.joblib")
    again = joblib.load(tmp_path / "ex.joblib")
    np.testing.assert_array_equal(again.explain(Xq[:3]).counterfactuals, e.counterfactuals)
    assert pickle.loads(pickle.dumps(e)) == e


def test_plot_and_frame(explainer, task):
    _, _, Xq, _ = task
    e = explainer.explain(Xq[:3])
    fig = e.plot()
    assert len(fig.axes) == 3 * (1 + 2 * 2)
    frame = e.to_frame()
    assert len(frame["query"]) == 6
    with pytest.raises(ValueError, match="indices"):
        e.plot(indices=[10])


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_torch_module_and_callable_classifiers(task, fitted_tiny_encoder, pixel_classifier):
    X, y, Xq, _ = task
    torch.manual_seed(0)
    net = _TinyNet().eval()
    e = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=net, random_state=0).fit(X, y).explain(Xq[:2])
    assert e.counterfactuals.shape[:2] == (2, 2)

    def proba(images):
        return pixel_classifier.predict_proba(images.reshape(len(images), -1))

    e = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=proba, random_state=0).fit(X, y).explain(Xq[:2])
    assert e.success.shape == (2, 2)


def test_mode_labels_from_classifier(task, fitted_tiny_encoder, pixel_classifier):
    X, y, _, _ = task
    ex = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                 mode_labels="classifier", random_state=0).fit(X, y)
    Z = fitted_tiny_encoder.transform(X)
    ref = ModalDirectionFinder(random_state=0).fit(Z, pixel_classifier.predict(X.reshape(len(X), -1)))
    np.testing.assert_allclose(ex.direction_finder_.directions_, ref.directions_, atol=1e-6)


def test_multiclass_none_targets_every_other_class(digits8, fitted_tiny_encoder):
    X, digits = digits8
    mask = digits < 3
    X3, y3 = X[mask][:150], digits[mask][:150]
    clf = LogisticRegression(max_iter=1000).fit(X3.reshape(len(X3), -1), y3)
    ex = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=clf,
                                 direction_finder=ModalDirectionFinder(n_modes=1, random_state=0),
                                 method=DifCluE(alpha=0.5), random_state=0).fit(X3, y3)
    e = ex.explain(X3[:4])
    assert e.counterfactuals.shape[:2] == (4, 2)  # one mode for each of the two other classes
    pred = e.original_proba.argmax(1)
    for i in range(4):
        assert set(e.cf_target_class[i]) == set(range(3)) - {pred[i]}


def test_fit_errors(task, fitted_tiny_encoder, pixel_classifier):
    X, y, _, _ = task
    with pytest.raises(ValueError, match="classifier is required"):
        CounterfactualExplainer(encoder=fitted_tiny_encoder).fit(X, y)
    with pytest.raises(ValueError, match="one label per image"):
        CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier).fit(X, y[:-1])
    with pytest.raises(ValueError, match="method"):
        CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier, method="nope").fit(X, y)
    with pytest.raises(ValueError, match="does not know"):
        CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier).fit(X, y + 5)


def test_failed_explain_leaves_explainer_unchanged(explainer, task):
    _, _, Xq, _ = task
    before = pickle.dumps(explainer)
    with pytest.raises(ValueError):
        explainer.explain(Xq[:2], target_class="cat")
    assert pickle.dumps(explainer) == before


def test_unfitted_classifiers_are_fitted_on_a_clone(task, fitted_tiny_encoder):
    X, y, Xq, _ = task
    clf = LogisticRegression(max_iter=500)
    ex = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=clf, method=DifCluE(alpha=0.3),
                                 random_state=0).fit(X, y)
    assert not hasattr(clf, "coef_") and hasattr(ex.classifier_, "coef_")
    from skcfx.classifiers import TimmClassifier

    tc = TimmClassifier("test_resnet", max_epochs=1, batch_size=32, random_state=0)
    ex = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=tc, method=DifCluE(alpha=0.3),
                                 random_state=0).fit(X, y)
    assert ex.explain(Xq[:2]).counterfactuals.shape[:2] == (2, 2)


def test_explicit_cpu_device(task, fitted_tiny_encoder, pixel_classifier):
    X, y, Xq, _ = task
    ex = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier, device="cpu",
                                 method=DifCluE(alpha=0.3), random_state=0).fit(X, y)
    assert ex.device_.type == "cpu"
    assert ex.explain(Xq[:2]).counterfactuals.shape[:2] == (2, 2)
    with pytest.raises(ValueError, match="device"):
        CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                device="tpu").fit(X, y)


def test_overshoot_walks_further_for_one_more_decode(task, fitted_tiny_encoder, pixel_classifier):
    X, y, Xq, _ = task
    base = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                   method=DifCluE(max_decodes=2, guidance_scale=0.0),
                                   random_state=0).fit(X, y).explain(Xq[:6])
    far = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                  method=DifCluE(max_decodes=2, overshoot=1.5, guidance_scale=0.0),
                                  random_state=0).fit(X, y).explain(Xq[:6])
    steps = DifCluE().decode_steps
    assert far.n_function_evals == pytest.approx(base.n_function_evals + steps)
    # where the overshoot kept its image, the step is 1.5x (capped), else unchanged
    ratio = far.alphas / base.alphas
    assert np.all(np.isclose(ratio, 1.0) | np.isclose(ratio, 1.5) | np.isclose(far.alphas, DifCluE().alpha_max))


def test_latent_guidance_doubles_decode_cost_and_changes_the_decode(task, fitted_tiny_encoder, pixel_classifier):
    X, y, Xq, _ = task

    def explain(**params):
        return CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                       method=DifCluE(alpha=0.5, **params), random_state=0).fit(X, y).explain(Xq[:3])

    plain, guided = explain(guidance_scale=0.0), explain(guidance_scale=2.0, guidance_interval=1.0)
    default = explain()  # guidance_scale='auto' (2 here), guidance_interval=(0.1, 0.6): 6 of 10 steps
    inversion = fitted_tiny_encoder.encode_steps / 2  # shared by the query's 2 modes
    steps = DifCluE().decode_steps
    assert plain.n_function_evals == pytest.approx(inversion + steps)
    assert guided.n_function_evals == pytest.approx(inversion + 2 * steps)
    assert default.n_function_evals == pytest.approx(inversion + steps + 6)
    assert not np.allclose(plain.counterfactuals, guided.counterfactuals, atol=1e-4)
    assert not np.allclose(default.counterfactuals, guided.counterfactuals, atol=1e-4)
    assert not np.allclose(default.counterfactuals, plain.counterfactuals, atol=1e-4)


def test_latent_guidance_needs_a_null_latent(task, tiny_encoder_factory, digits8, pixel_classifier):
    X, y, _, _ = task
    encoder = tiny_encoder_factory(latent_dropout=0.0, max_steps=2).fit(digits8[0][:32])
    with pytest.raises(ValueError, match="latent_dropout"):
        CounterfactualExplainer(encoder=encoder, classifier=pixel_classifier,
                                method=DifCluE(guidance_scale=1.0)).fit(X, y)
    with pytest.raises(ValueError, match="latent_dropout"):
        CounterfactualExplainer(encoder=encoder, classifier=pixel_classifier,
                                method=DifCluE(retry_guidance=2.0)).fit(X, y)
    # the default retry ('auto') is off where there is no null latent to guide against
    method = DifCluE()
    assert method.retry_guidance == "auto"
    e = CounterfactualExplainer(encoder=encoder, classifier=pixel_classifier, method=method,
                                random_state=0).fit(X, y).explain(X[:2])
    assert e.info["retry_rate"] == 0.0
    assert method.resolved_retry_guidance(encoder.model_) == 0.0
    assert method.resolved_retry_guidance(type("WithNull", (), {"has_null_latent": True})()) == AUTO_GUIDANCE_SCALE


def test_require_mode_accepts_only_counterfactuals_that_reencode_to_their_mode(task, fitted_tiny_encoder):
    X, y, Xq, _ = task

    def always_positive(images):  # every decode flips: acceptance is left to the mode check
        return np.tile([0.0, 1.0], (len(images), 1))

    def explain(require_mode):
        ex = CounterfactualExplainer(encoder=fitted_tiny_encoder,
                                     direction_finder=ModalDirectionFinder(n_modes=2, random_state=0),
                                     classifier=always_positive, random_state=0,
                                     # the bracket search bisects to smaller steps when more are
                                     # accepted, which the last assertion reads
                                     # (no fallback: it would replace what the search refused)
                                     method=DifCluE(search="bracket", max_decodes=3, fallback=None,
                                                    require_mode=require_mode)).fit(X, y)
        return ex, ex.explain(Xq[:10], target_class=1)

    ex, e = explain(True)
    cf = e.counterfactuals.reshape((-1,) + e.counterfactuals.shape[2:])
    in_mode = ex.direction_finder_.predict(fitted_tiny_encoder.transform(cf)) == e.mode_ids.reshape(-1)
    # The method's own count of accepted steps matches an independent re-encoding (one CF of
    # slack for the float rounding of the image round trip), and some steps were refused.
    assert abs(np.mean(in_mode) - e.info["accepted_rate"]) <= 1 / len(cf) + 1e-9
    assert e.info["accepted_rate"] < 1
    # Without the check every step is accepted and the search bisects to smaller steps.
    _, loose = explain(False)
    assert loose.info["accepted_rate"] == 1.0
    assert np.all(loose.alphas <= e.alphas + 1e-12) and np.any(loose.alphas < e.alphas)


def test_source_contrast_directions_separate_the_mode_from_each_source_cluster(task, fitted_tiny_encoder,
                                                                               pixel_classifier):
    X, y, _, _ = task
    ex = CounterfactualExplainer(encoder=fitted_tiny_encoder,
                                 direction_finder=ModalDirectionFinder(n_modes=2, random_state=0),
                                 classifier=pixel_classifier, method=DifCluE(n_source_modes=3),
                                 random_state=0).fit(X, y)
    finder, method = ex.direction_finder_, ex.method_
    Z = fitted_tiny_encoder.transform(X)
    Zs = (Z - finder.mean_) / finder.scale_
    modes = finder.predict(Z)
    assert set(method.source_directions_) == set(range(len(finder.modes_)))
    for m, W in method.source_directions_.items():
        centers = method.source_centers_[m]
        assert W.shape == centers.shape == (3, Z.shape[1])
        np.testing.assert_allclose(np.linalg.norm(W, axis=1), 1.0, atol=1e-9)
        others = Zs[finder.mode_class_[modes] != finder.mode_class_[m]]
        cluster = np.argmin(((others[:, None] - centers[None]) ** 2).sum(-1), axis=1)
        for j, w in enumerate(W):
            # the mode lies further along its direction than the cluster it is contrasted with
            assert (Zs[modes == m] @ w).mean() > (others[cluster == j] @ w).mean()
    # at most one cluster per 10 latents of the other classes
    many = CounterfactualExplainer(encoder=fitted_tiny_encoder,
                                   direction_finder=ModalDirectionFinder(n_modes=2, random_state=0),
                                   classifier=pixel_classifier, method=DifCluE(n_source_modes=1000),
                                   random_state=0).fit(X, y)
    for m, W in many.method_.source_directions_.items():
        n_others = np.sum(finder.mode_class_[modes] != finder.mode_class_[m])
        assert len(W) == n_others // 10
    # 'rest' is the paper's direction: no per-cluster directions are fitted
    rest = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                   method=DifCluE(contrast="rest"), random_state=0).fit(X, y)
    assert rest.method_.source_directions_ == {}


def test_importance_curve_follows_the_fixed_step_counterfactuals(task, fitted_tiny_encoder, pixel_classifier):
    X, y, Xq, _ = task
    fixed = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                    direction_finder=ModalDirectionFinder(n_modes=2, random_state=0),
                                    method=DifCluE(alpha=0.4), random_state=0).fit(X, y)
    e = fixed.explain(Xq[:4])
    curve = fixed.importance_curve(Xq[:4], alphas=[0.0, 0.4])
    assert curve["proba"].shape == (4, 2, 2)
    np.testing.assert_array_equal(curve["mode_ids"], e.mode_ids)
    p_target = np.take_along_axis(e.cf_proba, e.cf_target_class[..., None], axis=2)[..., 0]
    np.testing.assert_allclose(curve["proba"][..., 1], p_target, atol=1e-6)
    # the fitted method is not changed by the curve
    assert fixed.method_.alpha == 0.4
    with pytest.raises(ValueError, match="alphas"):
        fixed.importance_curve(Xq[:2], alphas=[np.nan])


def test_importance_curve_needs_a_stepping_method(task, fitted_tiny_encoder, pixel_classifier):
    from skcfx.methods import DiME

    X, y, Xq, _ = task
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    ex = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=net,
                                 method=DiME(respacing=10, tau=2, perceptual=None), random_state=0).fit(X[:64], y[:64])
    with pytest.raises(ValueError, match="difclue"):
        ex.importance_curve(Xq[:2])


def test_explain_progress_counts_images(explainer, task, capsys):
    import copy

    _, _, Xq, _ = task
    verbose = copy.deepcopy(explainer).set_params(verbose=True, batch_size=4)
    verbose.explain(Xq[:6])
    err = capsys.readouterr().err
    assert "6/6" in err and "image" in err


def test_method_accepts_every_registered_name(task, fitted_tiny_encoder, pixel_classifier):
    from skcfx.methods import CounterfactualMethod, MethodOutput, list_methods, register_method
    from skcfx.methods.base import _REGISTRY

    class Identity(CounterfactualMethod):
        """Returns each query unchanged: the smallest method there is."""

        name = "identity-for-test"

        def generate(self, context, x_0, targets):
            k = targets.shape[1]
            cfs = x_0[:, None].expand(-1, k, -1, -1, -1).clone()
            return MethodOutput(cfs, targets, np.full(targets.shape, np.nan), np.full(targets.shape, -1), 0.0, {})

    X, y, Xq, _ = task
    with pytest.raises(ValueError, match=r"method must be one of \['difclue', 'dime', 'dissect', 'fastdime'"):
        CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                method="identity-for-test").fit(X, y)
    register_method(Identity)
    try:
        assert "identity-for-test" in list_methods()
        ex = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                     method="identity-for-test").fit(X, y)
        e = ex.explain(Xq[:3])
        assert e.method == "identity-for-test" and ex.direction_finder_ is None  # no modes needed
        np.testing.assert_allclose(e.counterfactuals[:, 0], e.images, atol=1e-6)
        assert not e.success.any()  # an unchanged query never reaches the other class
        with pytest.warns(UserWarning, match="replaced"):
            register_method(type("Other", (Identity,), {}))
    finally:
        _REGISTRY.pop("identity-for-test", None)
    with pytest.raises(TypeError, match="CounterfactualMethod subclass"):
        register_method(int)


def test_counterfactual_is_the_decode_of_the_reported_step(task, fitted_tiny_encoder, pixel_classifier):
    # The values, not only the shapes: each counterfactual must be exactly the decode, with the
    # query's own inverted noise, of its latent moved by the reported alpha along its mode's direction.
    X, y, Xq, _ = task
    ex = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                 method=DifCluE(max_decodes=3, contrast="rest", decode_steps=None, guidance_scale=0.0),
                                 random_state=0).fit(X, y)
    e = ex.explain(Xq[:4])
    finder, enc = ex.direction_finder_, fitted_tiny_encoder
    z = enc.transform(Xq[:4]).astype(np.float64)
    noise = enc.encode_stochastic(Xq[:4])
    d = z.shape[1]
    for j in range(e.n_counterfactuals):
        w = finder.directions_standardized_[e.mode_ids[:, j]]
        zs = (z - finder.mean_) / finder.scale_ + e.alphas[:, j, None] * np.sqrt(d) * w
        edited = (finder.mean_ + finder.scale_ * zs).astype(np.float32)
        np.testing.assert_allclose(e.counterfactuals[:, j], enc.inverse_transform(edited, noise=noise), atol=2e-5)
    assert np.all(e.alphas > 0)
    assert np.abs(e.counterfactuals - e.images[:, None]).max() > 1e-2


def test_scan_search_with_mode_bound_end_to_end(task, fitted_tiny_encoder, pixel_classifier):
    X, y, Xq, _ = task
    method = DifCluE(max_decodes=3, search="scan", mode_bound=0.05, fallback=None, extend_decodes=0, retry_guidance=0.0,
                     guidance_scale=0.0)
    ex = CounterfactualExplainer(encoder=fitted_tiny_encoder, classifier=pixel_classifier,
                                 method=method, random_state=0).fit(X, y)
    out = ex.explain(Xq[:6])
    assert out.counterfactuals.shape[:2] == (6, 2) and np.all(np.isfinite(out.counterfactuals))
    # the ladder always spends all its decodes: inversion shared by 2 modes + 3 decodes per counterfactual
    per_cf = fitted_tiny_encoder.encode_steps / 2 + 3 * method.decode_steps
    assert out.n_function_evals == pytest.approx(per_cf)
    assert np.all((out.alphas > 0) & (out.alphas <= method.alpha_max))
    assert set(ex.method_.mode_box_) == set(range(len(ex.direction_finder_.mode_class_)))
