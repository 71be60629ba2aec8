import pytest

from llamafactory.extras import packages
from llamafactory.extras.errors import UserError


def test_old_dependency_is_refused_unless_the_check_is_disabled(monkeypatch):
    monkeypatch.setitem(packages.MINIMUM, "transformers", "999.0.0")
    monkeypatch.delenv("DISABLE_VERSION_CHECK", raising=False)
    with pytest.raises(UserError, match="transformers .* is older than the 999.0.0 llamafactory needs"):
        packages.check_dependencies()
    monkeypatch.setenv("DISABLE_VERSION_CHECK", "1")
    packages.check_dependencies()


def test_version_tuples():
    assert packages._as_tuple("2.13.0+cpu") == (2, 13, 0)
    assert packages._as_tuple("5.0.0rc1") < packages._as_tuple("5.1")
