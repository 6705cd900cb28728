"""Hateful Memes on generated files in the challenge's layout as MMF reads it
(`mmf/datasets/builders/hateful_memes/`: `{split}.jsonl` rows with "id", "img",
"label", "text"; images under `img/`)."""

import json

import numpy as np
import pytest
from PIL import Image

from mmfusion import tasks
from mmfusion.datasets.hateful_memes import hateful_memes_metrics, load_hateful_memes


def write_memes(root, splits=(("train", 24), ("dev_seen", 8), ("test_unseen", 4))):
    folder = root / "hateful_memes"
    (folder / "img").mkdir(parents=True)
    next_id = 1000
    for split, n in splits:
        rows = []
        for i in range(n):
            meme, label = next_id, i % 2
            next_id += 1
            # The red channel encodes the id, the blue channel the label; sizes vary.
            Image.new("RGB", (30 + i, 20 + 2 * i), (meme % 256, 0, 255 * label)).save(
                folder / "img" / f"{meme:05d}.png")
            row = {"id": meme, "img": f"img/{meme:05d}.png", "text": f"meme {meme} says {label}"}
            if split != "test_unseen":
                row["label"] = label
            rows.append(json.dumps(row))
        (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    return str(root)


def test_each_text_and_label_meets_its_image(tmp_path):
    root = write_memes(tmp_path)
    data = load_hateful_memes("train", root, image_size=16)
    assert data.inputs["image"].shape == (24, 16, 16, 3)
    np.testing.assert_allclose(data.inputs["image"][:, 8, 8, 0] * 255, data.ids % 256, atol=1e-3)
    np.testing.assert_array_equal(data.inputs["image"][:, 8, 8, 2], data.labels)
    assert [t.split()[1] for t in data.inputs["text"]] == [str(i) for i in data.ids]
    assert load_hateful_memes("test_unseen", root, image_size=8).labels.tolist() == [-1] * 4


def test_subset_is_seeded_and_missing_splits_are_named(tmp_path):
    root = write_memes(tmp_path)
    first = load_hateful_memes("train", root, image_size=8, max_examples=5, seed=2)
    again = load_hateful_memes("train", root, image_size=8, max_examples=5, seed=2)
    other = load_hateful_memes("train", root, image_size=8, max_examples=5, seed=3)
    assert first.ids.tolist() == again.ids.tolist() != other.ids.tolist()
    assert first.ids.tolist() == sorted(first.ids.tolist())
    with pytest.raises(ValueError, match=r"splits there: \['dev_seen', 'test_unseen', 'train'\]"):
        load_hateful_memes("dev_unseen", root)


def test_auroc_is_the_share_of_correctly_ordered_pairs():
    rng = np.random.default_rng(0)
    labels = rng.integers(2, size=60)
    scores = np.round(rng.random(60), 1)  # ties count one half
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = [(a > b) + 0.5 * (a == b) for a in pos for b in neg]
    metrics = hateful_memes_metrics(labels, np.stack([1 - scores, scores], axis=1))
    np.testing.assert_allclose(metrics["auroc"], np.mean(pairs))
    np.testing.assert_allclose(metrics["accuracy"], np.mean((scores > 0.5) == labels))


def test_task_trains_on_the_files(tmp_path):
    from mmfusion.recipes.train import train_task

    root = write_memes(tmp_path)
    metrics = train_task("hateful_memes", data_dir=root, output=str(tmp_path / "run"), epochs=1,
                         batch_size=8, verbose=0, options={"image_size": 16})
    assert 0 <= metrics["test_accuracy"] <= 1
    assert set(metrics["test_hateful_memes"]) == {"auroc", "accuracy"}
    assert tasks.get("hateful_memes").options["test_split"][0] == "dev_seen"
