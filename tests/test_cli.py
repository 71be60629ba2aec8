import os
import subprocess
import sys

from tests.conftest import run_lmf


def test_help_version_env_do_not_import_torch():
    code = ("import sys, io, contextlib\nfrom llamafactory.cli import main\n"
            "for cmd in ('help', 'version', 'env'):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        assert main([cmd]) == 0\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'peft', 'trl', 'fastapi', 'uvicorn', 'gradio')\n"
            "         if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_env_lists_versions_and_hardware():
    out = run_lmf("env").stdout
    for name in ("Python version", "torch version", "transformers version", "datasets version",
                 "accelerate version", "peft version", "trl version", "Accelerator", "CPU threads"):
        assert name in out
    assert "CPU only" in out


def test_version_and_help():
    from llamafactory import __version__

    assert run_lmf("version").stdout.strip() == f"llamafactory {__version__}"
    help_text = run_lmf("help").stdout
    for command in ("train", "chat", "api", "export", "webui", "webchat", "eval", "env", "version", "help"):
        assert f"\n  {command} " in help_text


def test_unknown_command_prints_usage_and_exits_2():
    proc = run_lmf("trian")
    assert proc.returncode == 2
    assert "unknown command `trian`" in proc.stderr and "Usage: lmf" in proc.stderr


def test_webui_refuses_arguments_in_one_line():
    proc = run_lmf("webui", "cfg.yaml")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "`lmf webui` takes no arguments" in proc.stderr


def test_config_errors_are_one_line_without_traceback(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model_name_or_path: m\nlora_rnak: 8\n")
    proc = run_lmf("train", str(cfg))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: in {cfg}: unknown key `lora_rnak`; did you mean `lora_rank`?"
    debug = run_lmf("train", str(cfg), env={"LLAMAFACTORY_VERBOSITY": "DEBUG"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_force_torchrun_checks_the_config_once_before_launching(tmp_path):
    proc = run_lmf("train", "x=1", env={"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "Launching" not in proc.stderr
    assert proc.stderr.count("unknown key `x`") == 1  # refused in the parent, not once per worker


def test_lmf_bounds_the_cpu_kernel_caches_unless_the_user_set_them():
    """bf16 matmul kernels are cached per shape; lmf caps both caches (extras/envs.py) before torch loads, and a
    user's own value stays."""
    code = ("import os, io, contextlib\nfrom llamafactory.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['version']) == 0\n"
            "print(os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'], os.environ['LRU_CACHE_CAPACITY'])\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["128", "128"]
    env["LRU_CACHE_CAPACITY"] = "512"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    assert out.stdout.split() == ["128", "512"]
