"""Forward-pass views as pure functions: the inference dataclasses (ForwardPass, Diagram, Box) or their arrays
and token pieces in, HTML or a plotly Figure out.

The data-flow diagram is HTML (boxes a click can pick); the explanation of a picked box is the tab's text
(assets/lessons/forward_boxes.yaml, handed in) filled with the box's real numbers. Which tab opens a box further
is decided here (`box_links`): inference names no tab. Every plot has a `*_summary` function beside it: one
sentence with the plotted numbers, shown under the plot as its text alternative.

Colours (checked for colour-blind readers): lines and bars use Okabe-Ito colours, and the MLP bars also carry a
hatch so the two bar series differ by more than hue; values that have a sign (embeddings, cosine similarity)
use ColorBrewer's blue-white-red (RdBu, readable with every common colour-vision deficiency) centred on 0; the
norms use a single-hue blue ramp and surprisal a white -> yellow -> dark red ramp whose lightness falls
monotonically, so both read as "more" in greyscale too. The diagram's tints only back up the boxes' written
titles, never carry meaning alone.

Every builder that writes words takes `lang` (default English) and reads them from the message catalogue
(assets/i18n/<lang>/forward.yaml). The names inference gives the diagram's boxes, the residual stream's stages and
the positional scheme are English; in another language the ones with a fixed wording are shown from the catalogue
(`box_title`, `box_detail`, `stage_name`, `scheme_summary`), and a module's own name stays as the model names it.
"""

from __future__ import annotations

import html
import re

import numpy as np
import plotly.graph_objects as go

from inference.diagram import Box, Diagram
from inference.forward import ForwardPass
from inference.positions import PositionScheme

from ..i18n import DEFAULT, t

