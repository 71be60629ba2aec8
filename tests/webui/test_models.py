from llamafactory.webui import models


def test_the_template_list_is_the_registry():
    from llamafactory.data.template import _registry

    assert sorted(models.TEMPLATES) == sorted(_registry())


def test_every_model_family_template_has_a_model_and_every_model_a_registered_template():
    used = {entry.template for entry in models.MODELS.values()}
    assert used <= set(models.TEMPLATES)
    assert set(models.TEMPLATES) - set(models.GENERIC_TEMPLATES) == used
    assert models.MODELS[models.DEFAULT_MODEL] == models.ModelEntry("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2")
    assert all("/" not in name for name in models.MODELS)  # names are folder names under saves/


def test_names_paths_and_folders():
    assert models.find_by_path("huggingfacetb/smollm2-135m-instruct") == "SmolLM2-135M-Instruct"
    assert models.find_by_path("/tmp/x") is None
    assert models.default_template("Qwen3-8B") == "qwen3" and models.default_template("Custom") == "default"
    assert models.folder_name("Custom", "/data/models/My Model v2/") == "My-Model-v2"
    assert models.folder_name("Qwen3-8B", "whatever") == "Qwen3-8B"
    assert models.model_choices()[-1] == models.CUSTOM
