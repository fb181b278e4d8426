"""The one prediction path: named views of uint8 images (agestudy.predict)."""

import pytest
import torch

from agestudy.data import AugmentConfig
from agestudy.data.augment import augment_batch, to_model_input
from agestudy.models import create_model
from agestudy.predict import crop_positions, model_inputs, predict_logits, predict_proba, probabilities, view_size


@pytest.fixture(scope="module")
def model_and_images():
    torch.manual_seed(0)
    model = create_model("efficient", width=8, stem_stride=4).eval()
    images = torch.randint(0, 256, (10, 3, 100, 100), dtype=torch.uint8)
    return model, images


def _p1(model, x):
    with torch.no_grad():
        return torch.softmax(model(x).double(), dim=1)[:, 1]


def test_centre_is_the_middle_crop(model_and_images):
    model, images = model_and_images
    aug = AugmentConfig(crop=88)
    expected = _p1(model, to_model_input(images[..., 6:94, 6:94]))
    assert torch.allclose(predict_proba(model, images, "centre", aug), expected, atol=1e-6)


def test_fixed_views_average_their_crops(model_and_images):
    model, images = model_and_images
    aug = AugmentConfig(crop=80)
    corners = [(0, 0), (0, 20), (20, 0), (20, 20), (10, 10)]
    five = [_p1(model, to_model_input(images[..., t : t + 80, left : left + 80])) for t, left in corners]
    mirrored = [_p1(model, to_model_input(images[..., t : t + 80, left : left + 80].flip(-1))) for t, left in corners]
    assert torch.allclose(predict_proba(model, images, "five", aug), torch.stack(five).mean(0), atol=1e-6)
    assert torch.allclose(predict_proba(model, images, "ten", aug), torch.stack(five + mirrored).mean(0), atol=1e-6)
    both = torch.stack([five[4], mirrored[4]]).mean(0)
    assert torch.allclose(predict_proba(model, images, "centre+mirror", aug), both, atol=1e-6)
    assert [p[:2] for p in crop_positions("five", 100, 80)] == corners


def test_random_crops_are_training_views_seeded_and_batch_independent(model_and_images):
    model, images = model_and_images
    aug = AugmentConfig(crop=88, padding=4, jitter=0.3)  # colour jitter is never part of a view
    logits = predict_logits(model, images, "crops(3)", aug, batch_size=4, seed=5)
    assert logits.shape == (3, 10, 2)
    assert torch.equal(logits, predict_logits(model, images, "crops(3)", aug, batch_size=4, seed=5))
    assert not torch.equal(logits, predict_logits(model, images, "crops(3)", aug, batch_size=4, seed=6))
    # the crops are training's own geometry (augment_batch without jitter), drawn input by input, batch by batch
    g = torch.Generator().manual_seed(5)
    geometric = AugmentConfig(crop=88, padding=4, jitter=0.0)
    first = torch.cat([augment_batch(images[s : s + 4], geometric, g) for s in range(0, 10, 4)])
    assert torch.allclose(probabilities(logits)[0], _p1(model, first), atol=1e-6)
    # the three inputs differ from one another
    assert not torch.allclose(logits[0], logits[1])


def test_model_inputs_and_view_names():
    images = torch.randint(0, 256, (2, 3, 100, 100), dtype=torch.uint8)
    aug = AugmentConfig(crop=88)
    (centre,) = model_inputs(images, "centre", aug)
    plain, mirror = model_inputs(images, "centre+mirror", aug)
    assert torch.equal(centre, plain) and torch.equal(mirror, plain.flip(-1))
    assert [view_size(v) for v in ("centre", "centre+mirror", "five", "ten", "crops(7)")] == [1, 2, 5, 10, 7]
    for bad in ("middle", "crops(0)", "crops(x)"):
        with pytest.raises(ValueError, match="unknown view"):
            view_size(bad)


def test_prediction_restores_the_training_mode(model_and_images):
    model, images = model_and_images
    model.train()
    predict_proba(model, images[:2], "centre", AugmentConfig())
    assert model.training
    model.eval()
