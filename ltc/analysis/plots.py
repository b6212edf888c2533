"""Every figure of the analyses (matplotlib, Agg backend), one function per figure.

Each function takes the numbers a computation of ltc/analysis/subcommands.py returned, saves
one PNG and returns its path; none computes anything the CSV/JSON files do not also hold.
"""
import numpy as np

from ltc.analysis import trainlog

DPI = 90


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    plt = _plt()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def rgb(img):
    """BGR uint8 image -> RGB for matplotlib."""
    return np.ascontiguousarray(np.asarray(img)[:, :, ::-1])


def image_grid(path, images, captions=None, ncols=4, title=None, cell=2.0, border=None, row_labels=None):
    """Save a grid of BGR images (None = empty cell) with optional captions and coloured borders."""
    plt = _plt()
    n = len(images)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, cell * nrows + (0.5 if title else 0)), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n or images[k] is None:
            ax.axis("off")
            continue
        ax.imshow(rgb(images[k]), interpolation="bilinear")
        if captions is not None and captions[k]:
            ax.set_title(captions[k], fontsize=7)
        color = border[k] if border is not None else None
        for sp in ax.spines.values():
            sp.set_visible(color is not None)
            if color is not None:
                sp.set_edgecolor(color)
                sp.set_linewidth(3)
        if row_labels is not None and k % ncols == 0 and row_labels[k // ncols]:
            ax.set_ylabel(row_labels[k // ncols], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (cell * nrows + 0.5)) if title else None)
    return _save(fig, path)


def table5_figure(path, matrix, std, train_methods, test_methods, n_images):
    """Table 5 as a heat map: rows = training downsampling, columns = test downsampling + std."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * 6 + 1, 0.6 * len(train_methods) + 1.5))
    mat = np.column_stack([matrix, std])
    im = ax.imshow(matrix, cmap="viridis", aspect="auto")
    for r in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            ax.text(j, r, "%.3f" % mat[r, j], ha="center", va="center", fontsize=9,
                    color="black" if j == 5 else "white")
    ax.set_xticks(range(6))
    ax.set_xticklabels([t.capitalize() for t in test_methods] + ["std"])
    ax.set_xlim(-0.5, 5.5)
    ax.set_yticks(range(len(train_methods)))
    ax.set_yticklabels([m.capitalize() for m in train_methods])
    ax.set_xlabel("test downsampling")
    ax.set_ylabel("train downsampling")
    ax.set_title("Table 5: eq. 6 error (%d images)" % n_images, fontsize=10)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _save(fig, path)


def mean_vector_figure(path, st, n_images, threshold):
    """Fig. 3: the mean counting vector by entry, and sorted."""
    plt = _plt()
    dim = len(st["mean"])
    fig, axes = plt.subplots(2, 1, figsize=(10, 6))
    axes[0].bar(np.arange(dim), st["mean"], width=1.0, color="tab:blue")
    axes[0].set_xlim(-0.5, dim - 0.5)
    axes[0].set_xlabel("counting-vector entry")
    axes[0].set_ylabel("mean response")
    axes[0].set_title("Fig. 3: mean counting vector, %d images; %d of %d entries > 0, %d > %g"
                      % (n_images, st["n_nonzero"], dim, st["n_above_threshold"], threshold), fontsize=10)
    srt = np.sort(st["mean"])[::-1]
    axes[1].bar(np.arange(dim), srt, width=1.0, color="tab:orange")
    axes[1].axhline(threshold, color="k", lw=0.8, ls="--", label="threshold %g" % threshold)
    axes[1].set_xlim(-0.5, min(dim, max(50, 2 * st["n_above_threshold"])) - 0.5)
    axes[1].set_xlabel("entries sorted by mean response")
    axes[1].set_ylabel("mean response")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def crop_scale_figure(path, sets, set_size):
    """Fig. 6: mean +- std of the norm per crop-scale bin, for the highest- and lowest-norm sets."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for set_name, col, off in (("highest", "tab:red", -0.004), ("lowest", "tab:blue", 0.004)):
        b = sets[set_name]["bins"]
        ax.errorbar([x["center"] + off for x in b], [x["mean"] for x in b], yerr=[x["std"] for x in b],
                    marker="o", capsize=3, color=col, label="%s-norm set (%d images)" % (set_name, set_size))
    ax.set_xlabel("crop area / image area")
    ax.set_ylabel("counting vector norm (mean +- std)")
    ax.set_title("Fig. 6: norm against crop scale", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def count_check_figure(path, k, norms, per_k, rho, seed):
    """The norm of every image against its object count (jittered), with the per-count mean +- std."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    jitter = np.random.default_rng(seed).uniform(-0.15, 0.15, len(k))
    ax.scatter(k + jitter, norms, s=6, alpha=0.4, color="tab:gray", label="images")
    ax.errorbar([r["k"] for r in per_k], [r["mean"] for r in per_k], yerr=[r["std"] for r in per_k], marker="o",
                color="tab:red", capsize=3, label="mean +- std per count")
    ax.set_xlabel("true object count k")
    ax.set_ylabel("counting vector norm")
    ax.set_title("Counting check: Spearman rho = %.3f (n = %d)" % (rho, len(k)), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def lr_changes(lr_rows):
    """Whether the learning rate of a parsed log ([(iteration, lr)]) takes more than one value."""
    return len({v for _, v in lr_rows}) > 1


def curves_figure(path, res, margin, warnings=(), title=None):
    """Save curves_fig's figure to ``path``."""
    return _save(curves_fig(res, margin, warnings, title), path)


def curves_fig(res, margin, warnings=(), title=None):
    """Training curves of a parsed Caffe log (ltc.analysis.caffelog.parse_caffe_log).

    Panels: the losses; the learning rate with the wall time, only when the learning rate
    changes (a constant one, and the wall time, are a note in the loss panel's title); the
    loss layer's diagnostic tops when the log has them, with their legend below the panel.
    """
    plt = _plt()
    diag = any(trainlog.series(res[ph], ph, "norm_dx") for ph in ("train", "test"))
    show_lr = lr_changes(res["lr"])
    panels = 1 + show_lr + diag
    fig, axes = plt.subplots(1, panels, figsize=(5.4 * panels, 4.6 if diag else 4), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    if res["train"]:
        ax.plot([r["iteration"] for r in res["train"]], [r["loss"] for r in res["train"]], ".-", label="train loss")
    tests = {}
    for r in res["test"]:
        for key, v in r.items():
            if key.startswith("test_") and "loss" in key:
                tests.setdefault("net %d %s" % (r["net"], key[5:]), []).append((r["iteration"], v))
    for name, pts in tests.items():
        ax.plot(*zip(*pts), "o-", label="test " + name)
    losses = [r["loss"] for r in res["train"]] + [v for pts in tests.values() for _, v in pts]
    if losses and min(losses) > 0 and max(losses) / min(losses) > 50:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    secs = [(r["iteration"], r["seconds"]) for r in res["train"] if r.get("seconds") is not None]
    note = []
    if res["lr"] and not show_lr:
        note.append("lr %g (constant)" % res["lr"][0][1])
    if secs and not show_lr:
        note.append("%.0f s to iteration %d" % (secs[-1][1], secs[-1][0]))
    ax.set_title((title or "losses") + ("\n" + ", ".join(note) if note else ""), fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    if show_lr:
        ax = axes.pop(0)
        ax.plot(*zip(*res["lr"]), ".-", color="tab:green", drawstyle="steps-post", label="learning rate")
        ax.set_ylabel("learning rate")
        ax.set_xlabel("iteration")
        handles, labels = ax.get_legend_handles_labels()
        if secs:
            ax2 = ax.twinx()
            ax2.plot(*zip(*secs), color="tab:purple", lw=1, label="wall time")
            ax2.set_ylabel("wall time (s)")
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        ax.legend(handles, labels, fontsize=8, loc="best")
        ax.set_title("learning rate and wall time", fontsize=10)
    if diag:   # the loss layer's diagnostic tops
        ax = axes.pop(0)
        ax2 = ax.twinx()
        for ph, style in (("train", "-"), ("test", "o--")):
            for name, color in (("count_term", "tab:blue"), ("contrast_term", "tab:orange")):
                pts = trainlog.series(res[ph], ph, name)
                if pts:
                    ax.plot(*zip(*pts), style, color=color, ms=3, label="%s %s" % (ph, name))
            for name, color in (("hinge_active", "tab:red"), ("norm_dx", "tab:green")):
                pts = trainlog.series(res[ph], ph, name)
                if pts:
                    ax2.plot(*zip(*pts), style, color=color, ms=3, lw=1, label="%s %s (right)" % (ph, name))
        ax.axhline(margin, color="gray", lw=0.8, ls=":")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss terms (M dotted)")
        ax2.set_ylabel("hinge-active fraction, mean |phi(Dx)|")
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        # below the panel, outside the axes: the curves stay visible
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                  frameon=False)
        ax.set_title("loss diagnostics" + ("  [TRIVIAL SOLUTION]" if warnings else ""), fontsize=10,
                     color="red" if warnings else "black")
    fig.tight_layout()
    return fig
