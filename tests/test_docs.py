import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_config_reference_is_up_to_date():
    script = os.path.join(ROOT, "scripts", "gen_config_docs.py")
    spec = importlib.util.spec_from_file_location("gen_config_docs", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with open(module.DOC_PATH, encoding="utf-8") as f:
        current = f.read()
    assert current == module.render(), "run `python scripts/gen_config_docs.py` and commit docs/config_reference.md"


def test_readme_names_the_two_commands_and_ci_runs_the_test_one():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert "make demo" in readme and "make test" in readme
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        assert "make test" in f.read()
