"""Q1: the network's structure, layer by layer, with every parameter count written as a formula.

For the lab's baseline CNN and for the analysed model: each layer's name, type, output shape
(one image, channels x height x width), its parameter formula (``3*3*3*32 + 32`` for a 3x3
convolution from 3 to 32 channels with bias: kernel_h*kernel_w*in*out weights + out biases)
and the value. The total is checked against ``sum(p.numel())``. Trainable parameters are
those with ``requires_grad``; BatchNorm's running mean and variance are buffers, not
parameters: they are counted apart as non-trainable state (Keras calls them non-trainable
parameters, which is why Keras totals come out larger).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from agestudy.models import count_parameters, create_model, n_members, split_members


def layer_formula(module: nn.Module) -> tuple[str, str]:
    """(formula with numbers, formula in symbols) for the module's own parameters."""
    own = [p for _, p in module.named_parameters(recurse=False)]
    if not own:
        return "0", "no parameters"
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        cin, cout = module.in_channels // module.groups, module.out_channels
        text = f"{kh}*{kw}*{cin}*{cout}"
        if module.bias is not None:
            return text + f" + {cout}", "k_h*k_w*c_in*c_out weights + c_out biases"
        return text, "k_h*k_w*c_in*c_out weights (no bias: a BatchNorm follows)"
    if isinstance(module, nn.Linear):
        text = f"{module.in_features}*{module.out_features}"
        if module.bias is not None:
            return text + f" + {module.out_features}", "n_in*n_out weights + n_out biases"
        return text, "n_in*n_out weights"
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        return f"{module.num_features} + {module.num_features}", "gamma (scale) + beta (shift) per channel"
    # anything else: the product of each parameter tensor's shape
    return " + ".join("*".join(str(d) for d in p.shape) or "1" for p in own), "product of each parameter's shape"


def layer_type(module: nn.Module) -> str:
    """The layer's class name; a one-member GroupedLinear or MemberFlatten is exactly PyTorch's
    Linear or Flatten, and is listed as such."""
    name = type(module).__name__
    if getattr(module, "members", None) == 1:
        return {"GroupedLinear": "Linear", "MemberFlatten": "Flatten"}.get(name, name)
    return name


def evaluate_formula(text: str) -> int:
    """``"3*3*3*32 + 32"`` -> 896 (sums of products of whole numbers only)."""
    if text == "0":
        return 0
    return sum(math.prod(int(f) for f in term.split("*")) for term in text.split(" + "))


def structure_table(model: nn.Module, crop: int) -> dict:
    """The layer table of ``model`` on a 3 x crop x crop input, with totals (checked).

    An ensemble is listed as its first member layer by layer, then one row for the other
    members (identical layers, their own weights): the table stays readable and the total
    is still the whole ensemble's.
    """
    if n_members(model) > 1:
        return _ensemble_table(model, crop)
    model.eval()
    device = next(model.parameters()).device
    # listed: leaf layers, plus any container that holds parameters of its own
    listed = [(name, m) for name, m in model.named_modules()
              if name and (not list(m.children()) or list(m.parameters(recurse=False)))]
    shapes, order = {}, []

    def hook(name):
        def record(module, inputs, output):
            if name not in shapes and isinstance(output, torch.Tensor):
                shape = list(output.shape[1:])
                # one-member networks carry a member axis of size 1 after flattening: not worth a column
                shapes[name] = shape[1:] if len(shape) == 2 and shape[0] == 1 else shape
                order.append(name)
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in listed]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, crop, crop, device=device))
    finally:
        for h in handles:
            h.remove()
    # execution order first (what the image goes through), then anything never called
    position = {name: i for i, name in enumerate(order)}
    listed.sort(key=lambda item: position.get(item[0], len(position)))

    rows = [{"name": "input", "type": "-", "output_shape": [3, crop, crop], "formula": "0",
             "formula_symbols": "the centre crop, RGB", "parameters": 0, "trainable": 0}]
    for name, module in listed:
        formula, symbols = layer_formula(module)
        own = list(module.parameters(recurse=False))
        count = sum(p.numel() for p in own)
        if evaluate_formula(formula) != count:  # the formula must say exactly what PyTorch counts
            raise AssertionError(f"{name}: formula {formula} != {count} parameters")
        rows.append({"name": name, "type": layer_type(module), "output_shape": shapes.get(name),
                     "formula": formula, "formula_symbols": symbols, "parameters": count,
                     "trainable": sum(p.numel() for p in own if p.requires_grad)})
    total = sum(r["parameters"] for r in rows)
    numel = sum(p.numel() for p in model.parameters())
    if total != numel:
        raise AssertionError(f"layer table sums to {total}, the model has {numel} parameters")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for b in model.buffers())
    return {
        "model": type(model).__name__,
        "input_shape": [3, crop, crop],
        "rows": rows,
        "total_parameters": total,
        "sum_numel": numel,
        "trainable_parameters": trainable,
        "non_trainable_parameters": numel - trainable,
        "buffers": buffers,
        "note": "total = sum(p.numel() for p in model.parameters()). Buffers (BatchNorm running mean/variance "
                "and batch counter) are state updated without gradients: Keras would list them as "
                "non-trainable parameters.",
    }


