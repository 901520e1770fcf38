import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, ModelCard, RepoUrl

from hf_ext.hub import HubMixin, card_template_names, make_card, push_folder, save_card
from hf_ext.serialization import load_json, load_tensors, save_json, save_tensors


def test_model_card_metadata_and_text():
    config = {"beta": 0.01, "cost": "hinge", "layers": (1, 2)}
    card = make_card(
        method="aot",
        base_model="org/base",
        datasets=["org/prefs"],
        license="apache-2.0",
        tags=["alignment"],
        method_config=config,
        title="My AOT model",
        summary="Aligned with AOT.",
    )
    assert isinstance(card, ModelCard)
    data = card.data.to_dict()
    assert data["library_name"] == "hf-ext"
    assert data["tags"] == ["hf-ext", "aot", "alignment"]
    assert data["base_model"] == "org/base" and data["datasets"] == ["org/prefs"] and data["license"] == "apache-2.0"
    assert data["hf_ext"]["method"] == "aot" and data["hf_ext"]["config"] == {
        "beta": 0.01,
        "cost": "hinge",
        "layers": [1, 2],
    }
    assert card.text.lstrip().startswith("# My AOT model")
    assert "Aligned with AOT." in card.text and '"cost": "hinge"' in card.text


def test_dataset_card():
    card = make_card(method="seal", repo_type="dataset", datasets="org/raw", title="Filtered")
    assert isinstance(card, DatasetCard)
    assert card.data.to_dict()["source_datasets"] == ["org/raw"]


def test_unknown_template_repo_type_and_method():
    assert "default" in card_template_names()
    with pytest.raises(ValueError, match="No card template named 'nope'"):
        make_card("nope")
    with pytest.raises(ValueError, match="repo_type='space'"):
        make_card(repo_type="space")
    with pytest.raises(
        ValueError,
        match=r"method='bogus' is not an hf-ext method; expected one of \['aot', 'larimar', 'sasa', 'mergealign', "
        r"'seal', 'risk'\] or None",
    ):
        make_card(method="bogus")
    with pytest.raises(TypeError, match="tags must be a list of tags, got one string"):
        make_card(method="sasa", tags="probe")


def test_card_round_trips_through_a_folder(tmp_path):
    card = make_card(method="sasa", base_model="org/base", title="Probe")
    save_card(card, tmp_path)
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.to_dict() == card.data.to_dict()


def test_serialization_round_trips_and_leaves_no_temporaries(tmp_path):
    tensors = {"w": torch.arange(6.0).reshape(2, 3).t(), "b": torch.tensor([1, 2], dtype=torch.int64)}
    save_tensors(tmp_path / "t.safetensors", tensors, metadata={"k": "v"})
    loaded = load_tensors(tmp_path / "t.safetensors")
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    save_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]})
    assert load_json(tmp_path / "c.json") == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "t.safetensors"]


def test_failed_write_keeps_the_previous_file(tmp_path):
    save_json(tmp_path / "c.json", {"good": True})
    with pytest.raises(TypeError):
        save_json(tmp_path / "c.json", {"bad": object()})
    assert load_json(tmp_path / "c.json") == {"good": True}
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


class Vector(HubMixin):
    hub_files = ["*.safetensors", "*.json", "README.md"]

    def __init__(self, values, name):
        self.values, self.name = values, name

    def _save_files(self, folder: Path):
        save_tensors(folder / "vector.safetensors", {"values": self.values})
        save_json(folder / "vector_config.json", {"name": self.name})

    @classmethod
    def _load_files(cls, folder: Path, **kwargs):
        return cls(
            load_tensors(folder / "vector.safetensors")["values"], load_json(folder / "vector_config.json")["name"]
        )

    def model_card(self):
        return make_card(method="sasa", method_config={"name": self.name}, title=f"Vector {self.name}")


def test_hub_mixin_round_trip(tmp_path):
    vector = Vector(torch.randn(5), "v1")
    vector.save_pretrained(tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "README.md",
        "vector.safetensors",
        "vector_config.json",
    ]
    loaded = Vector.from_pretrained(tmp_path / "out")
    assert loaded.name == "v1" and torch.equal(loaded.values, vector.values)