FONT = dict(size=14, color="#222")
AXIS = dict(automargin=True, ticks="", showgrid=False, zeroline=False, showline=False)
GRID = dict(AXIS, showgrid=True, gridcolor="#e5e5e5")
DIVERGING = [[0.0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#f4a582"], [1.0, "#b2182b"]]
NORM_SCALE = [[0.0, "#f7fbff"], [0.3, "#c6dbef"], [0.6, "#4292c6"], [1.0, "#08306b"]]
ATTN_COLOUR, MLP_COLOUR, LENS_COLOUR = "#0072B2", "#009E73", "#D55E00"
PROMPT_COLOURS = ("#0072B2", "#E69F00")
# Tint per kind of box: attention blue, MLP green, norms grey, embeddings/positions orange/purple, output red.
KIND_TINT = {
    "ids": "#f2f2f2", "embedding": "#fbe3bf", "positions": "#e8d9ef", "layers": "#ffffff", "norm": "#ececec",
    "final_norm": "#ececec", "attention": "#d4e8f6", "projection": "#ffffff", "rope": "#e8d9ef",
    "attn_weights": "#bfdcf2", "residual": "#fff6c7", "mlp": "#d2efe4", "activation": "#ffffff",
    "lm_head": "#f9d3c4", "logits": "#f9d3c4", "softmax": "#f9d3c4", "module": "#f2f2f2",
}
# The tab that opens a kind of box further (the steps inside the attention block inherit its tab: box_links).
TAB_OF_KIND = {"ids": "tokenizer_tab", "attention": "attention_tab", "attn_weights": "attention_tab",
               "rope": "attention_tab", "logits": "sampling_tab", "softmax": "sampling_tab", "lm_head": "sampling_tab"}
# Boxes whose whole block the Interventions tab can switch off ("Ablate this block →").
ABLATABLE_KINDS = ("attention", "mlp")
MAX_SURPRISAL_COLOUR = 16.0  # bits: 1 in 65,536; anything rarer gets the darkest red


def fmt_params(count: int) -> str:
    """134,515,008 -> '134.5M'; 576 -> '576'."""
    if count >= 1e9:
        return f"{count / 1e9:.2f}B"
    if count >= 1e6:
        return f"{count / 1e6:.1f}M"
    if count >= 1e4:
        return f"{count / 1e3:.1f}K"
    return f"{count:,}"


def _share(part: int, total: int) -> str:
    share = part / total
    return "<0.1%" if 0 < share < 0.001 else f"{share:.1%}"


def fmt_shape(shape) -> str:
    return "[" + " × ".join(f"{s:,}" for s in shape) + "]" if shape else ""


def _short(piece: str, limit: int = 12) -> str:
    return piece if len(piece) <= limit else piece[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------------
# What inference names in English, in the reader's language


# Boxes whose title is fixed text (by key); the attention and MLP blocks and the layer block carry a number or a
# module name (box_title); every other box is a module, named as the model names it.
BOX_TITLES = {key: f"forward.box_{key.replace('layer.', '')}" for key in (
    "ids", "embed", "residual_attn", "residual_mlp", "layer.rope", "layer.attn_weights", "final_norm", "lm_head",
    "other", "logits", "softmax")}
# The details inference writes (inference/diagram.py), read back into their numbers: a detail of another form
# stays in English. `summary` is the positional scheme's line (scheme_summary translates it).
DETAILS = [(re.compile(pattern), key) for pattern, key in (
    (r"^(?P<n>\d+) tokens$", "forward.detail_ids"),
    (r"^vocabulary (?P<vocab>[\d,]+) × (?P<d>\d+)$", "forward.detail_embed"),
    (r"^vocabulary (?P<vocab>[\d,]+) × (?P<d>\d+), scaled by √(?P<root>\d+) = (?P<scale>[\d.]+)$",
     "forward.detail_embed_scaled"),
    (r"^one learned vector per position, (?P<positions>[\d,]+) positions$", "forward.detail_positions_learned"),
    (r"^(?P<summary>.+) · makes cos/sin tables for the attention layers$", "forward.detail_positions_rope"),
    (r"^(?P<layers>\d+) layers, (?P<params>[\d,–]+) parameters each(?P<types>;.*)?$", "forward.detail_layers"),
    (r"^(?P<heads>\d+) query heads × (?P<head_dim>\d+), (?P<kv>\d+) key/value heads \(one per query head\)$",
     "forward.detail_attention_mha"),
    (r"^(?P<heads>\d+) query heads × (?P<head_dim>\d+), (?P<kv>\d+) key/value heads \(grouped-query: "
     r"(?P<group>\d+) query heads share each\)$", "forward.detail_attention_gqa"),
    (r"^(?P<heads>\d+) query heads × (?P<head_dim>\d+), (?P<kv>\d+) key/value head \(grouped-query: "
     r"(?P<group>\d+) query heads share each\)$", "forward.detail_attention_gqa_one"),
    (r"^stream = stream \+ attention block$", "forward.detail_residual_attn"),
    (r"^stream = stream \+ MLP block$", "forward.detail_residual_mlp"),
    (r"^by each token's position$", "forward.detail_rope"),
    (r"^causal mask, softmax per row, then the weighted sum of the values$", "forward.detail_attn_weights"),
    (r"^(?P<shape>.+) · tied: reuses the embedding matrix$", "forward.detail_lm_head_tied"),
    (r"^one score per vocabulary entry at each of the (?P<n>\d+) positions$", "forward.detail_logits"),
    (r"^last position: (?P<answer>.*)$", "forward.detail_softmax"),
)]
STAGE = re.compile(r"^layer (\d+)$")
CURVE = re.compile(r"^(?P<theta>θ = [\d,.a-z]+) \((?P<layer_type>.+) layers\)$")
LEARNED_POSITIONS = re.compile(r"([\d,]+) positions$")


def box_title(box: Box, diagram: Diagram, lang: str = DEFAULT) -> str:
    """A box's name in `lang` (English: inference's own)."""
    if lang == DEFAULT:
        return box.title
    if box.key in BOX_TITLES:
        return t(BOX_TITLES[box.key], lang)
    if box.key == "positions" and diagram.positions.kind in ("rope", "learned"):
        return t(f"forward.box_positions_{diagram.positions.kind}", lang)
    if box.key == "layers":
        return t("forward.box_layers", lang, layers=box.repeat)
    if box.key in ("layer.attention", "layer.mlp") and box.module:
        return t(f"forward.box_{box.key[6:]}", lang, name=box.module.rsplit(".", 1)[-1])
    return box.title


def box_detail(box: Box, diagram: Diagram, lang: str = DEFAULT) -> str:
    """A box's detail line in `lang` (English: inference's own; a form the catalogue does not know stays so)."""
    if lang == DEFAULT or not box.detail:
        return box.detail
    for pattern, key in DETAILS:
        match = pattern.match(box.detail)
        if match:
            values = {name: value or "" for name, value in match.groupdict().items()}
            if "summary" in values:
                values["summary"] = scheme_summary(diagram.positions, diagram.facts.head_dim, lang)
            if values.get("types"):  # "; 15 × sliding attention, ...": the layer types, named as the config does
                values["types"] = t("forward.list_separator", lang) + values["types"].removeprefix("; ")
            return t(key, lang, **values)
    return box.detail


def scheme_summary(scheme: PositionScheme, head_dim: int, lang: str = DEFAULT) -> str:
    """The positional scheme in one line (inference's `summary`, English) in `lang`."""
    if lang == DEFAULT:
        return scheme.summary
    if scheme.kind == "rope" and scheme.thetas:
        thetas = [f"θ = {theta:,.0f}" if name == "all" else
                  t("forward.scheme_theta_layers", lang, theta=f"{theta:,.0f}", count=scheme.layer_counts.get(name, 0),
                    layer_type=name.replace("_", " "))
                  for name, theta in scheme.thetas.items()]
        return t("forward.scheme_rope", lang, thetas=t("forward.scheme_and", lang).join(thetas),
                 rotated=scheme.rotary_dims, head_dim=head_dim)
    match = LEARNED_POSITIONS.search(scheme.summary)
    if scheme.kind == "learned" and match:
        return t("forward.scheme_learned", lang, positions=match.group(1))
    if scheme.kind == "none":
        return t("forward.scheme_none", lang)
    return scheme.summary


def stage_name(name: str, lang: str = DEFAULT) -> str:
    """A stage of the residual stream ("embeddings", "layer 3") in `lang`."""
    if lang == DEFAULT:
        return name
    if name == "embeddings":
        return t("forward.stage_embeddings", lang)
    match = STAGE.match(name)
    return t("forward.stage_layer", lang, layer=match.group(1)) if match else name


def stage_names(names: list[str], lang: str = DEFAULT) -> list[str]:
    return [stage_name(name, lang) for name in names]


def curve_name(name: str, lang: str = DEFAULT) -> str:
    """A curve of the positions plot ("θ = 10,000 (sliding attention layers)", "mean cosine similarity")."""
    if lang == DEFAULT:
        return name
    if name == "mean cosine similarity":
        return t("forward.curve_mean_cosine", lang)
    match = CURVE.match(name)
    return t("forward.curve_theta_layers", lang, **match.groupdict()) if match else name


# ---------------------------------------------------------------------------------------------------
# Data-flow diagram


def box_links(boxes: list[Box]) -> dict[str, str | None]:
    """Box key -> the tab that opens it further (None: no tab does). The steps inside the attention block (q, k,
    v, o, their norms, RoPE, the weights) lead where the attention block does."""
    links: dict[str, str | None] = {}

    def walk(items, inherited):
        for box in items:
            link = TAB_OF_KIND.get(box.kind) or inherited
            links[box.key] = link
            walk(box.children, link if box.kind == "attention" else None)

    walk(boxes, None)
    return links


def _shapes(box: Box) -> str:
    a, b = fmt_shape(box.in_shape), fmt_shape(box.out_shape)
    if a and b and a != b:
        return f"{a} → {b}"
    return b or a


def _sub_row(box: Box, selected: str | None, diagram: Diagram, lang: str) -> str:
    cls = "fw-sub selected" if box.key == selected else "fw-sub"
    params = fmt_params(box.params) if box.params else ""
    tip = html.escape(t("forward.click_to_explain", lang))
    return (f'<div class="{cls}" data-key="{html.escape(box.key)}" title="{tip}" role="button" tabindex="0" '
            f'style="background:{KIND_TINT.get(box.kind, "#fff")}">'
            f'<span class="fw-sub-name">{html.escape(box_title(box, diagram, lang))}</span>'
            f'<span class="fw-shape">{html.escape(_shapes(box))}</span>'
            f'<span class="fw-params">{params}</span></div>')


def _params_text(params: int, total: int, lang: str) -> str:
    """"134.5M params · 100.0% of the model" (the share only when the model's total is known)."""
    text = t("forward.box_params", lang, params=fmt_params(params))
    return text + (" · " + t("forward.box_share", lang, share=_share(params, total)) if total else "")


def _box(box: Box, selected: str | None, diagram: Diagram, lang: str) -> str:
    total = diagram.facts.num_parameters
    cls = "fw-box selected" if box.key == selected else "fw-box"
    params = f'<span class="fw-params">{_params_text(box.params, total, lang)}</span>' if box.params else ""
    module = (f'<div class="fw-module">{html.escape(box.module)} <i>{html.escape(box.module_class)}</i></div>'
              if box.module else "")
    detail = box_detail(box, diagram, lang)
    detail = f'<div class="fw-detail">{html.escape(detail)}</div>' if detail else ""
    shape = f'<div class="fw-shape">{html.escape(_shapes(box))}</div>' if _shapes(box) else ""
    subs = "".join(_sub_row(c, selected, diagram, lang) for c in box.children)
    subs = f'<div class="fw-subs">{subs}</div>' if subs else ""
    tip = html.escape(t("forward.click_to_explain", lang))
    return (f'<div class="{cls} kind-{box.kind}" data-key="{html.escape(box.key)}" role="button" tabindex="0" '
            f'title="{tip}" style="background:{KIND_TINT.get(box.kind, "#fff")}">'
            f'<div class="fw-head"><b>{html.escape(box_title(box, diagram, lang))}</b>{params}</div>{module}{detail}'
            f'{shape}{subs}</div>')


def _arrow(label: str = "") -> str:
    return f'<div class="fw-arrow">↓ <span>{html.escape(label)}</span></div>'


def diagram_html(diagram: Diagram, selected: str | None, lang: str = DEFAULT) -> str:
    """The forward pass top to bottom. The layer block frames one layer's steps (in the order they ran) and
    stands for all L layers; every box and sub-step carries data-key for a click."""
    boxes, num_parameters = diagram.boxes, diagram.facts.num_parameters
    parts, stream_shape = [], None
    for i, box in enumerate(boxes):
        if i:
            stream = stream_shape if boxes[i - 1].kind == "positions" else boxes[i - 1].out_shape
            parts.append(_arrow(fmt_shape(stream)))
        if box.kind == "embedding":
            stream_shape = box.out_shape  # positions (added or rotated in) leave the stream's shape alone
        if box.kind == "layers":
            inner = []
            for j, child in enumerate(box.children):
                if j:
                    inner.append(_arrow())
                inner.append(_box(child, selected, diagram, lang))
            cls = "fw-layers selected" if box.key == selected else "fw-layers"
            tip = html.escape(t("forward.click_to_explain", lang))
            parts.append(
                f'<div class="{cls}" data-key="layers" role="button" tabindex="0" title="{tip}">'
                f'<div class="fw-layers-head"><b>{html.escape(box_title(box, diagram, lang))}</b>'
                f'<span class="fw-params">{_params_text(box.params, num_parameters, lang)}</span></div>'
                f'<div class="fw-detail">{html.escape(box_detail(box, diagram, lang))} · '
                f'<code>{html.escape(box.module)}</code></div>'
                f'<div class="fw-layer-body">{"".join(inner)}</div></div>'
            )
        else:
            parts.append(_box(box, selected, diagram, lang))
    total = t("forward.diagram_total", lang, total=diagram.params, reported=num_parameters)
    footer = f'<div class="fw-total">{total}</div>'
    return f'<div class="fw-diagram">{"".join(parts)}{footer}</div>'


def _norm_where(diagram: Diagram, box: Box, where: dict[str, str]) -> str:
    """Where a norm sits in the layer, in words ("" when the diagram cannot tell)."""
    name = box.module.rsplit(".", 1)[-1]
    if box.kind == "final_norm":
        return where["final_norm"]
    if box.module == diagram.mid_reader:
        return where["mid_reader"]
    if name in ("q_norm", "k_norm"):
        return where[name]
    if box.module == diagram.first_child:
        return where["first_child"]
    return where["post"] if name.startswith("post") else ""


def _explain_text(diagram: Diagram, box: Box, texts: dict, lang: str = DEFAULT) -> str:
    """What a box does, in plain words with this model's numbers: a text of `texts` (the tab's
    assets/lessons/<lang>/forward_boxes.yaml) with the numbers filled in. HTML; every string from the model
    escaped."""
    f, kind = diagram.facts, box.kind
    name = box.module.rsplit(".", 1)[-1] if box.module else box.key
    kv_s = "s" if f.num_kv_heads > 1 else ""
    values = dict(
        n=diagram.n, d=f.hidden_size, vocab=f.vocab_size, last_id=f.vocab_size - 1, heads=f.num_heads,
        kv=f.num_kv_heads, kv_s=kv_s, head_dim=f.head_dim, intermediate=f.intermediate_size, params=box.params,
        share=box.params / f.num_parameters, stream_shape=fmt_shape((diagram.n, f.hidden_size)),
        out_shape=fmt_shape(box.out_shape), shapes=html.escape(_shapes(box)), repeat=box.repeat,
        detail=html.escape(box_detail(box, diagram, lang)), title=html.escape(box_title(box, diagram, lang)),
        summary=html.escape(scheme_summary(diagram.positions, f.head_dim, lang)),
    )
    fill = lambda key, **more: texts[key].format(**values, **more)  # noqa: E731
    if kind == "embedding":
        text = fill("embedding")
        if "scaled" in box.detail:
            text += " " + fill("embedding_scaled")
        if diagram.tied:
            text += " " + fill("embedding_tied")
        return text
    if kind == "positions":
        return fill("positions_rope" if diagram.positions.kind == "rope" else "positions_learned")
    if kind == "layers":
        return fill("layers", sliding=fill("layers_sliding") if "sliding" in box.detail else "")
    if kind in ("norm", "final_norm"):
        module_class = box.module_class or "Norm"
        where = _norm_where(diagram, box, texts["norm_where"])
        how = texts["norm_how"]["rms" if "rms" in module_class.lower() else "mean"]
        return fill("norm", module_class=html.escape(module_class), where=f", {where}" if where else "", how=how)
    if kind == "attention":
        grouped = fill("attention_grouped") if f.num_kv_heads != f.num_heads else ""
        return fill("attention", grouped=grouped)
    if kind == "projection":
        what = texts["projection_what"].get(name, texts["projection_what"]["other"]).format(**values)
        weights = ", ".join(f"{w} {fmt_shape(s)}" for w, s in box.weights)
        return fill("projection", what=what, weights=weights)
    if kind == "activation":
        return fill("activation", module_class=html.escape(box.module_class or "Activation"))
    if kind == "lm_head":
        return fill("lm_head", own=" " + fill("lm_head_tied" if diagram.tied else "lm_head_own"))
    if kind == "softmax":
        return fill("softmax", answer=html.escape(box.detail.split(": ", 1)[-1]))
    if kind in ("ids", "rope", "attn_weights", "residual", "mlp", "logits"):
        return fill(kind)
    return fill("other")


def explain_html(diagram: Diagram, box: Box | None, texts: dict, link: str | None = None,
                 lang: str = DEFAULT) -> str:
    """The picked box: what it does, its module, weights and shapes, and a button to the tab `link` that opens it
    further; or (box None) how to use the diagram. `texts`: the tab's box explanations (forward_boxes.yaml)."""
    if box is None:
        return f'<div class="fw-explain"><p>{texts["none"]}</p></div>'
    rows = []
    if box.module:
        rows.append(f"<tr><th>{html.escape(t('forward.fact_module', lang))}</th><td><code>{html.escape(box.module)}"
                    f"</code> ({html.escape(box.module_class)})</td></tr>")
    if _shapes(box):
        rows.append(f"<tr><th>{html.escape(t('forward.fact_shape', lang))}</th>"
                    f"<td>{html.escape(_shapes(box))}</td></tr>")
    for name, shape in box.weights:
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{fmt_shape(shape)}</td></tr>")
    if box.params:
        rows.append(f"<tr><th>{html.escape(t('forward.fact_parameters', lang))}</th><td>{box.params:,}</td></tr>")
    table = f'<table class="fw-facts">{"".join(rows)}</table>' if rows else ""
    button = (f'<button class="fw-link" id="fw-open" data-tab="{html.escape(link)}">'
              f'{html.escape(link_label(link, lang))}</button>' if link else "")
    if box.kind in ABLATABLE_KINDS:  # the Interventions tab switches this block off (the diagram draws layer 0)
        button += f'<button class="fw-ablate" id="fw-ablate">{html.escape(t("forward.ablate", lang))}</button>'
    return (f'<div class="fw-explain"><h4>{html.escape(box_title(box, diagram, lang))}</h4>'
            f"<p>{_explain_text(diagram, box, texts, lang)}</p>{button}{table}</div>")


def link_label(tab_id: str | None, lang: str = DEFAULT) -> str:
    """The button to the tab that opens a box further, named as the tab is (the page's tab.* texts)."""
    if not tab_id:
        return ""
    return t("forward.open_tab", lang, tab=t(f"tab.{tab_id.removesuffix('_tab')}", lang))


# ---------------------------------------------------------------------------------------------------
# Embeddings and positions


def embedding_strip(forward: ForwardPass, lang: str = DEFAULT) -> go.Figure:
    """Each token's embedding vector as one row of colour: embeddings [k, d] (blue negative, red positive)."""
    pieces, embeddings, total_tokens = forward.tokens.pieces, forward.embeddings, forward.n
    k, d = embeddings.shape
    limit = float(np.percentile(np.abs(embeddings), 99)) or 1.0  # a few large values would wash out the rest
    labels = [f"{i}:{_short(p, 10)}" for i, p in enumerate(pieces[:k])]
    fig = go.Figure(go.Heatmap(
        z=np.round(embeddings, 3), y=list(range(k)), zmin=-limit, zmax=limit, colorscale=DIVERGING,
        hovertemplate=t("forward.embed_hover", lang) + "<extra></extra>",
        colorbar=dict(title=dict(text=t("forward.embed_value", lang), side="right"), thickness=12, len=0.8),
    ))
    title = (t("forward.embed_title_first", lang, d=d, k=k, total=total_tokens) if total_tokens > k
             else t("forward.embed_title", lang, d=d))
    fig.update_layout(
        title=dict(text=title, font=dict(size=15), x=0.02, xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(AXIS, title=dict(text=t("forward.embed_dimension", lang)), showticklabels=True),
        yaxis=dict(AXIS, tickvals=list(range(k)), ticktext=labels, autorange="reversed", tickfont=dict(size=12)),
        margin=dict(l=10, r=10, t=50, b=10), height=int(np.clip(22 * k + 130, 260, 840)),
    )
    return fig


def cosine_heatmap(forward: ForwardPass, lang: str = DEFAULT) -> go.Figure:
    """Cosine similarity between the tokens' embedding vectors [k, k]: 1 = same direction, 0 = unrelated."""
    pieces, embeddings = forward.tokens.pieces, forward.embeddings
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    sim = np.round(unit @ unit.T, 2)  # [k, k]
    k = len(sim)
    labels = [f"{i}:{_short(p, 10)}" for i, p in enumerate(pieces[:k])]
    fig = go.Figure(go.Heatmap(
        z=sim, zmin=-1, zmax=1, colorscale=DIVERGING, text=sim if k <= 14 else None,
        texttemplate="%{text:.2f}" if k <= 14 else None, textfont=dict(size=11),
        hovertemplate=t("forward.cosine_hover", lang) + "<extra></extra>", x=labels, y=labels,
        colorbar=dict(title=dict(text=t("forward.cosine", lang), side="right"), thickness=12, len=0.8),
    ))
    fig.update_layout(
        title=dict(text=t("forward.cosine_title", lang), font=dict(size=15), x=0.02, xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(AXIS, tickangle=-60, tickfont=dict(size=11)),
        yaxis=dict(AXIS, autorange="reversed", tickfont=dict(size=11)),
        margin=dict(l=10, r=10, t=50, b=10), height=int(np.clip(24 * k + 200, 340, 840)),
    )
    return fig


def _hex_rgba(colour: str, alpha: float) -> str:
    return "rgba({},{},{},{})".format(*(int(colour[i:i + 2], 16) for i in (1, 3, 5)), alpha)


def position_figure(scheme: PositionScheme, lang: str = DEFAULT) -> go.Figure:
    """RoPE: q·k of one query/key pair (q = k) against the distance between their positions, relative to
    distance 0; curves [3, P] = mean, min, max over each distance bin (the band shows the ripples).
    Learned positions: how similar the position vectors t apart are."""
    kind, distances, curves = scheme.kind, scheme.distances, scheme.curves
    colours = [ATTN_COLOUR, LENS_COLOUR, MLP_COLOUR, "#CC79A7"]
    fig = go.Figure()
    x = np.maximum(distances, 0.7).astype(np.float64)  # the log axis cannot show 0; distance 0 sits at 0.7
    for i, (name, (mean, low, high)) in enumerate(curves.items()):
        colour = colours[i % 4]
        if not np.allclose(low, high):
            fig.add_trace(go.Scatter(x=x, y=np.round(high, 4), mode="lines", line=dict(width=0), hoverinfo="skip",
                                     showlegend=False))
            fig.add_trace(go.Scatter(x=x, y=np.round(low, 4), mode="lines", line=dict(width=0), fill="tonexty",
                                     fillcolor=_hex_rgba(colour, 0.18), hoverinfo="skip", showlegend=False))
        name = curve_name(name, lang)
        fig.add_trace(go.Scatter(x=x, y=np.round(mean, 4), mode="lines", name=name, line=dict(width=2.5, color=colour),
                                 customdata=distances,
                                 hovertemplate=t("forward.distance_hover", lang) + "<extra>" + name + "</extra>"))
    limit = int(distances.max()) if len(distances) else 1
    ticks = [0.7] + [10 ** k for k in range(0, int(np.log10(max(limit, 1))) + 1)]
    if kind == "rope":
        title = (t("forward.rope_title", lang) + "<br><span style='font-size:13px'>" + t("forward.rope_subtitle", lang)
                 + "</span>")
        ytitle = t("forward.rope_score", lang)
    else:
        title = t("forward.learned_title", lang)
        ytitle = t("forward.cosine_similarity", lang)
    fig.update_layout(
        title=dict(text=title, font=dict(size=15), x=0.02, xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(GRID, type="log", tickvals=ticks, ticktext=["0"] + [f"{t:,}" for t in ticks[1:]],
                   title=dict(text=t("forward.distance_axis", lang))),
        yaxis=dict(GRID, title=dict(text=ytitle), zeroline=True, zerolinecolor="#999"),
        legend=dict(orientation="h", y=-0.25, x=0), margin=dict(l=10, r=10, t=80, b=10), height=420,
    )
    return fig


# ---------------------------------------------------------------------------------------------------
# Residual stream


def updates_figure(layer_names: list[str], attn: np.ndarray | None, mlp: np.ndarray | None,
                   layer_update: np.ndarray, skip_first: bool, lang: str = DEFAULT) -> go.Figure:
    """Per layer: how much the attention block and the MLP block change the stream (mean norm of the update
    over tokens, the first token left out when skip_first: it often carries huge outlier values)."""
    cols = slice(1, None) if skip_first else slice(None)
    layer_names = stage_names(layer_names, lang)
    fig = go.Figure()
    if attn is not None and mlp is not None:
        fig.add_trace(go.Bar(x=layer_names, y=np.round(attn[:, cols].mean(-1), 2),
                             name=t("forward.attention_update", lang), marker_color=ATTN_COLOUR,
                             hovertemplate=t("forward.attention_hover", lang) + "<extra></extra>"))
        fig.add_trace(go.Bar(x=layer_names, y=np.round(mlp[:, cols].mean(-1), 2), name=t("forward.mlp_update", lang),
                             marker_color=MLP_COLOUR,
                             marker_pattern=dict(shape="/", fillmode="overlay", fgcolor="white", size=7, solidity=0.3),  # not hue alone
                             hovertemplate=t("forward.mlp_hover", lang) + "<extra></extra>"))
    else:
        fig.add_trace(go.Bar(x=layer_names, y=np.round(layer_update[:, cols].mean(-1), 2),
                             name=t("forward.layer_update", lang), marker_color=ATTN_COLOUR))
    title = t("forward.updates_title_skip" if skip_first else "forward.updates_title_all", lang)
    fig.update_layout(
        title=dict(text=title, font=dict(size=15), x=0.02, xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white", barmode="group",
        xaxis=dict(AXIS, tickangle=-45, tickfont=dict(size=11)),
        yaxis=dict(GRID, title=dict(text=t("forward.update_norm", lang))),
        legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"),
        margin=dict(l=10, r=10, t=70, b=10), height=400,
    )
    return fig


def norms_heatmap(forward: ForwardPass, lang: str = DEFAULT) -> go.Figure:
    """|hidden state| per layer (rows, embeddings at the top) and token (columns), on a log colour scale."""
    row_names, norms, pieces = stage_names(forward.stages, lang), forward.hidden_norms, forward.tokens.pieces
    rows, n = norms.shape
    step = max(1, -(-n // 48))
    ticks = list(range(0, n, step))
    labels = [_short(pieces[i], 10) if step == 1 else f"{i}:{_short(pieces[i], 6)}" for i in ticks]
    logs = np.round(np.log10(np.maximum(norms, 1e-6)), 3)
    lo, hi = float(logs.min()), float(logs.max())
    tick_values = [v for v in range(int(np.floor(lo)), int(np.ceil(hi)) + 1)]
    fig = go.Figure(go.Heatmap(
        z=logs, x=list(range(n)), y=list(range(rows)), colorscale=NORM_SCALE, zmin=lo, zmax=hi,
        customdata=np.round(norms, 1), hovertemplate=t("forward.norms_hover", lang) + "<extra></extra>",
        colorbar=dict(title=dict(text="|h|", side="right"), tickvals=tick_values, ticktext=[f"{10 ** v:g}" for v in tick_values],
                      thickness=12),
        xgap=1 if n <= 64 else 0, ygap=1,
    ))
    fig.update_layout(
        title=dict(text=t("forward.norms_title", lang), font=dict(size=15), x=0.02, xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(AXIS, tickvals=ticks, ticktext=labels, tickangle=-60, tickfont=dict(size=11), side="bottom"),
        yaxis=dict(AXIS, tickvals=list(range(rows)), ticktext=row_names, autorange="reversed", tickfont=dict(size=10)),
        margin=dict(l=10, r=10, t=50, b=10), height=int(np.clip(16 * rows + 200, 360, 760)),
    )
    return fig


def _last_lens(forward: ForwardPass, lang: str = DEFAULT) -> tuple[list[str], np.ndarray, list[str], str]:
    """The logit lens at the last position: stage names (in `lang`), p(final answer) per stage, each stage's top
    guess, the final answer."""
    lens = forward.lens
    return (stage_names(forward.stages, lang), forward.lens_answer_probs, [stage[-1][0] for stage in lens.top_pieces],
            lens.answer_pieces[-1])


def lens_figure(forward: ForwardPass, lang: str = DEFAULT) -> go.Figure:
    """Logit lens at the last position: the probability each layer's stream gives the model's final answer."""
    row_names, answer_probs, top_pieces, answer = _last_lens(forward, lang)
    fig = go.Figure(go.Scatter(
        x=row_names, y=np.round(answer_probs, 4), mode="lines+markers", line=dict(color=LENS_COLOUR, width=2.5),
        customdata=top_pieces, hovertemplate="%{x}<br>p(" + html.escape(answer) + ") = %{y:.3f}<br>"
                                             + t("forward.lens_hover_top", lang) + "<extra></extra>",
    ))
    fig.update_layout(
        title=dict(text=t("forward.lens_title", lang, answer=html.escape(answer)), font=dict(size=15), x=0.02,
                   xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white",
        xaxis=dict(AXIS, tickangle=-60, tickfont=dict(size=10)),
        yaxis=dict(GRID, range=[0, 1.05], title=dict(text=t("forward.probability", lang))),
        margin=dict(l=10, r=10, t=50, b=10), height=320,
    )
    return fig


# ---------------------------------------------------------------------------------------------------
# Surprisal


def surprisal_colour(bits: float) -> str:
    """White (expected) -> yellow -> red (surprising), saturating at MAX_SURPRISAL_COLOUR bits."""
    t = float(np.clip(bits / MAX_SURPRISAL_COLOUR, 0.0, 1.0))
    stops = [(0.0, (255, 255, 255)), (0.25, (254, 227, 145)), (0.55, (252, 141, 89)), (1.0, (165, 0, 38))]
    for (a, ca), (b, cb) in zip(stops, stops[1:]):
        if t <= b:
            u = (t - a) / (b - a)
            return "rgb({:.0f},{:.0f},{:.0f})".format(*[x * (1 - u) + y * u for x, y in zip(ca, cb)])
    return "rgb(165,0,38)"


def surprisal_text_colour(bits: float) -> str:
    """Black or white text on a surprisal colour: whichever contrasts more (WCAG relative luminance), so every
    token stays readable (black holds up to about 12 bits, where the background turns dark red)."""
    r, g, b = (float(c) / 255 for c in surprisal_colour(bits)[4:-1].split(","))
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
    lum = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "#000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#fff"


def surprisal_html(forward: ForwardPass, expected: list[str], title: str, lang: str = DEFAULT) -> str:
    """The text as tokens, each coloured by its surprisal; hover for p and the model's top guess there.
    expected: the readable pieces of `forward.expected_ids` (the top guess at positions 0..n-2)."""
    spans = []
    for i, piece in enumerate(forward.tokens.pieces):
        if i == 0:
            tip = t("forward.tip_first", lang, i=i)
            spans.append(f'<span class="fw-tok first" title="{html.escape(tip)}">{html.escape(piece)}</span>')
        else:
            bits = forward.surprisal_bits[i - 1]
            b, p = float(bits), float(2.0 ** -bits)
            tip = t("forward.tip", lang, i=i, piece=piece, bits=b, p=p, expected=expected[i - 1])
            fg = surprisal_text_colour(b)
            spans.append(f'<span class="fw-tok" style="background:{surprisal_colour(b)};color:{fg}" '
                         f'title="{html.escape(tip)}">{html.escape(piece)}</span>')
        if piece.endswith("↵"):
            spans.append("<br>")
    if forward.perplexity is None:
        score = f'<div class="fw-ppl">{t("forward.no_perplexity", lang)}</div>'
    else:
        line = t("forward.perplexity_line", lang, perplexity=forward.perplexity, bits=forward.mean_bits,
                 predicted=forward.n - 1)
        score = f'<div class="fw-ppl">{line}</div>'
    return f'<div class="fw-surprisal"><h4>{html.escape(title)}</h4>{score}<div class="fw-tokens">{"".join(spans)}</div></div>'


def surprisal_legend_html(lang: str = DEFAULT) -> str:
    stops = [0, 2, 4, 8, 12, 16]
    cells = "".join(f'<span class="fw-tok" style="background:{surprisal_colour(b)};color:{surprisal_text_colour(b)}">'
                    f"{html.escape(t('forward.legend_bits', lang, bits=f'{b}+' if b == 16 else b))}</span>"
                    for b in stops)
    return (f'<div class="fw-legend">{html.escape(t("forward.legend", lang))} {cells} '
            f'<span class="fw-tok first">{html.escape(t("forward.legend_first", lang))}</span></div>')


def surprising_table_html(forward: ForwardPass, expected: list[str], k: int, lang: str = DEFAULT) -> str:
    """The k most surprising tokens: position, token, bits, p, and what the model expected instead (expected: the
    readable pieces of `forward.expected_ids`)."""
    rows = []
    for i in forward.most_surprising(k):
        bits = forward.surprisal_bits[i - 1]
        rows.append(f"<tr><td>#{i}</td><td><code>{html.escape(forward.tokens.pieces[i])}</code></td>"
                    f"<td>{float(bits):.2f}</td><td>{float(2.0 ** -bits):.3g}</td><td><code>{html.escape(expected[i - 1])}"
                    f"</code> ({float(forward.expected_probs[i - 1]):.0%})</td></tr>")
    if not rows:
        return ""
    names = [t("forward.table_position", lang), t("forward.table_token", lang), t("forward.table_bits", lang), "p",
             t("forward.table_expected", lang)]
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    return f'<table class="fw-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


# ---------------------------------------------------------------------------------------------------
# Prompt comparison


def compare_figure(labels: list[str], probs_a: np.ndarray, probs_b: np.ndarray, name_a: str, name_b: str,
                   lang: str = DEFAULT) -> go.Figure:
    """Two prompts' next-token distributions on one chart: the union of each one's top tokens, grouped bars."""
    y = [_short(label, 16) for label in labels]
    fig = go.Figure()
    for probs, name, colour in ((probs_a, name_a, PROMPT_COLOURS[0]), (probs_b, name_b, PROMPT_COLOURS[1])):
        fig.add_trace(go.Bar(
            y=y, x=np.round(probs, 4), orientation="h", name=_short(name.replace("\n", "↵"), 60), marker_color=colour,
            text=[f"{p:.1%}" if p >= 0.005 else "" for p in probs], textposition="outside", cliponaxis=False,
            hovertemplate="%{y}: %{x:.2%}<extra>" + html.escape(_short(name.replace("\n", "↵"), 40)) + "</extra>",
        ))
    fig.update_layout(
        title=dict(text=t("forward.compare_title", lang), font=dict(size=15), x=0.02, xanchor="left"),
        template="none", font=FONT, paper_bgcolor="white", plot_bgcolor="white", barmode="group",
        xaxis=dict(GRID, title=dict(text=t("forward.probability", lang)), tickformat=".0%", range=[0, min(1.0, float(max(probs_a.max(), probs_b.max())) * 1.18 + 0.02)]),
        yaxis=dict(AXIS, autorange="reversed", tickfont=dict(family="monospace", size=13)),
        legend=dict(orientation="h", y=-0.12, x=0, yanchor="top"),
        margin=dict(l=10, r=30, t=50, b=10), height=int(np.clip(46 * len(labels) + 170, 340, 900)),
    )
    return fig


# ---------------------------------------------------------------------------------------------------
# Text alternatives: each plot in one sentence, with the numbers it shows (Markdown, for a gr.Markdown below it)


def _q(piece: str) -> str:
    """A token piece quoted for Markdown: every ASCII punctuation mark backslash-escaped, so `<|im_start|>`,
    `*` or `_` show as typed instead of being read as markup."""
    return "“" + "".join("\\" + c if c in "\\`*_{}[]()<>#+-.!|~" else c for c in piece) + "”"


def embedding_strip_summary(forward: ForwardPass, lang: str = DEFAULT) -> str:
    pieces, embeddings, total_tokens = forward.tokens.pieces, forward.embeddings, forward.n
    k, d = embeddings.shape
    norms = np.linalg.norm(embeddings, axis=-1)  # [k]
    big, small = int(np.argmax(norms)), int(np.argmin(norms))
    key = "first" if total_tokens > k else "one" if k == 1 else "many"
    return t(f"forward.embed_summary_{key}", lang, k=k, total=total_tokens, d=d, low=embeddings.min(),
             high=embeddings.max(), longest=_q(pieces[big]), longest_norm=norms[big], shortest=_q(pieces[small]),
             shortest_norm=norms[small])


def cosine_summary(forward: ForwardPass, lang: str = DEFAULT) -> str:
    pieces, embeddings = forward.tokens.pieces, forward.embeddings
    k = len(embeddings)
    if k < 2:
        return t("forward.cosine_one", lang)
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    sim = unit @ unit.T  # [k, k]
    upper = np.triu_indices(k, 1)
    values = sim[upper]
    mean = dict(pairs=len(values), mean=values.mean())
    # A token that occurs twice has the same vector (cosine 1): name the most alike pair of different tokens.
    distinct = np.flatnonzero([pieces[i] != pieces[j] for i, j in zip(*upper)])
    if not len(distinct):
        return t("forward.cosine_same", lang, k=k, **mean)
    hi = int(distinct[np.argmax(values[distinct])])
    lo = int(distinct[np.argmin(values[distinct])])
    pair = lambda j: t("forward.token_pair", lang, a=_q(pieces[upper[0][j]]), b=_q(pieces[upper[1][j]]))  # noqa: E731
    return t("forward.cosine_summary", lang, k=k, alike=pair(hi), alike_value=values[hi], unlike=pair(lo),
             unlike_value=values[lo], **mean)


def position_summary(scheme: PositionScheme, lang: str = DEFAULT) -> str:
    kind, distances, curves = scheme.kind, scheme.distances, scheme.curves
    if not curves:
        return ""
    parts = []
    mid = min(int(np.searchsorted(distances, 100)), len(distances) - 1)  # the first distance >= 100
    for name, (mean, low, high) in curves.items():
        far, name = int(distances[-1]), curve_name(name, lang)
        if kind == "rope":
            parts.append(t("forward.rope_summary_part", lang, name=name, mid_value=mean[mid], mid=int(distances[mid]),
                           far_value=mean[-1], far=far, low=low[-1], high=high[-1]))
        else:
            parts.append(t("forward.learned_summary_part", lang, name=name, near=mean[1], far_value=mean[-1], far=far))
    what = t("forward.rope_summary_what" if kind == "rope" else "forward.learned_summary_what", lang)
    return t("forward.position_summary", lang, what=what, parts=t("forward.list_separator", lang).join(parts))


def updates_summary(layer_names: list[str], attn: np.ndarray | None, mlp: np.ndarray | None,
                    layer_update: np.ndarray, skip_first: bool, lang: str = DEFAULT) -> str:
    cols = slice(1, None) if skip_first else slice(None)
    which = t("forward.updates_over_skip" if skip_first else "forward.updates_over_all", lang)
    layer_names = stage_names(layer_names, lang)
    if attn is None or mlp is None:
        per_layer = layer_update[:, cols].mean(-1)  # [L]
        top = int(np.argmax(per_layer))
        return t("forward.updates_summary_layer", lang, which=which, top=layer_names[top], top_value=per_layer[top],
                 smallest=per_layer.min())
    a, m = attn[:, cols].mean(-1), mlp[:, cols].mean(-1)  # [L] each
    ta, tm = int(np.argmax(a)), int(np.argmax(m))
    return t("forward.updates_summary", lang, which=which, top_attention=layer_names[ta], attention=a[ta],
             top_mlp=layer_names[tm], mlp=m[tm], bigger=int((m > a).sum()), layers=len(layer_names))


def norms_summary(forward: ForwardPass, lang: str = DEFAULT) -> str:
    row_names, norms, pieces = stage_names(forward.stages, lang), forward.hidden_norms, forward.tokens.pieces
    rows, n = norms.shape
    r, c = np.unravel_index(int(np.argmax(norms)), norms.shape)
    last = norms[:, -1]
    return t("forward.norms_summary_one" if n == 1 else "forward.norms_summary_many", lang, n=n, first=row_names[0],
             layers=rows - 1, last=_q(pieces[-1]), start=last[0], end=last[-1], largest=norms[r, c], position=c,
             token=_q(pieces[c]), stage=row_names[r])


def lens_summary(forward: ForwardPass, lang: str = DEFAULT) -> str:
    row_names, answer_probs, top_pieces, answer = _last_lens(forward, lang)
    final = float(answer_probs[-1])
    above = np.flatnonzero(answer_probs >= 0.1)
    start = (t("forward.lens_reaches", lang, stage=row_names[above[0]]) if len(above)
             else t("forward.lens_never", lang))
    same = [i for i, p in enumerate(top_pieces) if p == answer]
    tops = (t("forward.lens_top_from", lang, stage=row_names[same[0]])
            if same and same == list(range(same[0], len(top_pieces)))
            else t("forward.lens_top_at", lang, count=len(same), stages=len(top_pieces)))
    return t("forward.lens_summary", lang, first=row_names[0], layers=len(row_names) - 1, answer=_q(answer),
             start=start, final=final, tops=tops)


def compare_summary(labels: list[str], probs_a: np.ndarray, probs_b: np.ndarray, lang: str = DEFAULT) -> str:
    ta, tb = int(np.argmax(probs_a)), int(np.argmax(probs_b))
    diff = np.abs(probs_a - probs_b)
    d = int(np.argmax(diff))
    return t("forward.compare_summary", lang, n=len(labels), top_a=_q(labels[ta]), p_a=probs_a[ta],
             top_b=_q(labels[tb]), p_b=probs_b[tb], most=_q(labels[d]), most_a=probs_a[d], most_b=probs_b[d])
