import subprocess
import sys
import zipfile
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]


def test_import_is_lazy():
    code = (
        "import sys, hf_ext; heavy = [m for m in ('trl', 'peft', 'datasets', 'mergekit', 'evaluate', 'bitsandbytes',"
        " 'matplotlib', 'hf_ext.testing', 'hf_ext.quantization') if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_public_names_resolve():
    import hf_ext

    for name in hf_ext.__all__:
        assert getattr(hf_ext, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hf_ext.nope  # noqa: B018


@pytest.mark.slow
def test_wheel_ships_templates_data_and_console_script(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("hf_ext-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # The templates live at the top of the repository and ship inside the package; the examples stay outside.
    templates = sorted(n for n in names if n.startswith("hf_ext/model_cards/"))
    shipped = sorted(f"hf_ext/model_cards/{p.name}" for p in (ROOT / "model_cards").glob("*.md"))
    assert templates == shipped and "hf_ext/model_cards/default.md" in templates
    assert not [n for n in names if n.startswith("examples/") or "real_demo" in n or "/data/real_" in n]
    assert "hf_ext/data/tiny_corpus.txt" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hf-ext = hf_ext.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
