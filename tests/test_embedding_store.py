"""The embeddings file: round trip, the original's stored layout, the key rule and every bad input."""
import os

import pytest
import torch

from dataio.embedding_store import embedding_key, load_embeddings, save_embeddings
from dataio.lists import listed_files
from utils.errors import InputError


def test_round_trip_keeps_order_and_values_and_stores_the_original_layout(tmp_path):
    path = tmp_path / "emb.pt"
    embeddings = {
        "id00002/vid/00002.wav": torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64),
        "id00001/vid/00001.wav": torch.tensor([[0.25, 4.0, -1.0]], dtype=torch.float16),
        "id00003/vid/00001.wav": torch.tensor([[3.0], [0.0], [2.0]]).t(),  # (1, 3), not contiguous
    }
    save_embeddings(embeddings, path)
    stored = torch.load(path, weights_only=True)
    assert list(stored) == list(embeddings)
    for value in stored.values():
        assert value.shape == (1, 3) and value.dtype == torch.float32 and value.is_contiguous()
        assert value.untyped_storage().nbytes() == 3 * 4  # each value owns its storage
    keys, matrix = load_embeddings(path)
    assert keys == list(embeddings)
    assert matrix.dtype == torch.float32 and matrix.shape == (3, 3)
    expected = torch.tensor([[1.0, -2.0, 0.5], [0.25, 4.0, -1.0], [3.0, 0.0, 2.0]])
    assert torch.equal(matrix, expected)


def test_load_accepts_a_dict_written_by_plain_torch_save_with_1d_values(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"a/b/c.wav": torch.arange(4, dtype=torch.float64), "a/b/d.wav": torch.ones(4)}, path)
    keys, matrix = load_embeddings(path)
    assert keys == ["a/b/c.wav", "a/b/d.wav"]
    assert torch.equal(matrix, torch.tensor([[0.0, 1, 2, 3], [1, 1, 1, 1]]))


def test_embedding_key_is_the_last_three_path_parts():
    assert embedding_key("/data/voxceleb2/id00012/21Uxsk56VDQ/00001.wav") == "id00012/21Uxsk56VDQ/00001.wav"
    assert embedding_key("id00012/21Uxsk56VDQ/00001.wav") == "id00012/21Uxsk56VDQ/00001.wav"
    with pytest.raises(ValueError, match="fewer than 3 parts"):
        embedding_key("video/00001.wav")


@pytest.mark.parametrize("content, message", [
    ([torch.ones(3)], "holds a list, expected a dict"),
    ({}, "empty dict"),
    ({"s/v/1.wav": torch.ones(1, 3), "s/v/2.wav": torch.ones(2, 3)}, r"key 's/v/2.wav': shape \(2, 3\)"),
    ({"s/v/1.wav": torch.ones(3), "s/v/2.wav": torch.ones(1, 4)},
     "key 's/v/2.wav' has dimension 4, but key 's/v/1.wav' has 3"),
    ({"s/v/1.wav": torch.ones(3), "s/v/2.wav": torch.tensor([0.0, float("nan"), 1.0])}, "key 's/v/2.wav' holds NaN"),
    ({"s/v/1.wav": torch.tensor([float("inf"), 1.0])}, "key 's/v/1.wav' holds NaN or inf"),
    ({"s/v/1.wav": torch.ones(3, dtype=torch.int64)}, "key 's/v/1.wav': dtype torch.int64"),
    ({"s/v/1.wav": [1.0, 2.0]}, "key 's/v/1.wav': value is a list"),
    ({7: torch.ones(3)}, "key 7 is a int, expected a str"),
])
def test_bad_content_is_an_error_naming_the_file_and_key(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    torch.save(content, path)
    with pytest.raises(ValueError, match=message) as info:
        load_embeddings(path)
    assert str(path) in str(info.value)


def test_missing_and_unreadable_files_are_errors_naming_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.pt"):
        load_embeddings(tmp_path / "missing.pt")
    with pytest.raises(InputError, match="does not exist or is not a file"):
        load_embeddings(tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pt.*is unreadable: empty, truncated or not a PyTorch file"):
        load_embeddings(garbage)


def test_a_failed_save_leaves_no_file(tmp_path):
    path = tmp_path / "out.pt"
    with pytest.raises(ValueError, match="key 'b/c/d' holds NaN"):
        save_embeddings({"a/b/c": torch.ones(2), "b/c/d": torch.tensor([1.0, float("nan")])}, path)
    assert os.listdir(tmp_path) == []


def test_listed_files_key_each_file_once_and_refuse_two_files_with_one_key(tmp_path, caplog):
    for rel in ("a/s/1.wav", "a/s/2.wav", "x/a/s/1.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("spk a/s/1.wav\nspk a/s/2.wav\nspk a/s/1.wav\n")
    with caplog.at_level("WARNING"):
        paths, keys = listed_files(str(listing), str(tmp_path))
    assert keys == ["a/s/1.wav", "a/s/2.wav"] and paths == [str(tmp_path / "a/s/1.wav"), str(tmp_path / "a/s/2.wav")]
    assert f"{listing}:3: {tmp_path / 'a/s/1.wav'} is given again" in caplog.text
    listing.write_text("spk a/s/1.wav\nspk x/a/s/1.wav\n")
    with pytest.raises(InputError, match=rf"{listing}:2: .*a/s/1.wav and .*x/a/s/1.wav share the key 'a/s/1.wav'"):
        listed_files(str(listing), str(tmp_path))
    listing.write_text("spk a/s/1.wav\nspk a/s/3.wav\n")
    with pytest.raises(InputError, match=r"1 of 2 listed files do not exist .* line 2: .*a/s/3.wav"):
        listed_files(str(listing), str(tmp_path))