def _ensemble_table(model: nn.Module, crop: int) -> dict:
    members = n_members(model)
    first = structure_table(split_members(model)[0], crop)
    rows = [first["rows"][0]] + [{**r, "name": f"members.0.{r['name']}"} for r in first["rows"][1:]]
    others, per_member = members - 1, first["total_parameters"]
    rows.append({"name": f"members.1-{others}" if others > 1 else "members.1", "type": "same layers as members.0",
                 "output_shape": [2], "formula": f"{others}*{per_member}",
                 "formula_symbols": "other members x parameters of one member",
                 "parameters": others * per_member,
                 "trainable": others * first["trainable_parameters"]})
    rows.append({"name": "mean of softmax", "type": "Ensemble", "output_shape": [2], "formula": "0",
                 "formula_symbols": "the members' class probabilities averaged", "parameters": 0, "trainable": 0})
    total = sum(r["parameters"] for r in rows)
    numel = sum(p.numel() for p in model.parameters())
    if total != numel:
        raise AssertionError(f"ensemble table sums to {total}, the model has {numel} parameters")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {**first, "model": f"Ensemble of {members} x {first['model']}", "rows": rows,
            "total_parameters": total, "sum_numel": numel, "trainable_parameters": trainable,
            "non_trainable_parameters": numel - trainable, "buffers": sum(b.numel() for b in model.buffers()),
            "members": members, "parameters_per_member": per_member}


def render_text(table: dict, title: str) -> str:
    """A fixed-width text version of the table, for reading the artifact directly."""
    lines = [title, ""]
    header = f"{'layer':<28} {'type':<18} {'output shape':<16} {'formula':<26} {'parameters':>12}"
    lines += [header, "-" * len(header)]
    for r in table["rows"]:
        shape = "x".join(str(d) for d in r["output_shape"]) if r["output_shape"] else "-"
        lines.append(f"{r['name']:<28} {r['type']:<18} {shape:<16} {r['formula']:<26} {r['parameters']:>12,}")
    lines += ["-" * len(header),
              f"total parameters      {table['total_parameters']:,} (= sum(p.numel()) = {table['sum_numel']:,})",
              f"trainable             {table['trainable_parameters']:,}",
              f"non-trainable         {table['non_trainable_parameters']:,}",
              f"buffers (not params)  {table['buffers']:,}", "", table["note"]]
    return "\n".join(lines) + "\n"


def run(ctx) -> dict:
    cfg = ctx.cfg
    models = {
        "model": ctx.model,
        # the lab's network, at the analysed run's input size (its first linear layer depends on it)
        "baseline": create_model("baseline", crop=cfg.crop),
    }
    headline = {}
    for role, model in models.items():
        table = structure_table(model, cfg.crop)
        name = cfg.model if role == "model" else "baseline"
        described = "the lab's baseline CNN" if role == "baseline" else f"the analysed run's model ({name})"
        table.update(role=role, model_name=name, description=described)
        ctx.log_table(f"structure_{role}", table)
        path = ctx.path(f"structure_{role}.txt")
        path.write_text(render_text(table, f"{table['description']}, input 3x{cfg.crop}x{cfg.crop}"))
        ctx.log_file(path)
        values = {f"{role}_parameters": table["total_parameters"],
                  f"{role}_trainable": table["trainable_parameters"],
                  f"{role}_non_trainable": table["non_trainable_parameters"],
                  f"{role}_buffers": table["buffers"]}
        ctx.log_metrics(values)
        headline.update(values)
    assert headline["model_parameters"] == count_parameters(ctx.model)
    return headline
