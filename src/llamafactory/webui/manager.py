"""Keeps the page's components by name, so handlers get a state dict and a language switch relabels everything.

Components are named `<tab>.<name>` (tab: top, train, eval, chat, export); `name` is the config key where there
is one. Each gets the HTML id `<tab>-<name>`, which the browser test uses as a selector.
"""

from typing import Any

from .locales import LANGS, label


class Manager:
    def __init__(self, gr: Any) -> None:
        self.gr = gr
        self.components: dict[str, Any] = {}
        self.state_names: dict[str, list[str]] = {}

    def make(self, tab: str, name: str, cls: Any, state: bool = True, **kwargs: Any) -> Any:
        """Build a component labelled in English, register it, and return it."""
        props = {k: v for k, v in label(tab, name, "en").items() if v}
        if cls in (self.gr.Button, self.gr.Markdown) and "value" in props:
            kwargs.setdefault("value", props.pop("value"))
        props.pop("value", None)
        component = cls(elem_id=f"{tab}-{name}", **props, **kwargs)
        return self.add(tab, name, component, state)

    def add(self, tab: str, name: str, component: Any, state: bool = True) -> Any:
        key = f"{tab}.{name}"
        if key in self.components:
            raise ValueError(f"component {key} registered twice")
        self.components[key] = component
        if state:
            self.state_names.setdefault(tab, []).append(name)
        return component

    def __getitem__(self, key: str) -> Any:
        return self.components[key]

    def inputs(self, *tabs: str) -> list[Any]:
        """The components whose values make up the state of these tabs, in a fixed order."""
        return [self.components[f"{tab}.{name}"] for tab in tabs for name in self.state_names.get(tab, [])]

    def state(self, tabs: tuple[str, ...], values: tuple[Any, ...] | list[Any]) -> dict[str, Any]:
        """The values of `inputs(*tabs)` as a flat dict (later tabs win when names repeat)."""
        names = [name for tab in tabs for name in self.state_names.get(tab, [])]
        return dict(zip(names, values))

    def localized(self) -> list[tuple[str, str, Any]]:
        out = []
        for key, component in self.components.items():
            tab, name = key.split(".", 1)
            if any(label(tab, name, "en").values()):
                out.append((tab, name, component))
        return out

    def relabel(self, lang: str) -> list[Any]:
        """Updates that show every localized component in `lang`, in the order of `localized()`."""
        lang = lang if lang in LANGS else "en"
        return [self.gr.update(**{k: v for k, v in label(tab, name, lang).items() if v})
                for tab, name, _ in self.localized()]
