"""``asyncsim train``, ``asyncsim sharpness`` and ``asyncsim threshold``: trace-driven training."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .._io import check_output_dir
from ..errors import InputError
from ._app import app
from ._common import Table, console, print_json, progress, user_errors


def _fmt(v, fmt="{:.6g}") -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and v != v:
        return "nan"
    return fmt.format(v)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name)) or "run"


def _get_trace(scenario: Optional[Path], trace: Optional[Path], steps: Optional[int], seed: Optional[int] = None):
    """``(trace, name)`` from a scenario file (simulated for ``steps`` updates) or a trace file."""
    if (scenario is None) == (trace is None):
        raise InputError("give either a SCENARIO file or --trace PATH (exactly one)")
    if trace is not None:
        from ..trace import Trace

        return Trace.load(trace), Path(trace).stem
    import asyncsim

    try:
        sc = asyncsim.load_scenario(scenario)
    except (ImportError, AttributeError) as exc:
        raise InputError(f"scenario loading is not available in this build ({exc})") from None
    try:
        tr = asyncsim.simulate(sc, updates=steps, seed=seed)
    except (ImportError, AttributeError, NotImplementedError) as exc:
        raise InputError(f"simulation is not available in this build ({exc}); use --trace") from None
    return tr, getattr(sc, "name", Path(scenario).stem)


def _optimizer_kwargs(weight_decay, decoupled, momentum_init, schedule, clip, betas, eps) -> dict:
    """replay()'s optimizer keywords from the command line's flags."""
    kw: dict = {"weight_decay": weight_decay, "momentum_init": momentum_init, "schedule": schedule,
                "clip_grad_norm": clip, "eps": eps}
    if decoupled:
        kw["decoupled_weight_decay"] = True
    if betas is not None:
        parts = betas.split(",")
        try:
            kw["betas"] = tuple(float(b) for b in parts)
        except ValueError:
            raise InputError(f"--betas must be two numbers B1,B2, got {betas!r}") from None
        if len(kw["betas"]) != 2:
            raise InputError(f"--betas must be two numbers B1,B2, got {betas!r}")
    return kw


VERDICT_STYLE = {"converged": "green", "unstable": "yellow", "diverged": "red"}


@app.command()
def train(
    scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML (simulated for --steps updates).",
                                              show_default=False),
    trace: Optional[Path] = typer.Option(None, "--trace", help="A saved trace (.parquet, .npz, .csv)."),
    dataset: str = typer.Option("quadratic", "--dataset", "-d",
                                help="quadratic | teacher | digits | a .pt/.npz file with X, y"),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="linear | mlp[:H,...] | cnn[:C] | FILE.py:NAME (your nn.Module)"),
    loss: Optional[str] = typer.Option(None, "--loss",
                                       help="With FILE.py:NAME models: cross_entropy | mse | FILE.py:NAME "
                                            "(default: cross-entropy for class labels, else mse)."),
    optimizer: Optional[str] = typer.Option(None, "--optimizer",
                                            help="sgd | momentum | shifted | adam | adamw (default sgd; on a "
                                                 "local SGD / DiLoCo trace: the policy's inner optimizer)."),
    lr: float = typer.Option(..., "--lr", help="Learning rate η (the peak of a schedule; DiLoCo: the inner lr)."),
    momentum: float = typer.Option(0.0, "--momentum", help="Momentum m (momentum/shifted)."),
    no_dampening: bool = typer.Option(False, "--no-dampening",
                                      help="PyTorch's momentum convention v = m v + g, x -= η v."),
    momentum_init: str = typer.Option("zero", "--momentum-init",
                                      help="zero | gradient (torch.optim.SGD's first buffer)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay",
                                                 help="At the server on the current parameters "
                                                      "(default 0; adamw 1e-2)."),
    decoupled: bool = typer.Option(False, "--decoupled-weight-decay",
                                   help="x(1 - η w) instead of adding w x to the gradient (adamw: always)."),
    schedule: Optional[str] = typer.Option(None, "--schedule",
                                           help="constant | warmup:W | step:S:GAMMA | cosine[:MIN] | "
                                                "warmup:W+cosine (indexed by server update)."),
    clip: Optional[float] = typer.Option(None, "--clip-grad-norm", help="Clip each step's mean gradient to this norm."),
    betas: Optional[str] = typer.Option(None, "--betas", help="Adam's B1,B2 (default 0.9,0.999)."),
    eps: float = typer.Option(1e-8, "--eps", help="Adam's epsilon."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Updates to replay (default: the whole trace)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of initialisation and minibatches."),
    sharpness: Optional[float] = typer.Option(None, "--sharpness", help="λ_max of the quadratic."),
    dim: Optional[int] = typer.Option(None, "--dim", help="Dimension of quadratic/teacher."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Minibatch size per gradient."),
    full_batch: bool = typer.Option(False, "--full-batch", help="Every example in every gradient (no sampling)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | float64"),
    staleness_aware: bool = typer.Option(False, "--staleness-aware", help="η/max(τ,1) per gradient."),
    dc_lambda: float = typer.Option(0.0, "--dc-lambda", help="DC-ASGD delay compensation λ."),
    divergence_factor: float = typer.Option(1e3, "--divergence-factor",
                                            help="Diverged when loss > this × initial loss."),
    unstable_factor: float = typer.Option(2.0, "--unstable-factor",
                                          help="Unstable when the loss rose above this × initial loss."),
    log_every: Optional[int] = typer.Option(None, "--log-every",
                                            help="Log every N updates (default: auto, logs <= 5% of the work)."),
    engine: str = typer.Option("auto", "--replay-engine", help="Training replay engine: auto | sequential | batched."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default ./out/train-<name>)."),
    fmt: str = typer.Option("csv", "--format", help="Metrics format: csv | parquet"),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Replay a staleness trace on a model or quadratic; write metrics (loss and validation
    curves vs update and simulated time) and a loss plot; report converged | unstable | diverged."""
    from ..train import replay

    with user_errors():
        if fmt not in ("csv", "parquet"):
            raise InputError(f"--format must be csv or parquet, got {fmt!r}")
        if batch_size < 1:
            raise InputError(f"--batch-size must be >= 1, got {batch_size}")
        if not (unstable_factor >= 1.0 and unstable_factor < float("inf")):
            raise InputError(f"--unstable-factor must be a finite number >= 1, got {unstable_factor}")
        okw = _optimizer_kwargs(weight_decay, decoupled, momentum_init, schedule, clip, betas, eps)
        tr, name = _get_trace(scenario, trace, steps, seed=None)
        check_output_dir(out if out is not None else Path("out") / f"train-{_safe(name)}")  # before training
        T = tr.n_updates if steps is None else steps
        with progress(disable=json_out) as bar:
            task = bar.add_task(f"training on {name}", total=max(int(T), 1))
            res = replay(tr, dataset=dataset, model=model, loss=loss, optimizer=optimizer, lr=lr,
                         momentum=momentum,
                         dampening=not no_dampening, steps=steps, device=device, seed=seed,
                         batch_size=None if full_batch else batch_size, sharpness=sharpness, dim=dim,
                         dtype=dtype, log_every="auto" if log_every is None else log_every,
                         divergence_factor=divergence_factor, unstable_factor=unstable_factor,
                         engine=engine, staleness_aware=staleness_aware, dc_lambda=dc_lambda,
                         progress=lambda done, total: bar.update(task, completed=done), **okw)
        outdir = out if out is not None else Path("out") / f"train-{_safe(name)}"
        metrics = res.save_metrics(outdir / f"metrics.{fmt}")
        title = f"{name}: {res.dataset}{'/' + res.model if res.model else ''}, {res.optimizer}, lr={lr:g}"
        png = res.plot(outdir / "loss.png", title=title)
    d = res.to_dict()
    d.update({"trace": name, "metrics": str(metrics), "plot": str(png)})
    if json_out:
        print_json(d)
        return
    t = Table(title=title, header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    style = VERDICT_STYLE.get(res.verdict, "")
    rows = [
        ("verdict", f"[{style}]{res.verdict}[/]" + (f" at update {res.diverged_step}" if res.diverged else "")),
        ("updates replayed", f"{res.steps:,}"),
        ("initial loss", _fmt(res.initial_loss)),
        ("highest logged loss", _fmt(float(max(res.loss)) if len(res.loss) else None)),
        ("final loss", _fmt(res.final_loss)),
        ("validation loss", _fmt(res.val_loss)),
        ("validation accuracy", _fmt(res.val_accuracy, "{:.2%}")),
        ("simulated time", _fmt(d["sim_time"], "{:.4g} s")),
        ("engine / device", f"{res.engine} / {res.device}"),
        ("wall time", f"{res.wall_time_s:.3g} s ({res.updates_per_s:,.0f} updates/s)"),
        ("max live parameter versions", str(res.max_live_versions)),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    console.print(f"metrics: [bold]{metrics}[/]   plot: [bold]{png}[/]")


@app.command("sharpness")
def sharpness_cmd(
    dataset: str = typer.Option("quadratic", "--dataset", "-d", help="quadratic | teacher | digits | file"),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="linear | mlp[:H,...] | cnn[:C] | FILE.py:NAME (your nn.Module)"),
    loss: Optional[str] = typer.Option(None, "--loss",
                                       help="With FILE.py:NAME models: cross_entropy | mse | FILE.py:NAME "
                                            "(default: cross-entropy for class labels, else mse)."),
    sharpness: Optional[float] = typer.Option(None, "--sharpness", help="λ_max of the quadratic."),
    dim: Optional[int] = typer.Option(None, "--dim", help="Dimension of quadratic/teacher."),
    from_minimum: bool = typer.Option(False, "--from-minimum",
                                      help="Measure at a minimum reached by SGD without delay."),
    steps: int = typer.Option(500, "--pretrain-steps", help="SGD steps without delay for --from-minimum."),
    lr: Optional[float] = typer.Option(None, "--pretrain-lr",
                                       help="Learning rate of those steps (default min(0.5, 1/a0))."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Minibatch size of one gradient."),
    method: str = typer.Option("lanczos", "--method", help="lanczos | power"),
    tol: float = typer.Option(1e-6, "--tol", help="Relative tolerance."),
    max_iter: int = typer.Option(100, "--max-iter", help="Cap on Hessian-vector products."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of the data, the start vector and pre-training."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """λ_max of the training-loss Hessian (Lanczos on Hessian-vector products)."""
    from ..train import find_minimum, make_problem, sharpness_info

    with user_errors():
        prob = make_problem(dataset, model, device=device, dtype="float64", dim=dim, sharpness=sharpness,
                            batch_size=batch_size, loss=loss)
        x = None
        if from_minimum:
            if lr is not None and not (lr > 0 and lr < float("inf")):
                raise InputError(f"--lr must be a finite number > 0, got {lr}")
            x = find_minimum(prob, steps=steps, lr=lr, seed=seed)
        info = sharpness_info(prob, params=x, method=method, tol=tol, max_iter=max_iter, seed=seed)
    d = info.to_dict()
    d.update({"dataset": prob.name, "model": prob.model_name, "from_minimum": from_minimum,
              "gd_lr_limit": 2.0 / info.value if info.value > 0 else None})
    if json_out:
        print_json(d)
        return
    t = Table(title=f"sharpness of {prob.name}{'/' + prob.model_name if prob.model_name else ''}",
              header_style="bold")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    for k, v in (("λ_max (a)", _fmt(info.value)), ("GD limit 2/a", _fmt(d["gd_lr_limit"])),
                 ("method", method), ("Hessian-vector products", str(info.hvps)),
                 ("converged", "yes" if info.converged else "no"), ("loss there", _fmt(info.loss))):
        t.add_row(k, v)
    console.print(t)


@app.command()
def threshold(
    scenario: Optional[Path] = typer.Argument(None, help="Scenario YAML (or use --trace).", show_default=False),
    trace: Optional[Path] = typer.Option(None, "--trace", help="A saved trace (.parquet, .npz, .csv)."),
    dataset: str = typer.Option("quadratic", "--dataset", "-d",
                                help="quadratic | teacher | digits | a .pt/.npz file with X, y"),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="linear | mlp[:H,...] | cnn[:C] | FILE.py:NAME (your nn.Module)"),
    loss: Optional[str] = typer.Option(None, "--loss", help="With FILE.py:NAME models: cross_entropy | mse | "
                                                            "FILE.py:NAME."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd | momentum | shifted | adam | adamw"),
    momentum: float = typer.Option(0.0, "--momentum", help="Momentum m (momentum/shifted)."),
    no_dampening: bool = typer.Option(False, "--no-dampening",
                                      help="PyTorch's momentum convention v = m v + g, x -= η v."),
    from_minimum: bool = typer.Option(False, "--from-minimum",
                                      help="Start from a minimum reached without delay (the paper's protocol)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Updates replayed per trial."),
    pretrain_steps: int = typer.Option(500, "--pretrain-steps", help="SGD steps without delay for --from-minimum."),
    pretrain_lr: Optional[float] = typer.Option(None, "--pretrain-lr", help="Learning rate of those steps "
                                                "(default min(0.5, 1/a0))."),
    sharpness: Optional[float] = typer.Option(None, "--sharpness", help="λ_max of the quadratic."),
    dim: Optional[int] = typer.Option(None, "--dim", help="Dimension of quadratic/teacher."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Minibatch size per gradient."),
    rtol: float = typer.Option(0.01, "--rtol", help="Stop when lr_diverged/lr_stable - 1 <= rtol."),
    lrs_per_round: int = typer.Option(4, "--lrs-per-round", help="Learning rates replayed per batched pass."),
    divergence_factor: float = typer.Option(1e3, "--divergence-factor",
                                            help="Diverged when loss > this × initial loss."),
    seed: int = typer.Option(0, "--seed", "-s", help="Seed of initialisation and minibatches."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
) -> None:
    """Largest non-diverging learning rate by bisection, next to the stability predictions α*/a."""
    from ..train import empirical_threshold

    with user_errors():
        tr, name = _get_trace(scenario, trace, steps)
        with progress(disable=json_out) as bar:
            bar.add_task(f"bisecting the learning rate on {name}", total=None)
            res = empirical_threshold(tr, dataset=dataset, model=model, loss=loss, optimizer=optimizer,
                                      momentum=momentum,
                                      dampening=not no_dampening, from_minimum=from_minimum, steps=steps,
                                      seed=seed, batch_size=batch_size, sharpness=sharpness, dim=dim,
                                      device=device, rtol=rtol, lrs_per_round=lrs_per_round,
                                      pretrain_steps=pretrain_steps, pretrain_lr=pretrain_lr,
                                      divergence_factor=divergence_factor)
    d = res.to_dict()
    d["trace"] = name
    if json_out:
        print_json(d)
        return
    t = Table(title=f"stability threshold on {name} ({res.optimizer}, sharpness a = {res.sharpness:.6g})",
              header_style="bold")
    for c in ("source", "α = a·η", "η", "empirical / predicted"):
        t.add_column(c, justify="right" if c != "source" else "left")
    t.add_row("empirical (largest stable)", _fmt(res.alpha), _fmt(res.lr), "1")
    t.add_row("empirical (smallest diverging)", _fmt(d["alpha_diverged"]), _fmt(res.lr_diverged), "")
    for crit, p in res.predictions.items():
        ratio = (res.alpha / p["alpha_star"]) if (res.alpha and p.get("alpha_star")) else None
        t.add_row(f"predicted: {crit}", _fmt(p.get("alpha_star")), _fmt(p.get("lr")), _fmt(ratio, "{:.3f}"))
    console.print(t)
    if res.predictions_error:
        console.print(f"[yellow]stability predictions: {res.predictions_error}[/]")
    for n in res.notes:
        console.print(f"[yellow]note: {n}[/]")