@pytest.fixture
def fake_hub(monkeypatch):
    """Intercept the two Hub calls: `create_repo` and `create_commit` (where the files go)."""
    calls = {"repos": [], "commits": []}

    def create_repo(self, repo_id, **kwargs):
        calls["repos"].append((repo_id, kwargs))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        operations = list(operations)
        files = {}
        for op in operations:
            assert isinstance(op, CommitOperationAdd)
            content = op.path_or_fileobj
            files[op.path_in_repo] = Path(content).read_bytes() if isinstance(content, (str, Path)) else content
        calls["commits"].append({"repo_id": repo_id, "files": files, **kwargs})
        return "commit-info"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    return calls


def test_push_to_hub_sends_the_artefact_and_its_card(fake_hub):
    vector = Vector(torch.randn(3), "pushed")
    assert vector.push_to_hub("me/vector", private=True, commit_message="first") == "commit-info"
    assert fake_hub["repos"][0][0] == "me/vector" and fake_hub["repos"][0][1]["private"] is True
    (commit,) = fake_hub["commits"]
    assert commit["repo_id"] == "me/vector" and commit["commit_message"] == "first"
    assert sorted(commit["files"]) == ["README.md", "vector.safetensors", "vector_config.json"]
    assert json.loads(commit["files"]["vector_config.json"]) == {"name": "pushed"}
    assert "# Vector pushed" in commit["files"]["README.md"].decode()
    assert "library_name: hf-ext" in commit["files"]["README.md"].decode()


def test_push_folder_uploads_every_file(tmp_path, fake_hub):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub" / "b.json").write_text("{}")
    push_folder(tmp_path, "me/folder", repo_type="dataset")
    assert fake_hub["repos"][0][1]["repo_type"] == "dataset"
    assert sorted(fake_hub["commits"][0]["files"]) == ["a.txt", "sub/b.json"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE=1, as huggingface_hub reads it at import, with an empty Hub cache; run from an empty folder."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path


def _offline_entry_points():
    from hf_ext.quantization import load_quantized
    from hf_ext.scripts.utils import load_any_dataset, load_causal_lm
    from hf_ext.seal.filtering import SEALScores

    return {
        "SEALScores.from_pretrained": (
            lambda: SEALScores.from_pretrained("someone/missing"),
            "name_or_path",
            "dataset",
        ),
        "load_causal_lm": (lambda: load_causal_lm("someone/missing"), "model_name_or_path", "model"),
        "load_any_dataset": (lambda: load_any_dataset("someone/missing"), "dataset_name", "dataset"),
        "load_quantized": (lambda: load_quantized("someone/missing", bits=4), "model_name_or_path", "model"),
    }


@pytest.mark.parametrize(
    "entry_point", ["SEALScores.from_pretrained", "load_causal_lm", "load_any_dataset", "load_quantized"]
)
def test_a_missing_repo_offline_names_the_id_both_places_looked_and_what_to_do(entry_point, offline):
    """Issue 29: offline, a missing id was "We couldn't connect to 'https://huggingface.co'", naming no id and no
    folder; the error names the id, the local path tried (from the working directory) and the Hub cache folder."""
    import re

    from hf_ext.scripts.utils import CommandError

    call, what, repo_type = _offline_entry_points()[entry_point]
    with pytest.raises((OSError, CommandError)) as error:  # a command's loader says it in one line
        call()
    message = str(error.value)
    cache = offline / "hub-cache" / f"{repo_type}s--someone--missing"
    work = offline / "work"
    expected = (
        f"{what}='someone/missing' was found neither as a local path nor in the Hub cache: nothing at "
        f"{work / 'someone' / 'missing'} (relative to the working directory {work}), and the Hub cache folder "
        f"{cache} does not exist; offline mode is on (HF_HUB_OFFLINE=1), so the Hub was not asked. Pass the path of "
        f"a local {repo_type} folder, or download it once while online (`hf download someone/missing"
    )
    assert message.startswith(expected), message
    assert re.search(r"\) or unset HF_HUB_OFFLINE\.$", message), message
    assert "couldn't connect" not in message.lower()
