"""Property tests (hypothesis) where inputs are open-ended: numeric config values and the shapes
of a user's arrays. Whatever is given, deqexp takes it or refuses it with its own one-line error
naming what is wrong (ConfigError, DataError), never another exception."""
import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from deqexp.data import DataError, arrays
from deqexp.run.schemas import ConfigError
from deqexp.run.validation import validate
from tests.compose import compose_config

NUMERIC = ["optim.lr", "optim.weight_decay", "optim.eta_min", "init.scale", "trainer.epochs",
           "trainer.batch_size", "trainer.eval_every", "trainer.jac_samples", "trainer.checkpoint_every",
           "solver.forward.tol", "solver.forward.max_iter", "solver.backward.tol", "solver.backward.max_iter",
           "kernel.lengthscale", "kernel.variance", "dataset.n_train", "dataset.n_test",
           "dataset.val_fraction", "dataset.length"]
BASE = compose_config()
INTS, FLOATS = st.integers(-10**9, 10**9), st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(NUMERIC), data=st.data())
def test_a_numeric_value_is_taken_or_refused_in_one_line_naming_its_key(key, data):
    cfg = copy.deepcopy(BASE)  # typed by the schema, as train's config is
    value = data.draw(INTS if isinstance(OmegaConf.select(cfg, key), int) else st.one_of(INTS, FLOATS))
    OmegaConf.update(cfg, key, value)
    try:
        validate(cfg)
    except ConfigError as err:
        assert "\n" not in str(err) and key.rsplit(".", 1)[-1] in str(err), (key, value, str(err))


def _shape(draw, image: bool, n: int):
    if image:
        return (n, draw(st.integers(0, 3)), draw(st.integers(0, 9)), draw(st.integers(0, 9)))
    return (n, draw(st.integers(0, 6)))


@st.composite
def user_files(draw):
    """Four arrays as a user might save them: shapes that fit, or not, in every way."""
    image = draw(st.booleans())
    n_train, n_test = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    shapes = {"train_input": _shape(draw, image, n_train), "test_input": _shape(draw, image, n_test)}
    for split in ("train", "test"):
        same = draw(st.booleans())
        shapes[f"{split}_target"] = shapes[f"{split}_input"] if same else _shape(draw, draw(st.booleans()),
                                                                               draw(st.integers(0, 4)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return {k: rng.uniform(0, 1, s) for k, s in shapes.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=user_files())
@example(data={"train_input": np.ones((2, 1)), "test_input": np.ones((0, 1)),  # found in CI: the
               "train_target": np.ones((2, 2)), "test_target": np.ones((0, 2))})  # error named no key
def test_any_array_shapes_load_consistently_or_are_refused_naming_a_key(tmp_path, data):
    path = tmp_path / "user.npz"
    np.savez(path, **data)
    try:
        loaded = arrays(0, str(path))
    except DataError as err:
        assert "\n" not in str(err) and any(k in str(err) for k in data), str(err)
        return
    assert loaded.train_input.shape[-1] == len(loaded.x_in) if loaded.train_input.dim() == 2 else True
    for split in ("train", "test"):
        x, y = getattr(loaded, f"{split}_input"), getattr(loaded, f"{split}_target")
        assert x.shape[-1 if x.dim() == 2 else 1] > 0 and len(x) == len(y)


def test_the_properties_see_refusals_and_acceptances():
    """The strategies reach both outcomes (a property that only ever refuses tests nothing)."""
    cfg = copy.deepcopy(BASE)
    OmegaConf.update(cfg, "optim.lr", float("nan"))
    with pytest.raises(ConfigError, match="optim.lr"):
        validate(cfg)
    OmegaConf.update(cfg, "optim.lr", 0.5)
    validate(cfg)
