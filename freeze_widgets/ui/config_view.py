"""The code view's target selector: the freeze as PyTorch or as a trainer's config, and back.

Choosing a tool shows the config that tool reads for the current freeze (or why it cannot say
it, with the nearest config); Copy and Save take the text shown. Pasting a config and pressing
Preview highlights the tree rows it would change and lists what differs; Apply makes it the
model's freeze, all or nothing.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as widgets
from torch import nn

from freeze_widgets.base.wording import one_line
from freeze_widgets.configs import InexpressibleError, from_config, preview, to_config
from freeze_widgets.freezing.spec import FreezeSpec
from freeze_widgets.ui.messages import MessageArea
from freeze_widgets.ui.tree_widget import TreeWidget

__all__ = ["ConfigView"]

PYTORCH = "PyTorch code"
_CHOICES = {
    PYTORCH: "",
    "LLaMA-Factory": "llamafactory",
    "axolotl": "axolotl",
    "ms-swift": "ms-swift",
    "PEFT": "peft",
    "timm": "timm",
    "Lightning": "lightning",
    "Finetuning-Scheduler": "fts",
}
# Clipboard from a click in the page (a secure context such as localhost or https).
_COPY_JS = (
    "navigator.clipboard.writeText(this.closest('.fw-config-view')"
    ".querySelector('.fw-config-text pre').innerText)"
)


def _pre(text: str) -> str:
    return (
        '<pre style="font-size:0.9em;background:var(--jp-layout-color2,#f5f5f5);'
        f'padding:6px;border-radius:4px;white-space:pre">{html.escape(text)}</pre>'
    )


class ConfigView(widgets.VBox):
    """Target selector, copy and save above the code; a config box with Preview and Apply below.

    Args:
        code: The explorer's code HTML (PyTorch code is written there by the explorer).
        tree_view: The tree, whose rows a preview highlights.
        messages: Where results and errors go, one line each.
        get_model: The explorer's model.
        get_spec: The current freeze.
        apply_spec: Makes a spec the model's freeze (validates first; all or nothing).
        show_code: Writes the PyTorch code (the explorer's own code view).
    """

    def __init__(
        self,
        code: widgets.HTML,
        tree_view: TreeWidget,
        messages: MessageArea,
        get_model: Callable[[], nn.Module],
        get_spec: Callable[[], FreezeSpec],
        apply_spec: Callable[[FreezeSpec], None],
        show_code: Callable[[], None],
    ) -> None:
        self.code = code
        self._tree, self._messages = tree_view, messages
        self._model, self._spec, self._apply_spec = get_model, get_spec, apply_spec
        self._show_code = show_code
        self.target = widgets.Dropdown(options=list(_CHOICES), value=PYTORCH, description="as")
        self.target.add_class("fw-config-target")
        self.copy = widgets.HTML(
            f'<button class="fw-config-copy jupyter-button" onclick="{_COPY_JS}">copy</button>'
        )
        self.path = widgets.Text(value="freeze_config.yaml", layout=widgets.Layout(width="200px"))
        self.save = widgets.Button(description="save", layout=widgets.Layout(width="auto"))
        self.save.add_class("fw-config-save")
        self.paste = widgets.Textarea(
            placeholder="paste a config of the chosen tool here, then Preview",
            layout=widgets.Layout(width="100%", height="90px"),
        )
        self.paste.add_class("fw-config-paste")
        self.preview_button = widgets.Button(
            description="preview", layout=widgets.Layout(width="auto")
        )
        self.preview_button.add_class("fw-config-preview")
        self.apply_button = widgets.Button(
            description="apply", disabled=True, layout=widgets.Layout(width="auto")
        )
        self.apply_button.add_class("fw-config-apply")
        self.result = widgets.HTML()
        self.result.add_class("fw-config-result")
        code.add_class("fw-config-text")
        self._pending: FreezeSpec | None = None
        load = widgets.VBox(
            [self.paste, widgets.HBox([self.preview_button, self.apply_button]), self.result]
        )
        super().__init__(
            [widgets.HBox([self.target, self.copy, self.path, self.save]), code, load],
            layout=widgets.Layout(display="none"),
        )
        self.add_class("fw-config-view")
        self.target.observe(self._on_target, names="value")
        self.save.on_click(self._guard(self._on_save))
        self.preview_button.on_click(self._guard(self._on_preview))
        self.apply_button.on_click(self._guard(self._on_apply))
        self.paste.observe(lambda _c: self._clear_preview(), names="value")

    @property
    def tool(self) -> str:
        """The chosen tool's key ("" for PyTorch code)."""
        return _CHOICES[str(self.target.value)]

    def render(self) -> bool:
        """Show the chosen tool's config; False when PyTorch code is chosen (the caller's)."""
        if not self.tool:
            return False
        try:
            text = to_config(self._spec(), self.tool, self._model())
        except InexpressibleError as exc:
            near = "" if exc.nearest is None else f"\n# nearest it can say: {exc.nearest}"
            text = f"# {self.target.value} cannot express this freeze exactly.\n# {exc}{near}"
        except Exception as exc:  # shown where the config would be, never a traceback
            text = f"# {self.target.value}: {one_line(exc)}"
        self.code.value = _pre(text)
        return True

    # ------------------------------------------------------------------ handlers

    def _guard(self, fn: Callable[[], None]) -> Callable[[Any], None]:
        def run(_button: Any = None) -> None:
            try:
                fn()
            except Exception as exc:  # a widget never shows a traceback
                self._messages.error(exc, fn.__name__.removeprefix("_on_"))

        return run

    def _on_target(self, _change: dict[str, Any]) -> None:
        self._clear_preview()
        if not self.render():
            self._show_code()
        self.path.value = "freeze_code.py" if not self.tool else "freeze_config.yaml"

    def _on_save(self) -> None:
        path = Path(self.path.value).expanduser()
        if not path.parent.exists():
            raise FileNotFoundError(f"folder {path.parent} does not exist; choose another path")
        text = html.unescape(self.code.value.split(">", 1)[-1].rsplit("</pre>", 1)[0])
        path.write_text(text, encoding="utf-8")
        self._messages.info(f"saved the {self.target.value} text to {path}")

    def _on_preview(self) -> None:
        self._clear_preview()
        if not self.tool:
            raise ValueError("choose a tool first: a PyTorch-code freeze is loaded with 'load'")
        model = self._model()
        result = preview(self.tool, self.paste.value, model, self._spec())
        spec = from_config(self.tool, self.paste.value, model)  # refuses other models' configs
        changed = set(result.spec_trains_but_frozen + result.spec_frozen_but_trains)
        self._tree.highlight = [
            row["i"]
            for row in self._tree.rows
            if any(n == row["p"] or n.startswith(row["p"] + ".") or not row["p"] for n in changed)
        ]
        self._pending = spec
        self.apply_button.disabled = False
        self.result.value = _pre(result.text().replace("the spec", "the current freeze"))

    def _on_apply(self) -> None:
        if self._pending is None:
            raise ValueError("press preview first")
        spec = self._pending
        self._apply_spec(spec)  # validates every path first: all or nothing
        self._clear_preview()
        self._messages.info(
            f"applied the {self.target.value} config: {len(spec.frozen)} frozen paths"
        )

    def _clear_preview(self) -> None:
        self._pending = None
        self.apply_button.disabled = True
        self._tree.highlight = []
        self.result.value = ""
