"""Readable descriptions of the modes of :class:`skcfx.ModalDirectionFinder` (``describe_modes``)."""

import numpy as np

__all__ = ["ModeSummary", "summarise_modes", "mode_letter", "mode_content", "describe_content", "display_name"]


class ModeSummary(list):
    """What :meth:`ModalDirectionFinder.describe_modes` returns: a list of dicts, one per mode,
    that prints as one line per mode."""

    def __str__(self):
        return "\n".join(mode["summary"] for mode in self)


def mode_letter(mode):
    """Letter of a mode id for people: 0 -> 'A', 25 -> 'Z', 26 -> 'AA'."""
    letters = ""
    mode += 1
    while mode:
        mode, rest = divmod(mode - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _shares(columns, rows):
    """``(label, share)`` of the rows: the share of each label, or of each attribute that is true."""
    if isinstance(columns, dict):
        return [(key, float(np.mean(value[rows].astype(bool)))) for key, value in columns.items()]
    values, counts = np.unique(columns[rows], return_counts=True)
    return [(value, count / rows.size) for value, count in zip(values.tolist(), counts.tolist())]


def display_name(names, label):
    """``names`` applied to ``label``: a dict lookup, a function, or ``str`` when None."""
    if names is None:
        return str(label)
    if callable(names):
        return str(names(label))
    return str(names.get(label, label))


def mode_content(mode_of_sample, n_modes, fine_labels, names):
    """Per mode, ``(display name, share)`` pairs of its fine labels or attributes, largest first."""
    if fine_labels is None:
        return [[] for _ in range(n_modes)]
    n = len(mode_of_sample)
    if isinstance(fine_labels, dict):
        columns = {key: np.asarray(value) for key, value in fine_labels.items()}
        for key, value in columns.items():
            if value.shape != (n,):
                raise ValueError(f"fine_labels[{key!r}] must have one value per training latent ({n}), "
                                 f"got shape {value.shape}.")
    else:
        columns = np.asarray(fine_labels)
        if columns.shape != (n,):
            raise ValueError(f"fine_labels must have one label per training latent ({n}), got shape {columns.shape}.")
    content = []
    for mode in range(n_modes):
        rows = np.flatnonzero(mode_of_sample == mode)
        parts = _shares(columns, rows) if rows.size else []
        parts = sorted(parts, key=lambda part: -part[1])  # stable: ties keep label order
        content.append([(display_name(names, label), share) for label, share in parts])
    return content


def describe_content(parts, n_shown=1):
    """'mostly digit 1 (94%)' when the top label holds at least half of the mode, else
    'mixed: digit 0 (20%), digit 3 (20%)'; ``n_shown`` labels (at least two when mixed)."""
    if not parts:
        return ""
    mostly = parts[0][1] >= 0.5
    shown = parts[: max(n_shown, 1 if mostly else 2)]
    listed = ", ".join(f"{label} ({share:.0%})" for label, share in shown)
    return f"mostly {listed}" if mostly else f"mixed: {listed}"


def summarise_modes(modes, mode_of_sample, fine_labels, names, class_names):
    """The :class:`ModeSummary` of a fitted finder's ``modes_`` (see ``describe_modes``)."""
    content = mode_content(mode_of_sample, len(modes), fine_labels, names)
    class_sizes = {}
    for mode in modes:
        class_sizes[mode["class"]] = class_sizes.get(mode["class"], 0) + mode["size"]
    summary = ModeSummary()
    for mode, parts in zip(modes, content):
        letter, label = mode_letter(mode["mode"]), display_name(class_names, mode["class"])
        share = mode["size"] / max(class_sizes[mode["class"]], 1)
        head = f"mode {letter} (class {label}, {mode['size']} latents, {share:.0%} of the class)"
        name = f"mode {letter}: {describe_content(parts)}" if parts else f"mode {letter}: class {label}, {share:.0%} of it"
        summary.append({**mode, "letter": letter, "name": name, "share_of_class": share, "content": parts,
                        "summary": f"{head}: {describe_content(parts, 3)}" if parts else head})
    return summary
