r"""Train DeepSphere to tell apart two cosmologies from weak-lensing convergence maps.

The task of Perraudin et al. (2019): maps of two LCDM models with (nearly) the same power
spectrum, cut into nested HEALPix patches of order :math:`o`, classified by
:class:`~pyg_sphere.nn.models.DeepSphere` under additive Gaussian noise of a level relative to
the maps' standard deviation. Usage::

    python -m pyg_sphere.train_cosmo --nside 128 --order 2 --noise 1.0 --epochs 10 --out runs/a
    pyg-sphere-train-cosmo --resume --out runs/a --epochs 20          # continue that run
    pyg-sphere-train-cosmo --nside 128 --order 2 --noise 1.5 --init runs/a/best.pt --out runs/c
    torchrun --nproc_per_node 2 -m pyg_sphere.train_cosmo --out runs/b  # data-parallel

Without maps in ``--data-dir`` (``raw/manifest.csv``), a small power-matched collection is
simulated there first (:func:`~pyg_sphere.datasets.simulate_convergence_maps`); any other
collection in the :class:`~pyg_sphere.datasets.ConvergenceMaps` layout works too.

Training: Adam, learning rate ``--lr`` decayed by 0.999 per step (the paper), cross-entropy;
batches on one shared graph (:class:`~pyg_sphere.loader.SharedGraphLoader`); fresh noise for
every training sample at every epoch, fixed seeded noise for validation and test
(:class:`~pyg_sphere.transforms.AddGaussianNoise`). Validation after every epoch; the best
epoch (validation accuracy, then loss) is kept and evaluated on the test split at the end.

Writes into ``--out`` (only rank 0 when distributed, every file atomically):
``last.pt`` and ``best.pt`` (model config and weights, optimizer, scheduler, epoch, history and
RNG states), ``metrics.json``, ``history.csv``, ``example_maps.png``, ``learning_curves.png``
and ``confusion_matrix.png``.

Deterministic on CPU for a given ``--seed``: every epoch reseeds torch from
``(seed, epoch, rank)``, so ``--resume`` continues exactly as an uninterrupted run.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import os.path as osp
import random
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DistributedSampler, Subset

from .datasets import ConvergenceMaps, simulate_convergence_maps
from .loader import SharedGraphLoader
from .transforms import AddGaussianNoise

__all__ = ['main', 'run', 'build_parser', 'train', 'check_compatible', 'load_checkpoint',
           'model_from_checkpoint']

HISTORY_FIELDS = ('epoch', 'train_loss', 'train_acc', 'val_loss', 'val_acc', 'lr', 'seconds')


# ----- command line ---------------------------------------------------------------------------
def _channels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(c) for c in text.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError(f"channels must be integers separated by commas, e.g. "
                                         f"16,32,64,64,64; got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"channels must be positive integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of :func:`run` and :func:`main`.

    Example::

        >>> args = build_parser().parse_args(['--nside', '256', '--order', '4', '--noise', '2'])
        >>> args.lr, args.lr_decay, args.channels, args.device
        (0.0002, 0.999, (16, 32, 64, 64, 64), 'auto')
    """
    p = argparse.ArgumentParser(
        prog='pyg-sphere-train-cosmo',
        description="Train DeepSphere to classify convergence maps of two cosmologies "
                    "(simulates a small collection on first use).")
    data = p.add_argument_group('data')
    data.add_argument('--data-dir', default=None,
                      help="ConvergenceMaps root (raw/manifest.csv); simulated there if absent "
                           "(default: ./data/cosmo_nside{nside})")
    data.add_argument('--nside', type=int, default=64, help="HEALPix resolution (default 64)")
    data.add_argument('--order', type=int, default=1,
                      help="patch order: 12*order^2 patches per map (default 1)")
    data.add_argument('--noise', type=float, default=0.0,
                      help="noise std relative to the maps' std (paper: 0 to 2; default 0)")
    data.add_argument('--n-per-class', type=int, default=12,
                      help="maps per class when simulating (default 12; split 60/20/20)")
    data.add_argument('--power-matched', action=argparse.BooleanOptionalAction, default=True,
                      help="simulate the power-matched model 2, so that only non-Gaussian "
                           "information separates the classes (default: on)")
    data.add_argument('--smoothing', type=float, default=None,
                      help="Gaussian smoothing FWHM in arcmin before resampling (default none)")
    model = p.add_argument_group('model')
    model.add_argument('--k', type=int, default=8, help="neighbours per pixel (default 8)")
    model.add_argument('--channels', type=_channels, default=(16, 32, 64, 64, 64),
                       help="channels per level, each level pools by 4 (default 16,32,64,64,64)")
    model.add_argument('--K', type=int, default=5, help="Chebyshev polynomial order (default 5)")
    model.add_argument('--head', choices=('fcn', 'cnn'), default='fcn',
                       help="fcn: Chebyshev layer + global average (default); cnn: linear")
    model.add_argument('--dropout', type=float, default=0.0)
    opt = p.add_argument_group('optimisation')
    opt.add_argument('--epochs', type=int, default=10, help="total epochs (default 10)")
    opt.add_argument('--batch-size', type=int, default=32,
                     help="samples per step and per process (default 32)")
    opt.add_argument('--lr', type=float, default=2e-4,
                     help="Adam learning rate, times 0.999 per step (default 2e-4)")
    opt.add_argument('--lr-decay', type=float, default=0.999, help="per-step decay (0.999)")
    opt.add_argument('--weight-decay', type=float, default=0.0)
    run = p.add_argument_group('run')
    run.add_argument('--out', default='runs/train_cosmo', help="output directory")
    run.add_argument('--init', default=None, metavar='CHECKPOINT',
                     help="start from the weights of this checkpoint (e.g. best.pt of a run at a "
                          "lower noise level, or on patches of another order with the fcn head) "
                          "instead of random ones; fresh optimizer")
    run.add_argument('--resume', action='store_true',
                     help="continue from OUT/last.pt (same options; --epochs may be raised)")
    run.add_argument('--device', default='auto', help="auto (cuda if available), cpu, cuda:0, ...")
    run.add_argument('--seed', type=int, default=0)
    run.add_argument('--num-workers', type=int, default=0, help="data-loading processes")
    run.add_argument('--threads', type=int, default=None,
                     help="torch CPU threads per process (default: torch's choice)")
    run.add_argument('--no-figures', action='store_true', help="skip the PNG figures")
    run.add_argument('--quiet', action='store_true', help="no progress bar")
    return p


def _check_args(args) -> None:
    def pow2(n):
        return isinstance(n, int) and n >= 1 and n & (n - 1) == 0
    if not pow2(args.nside):
        raise ValueError(f"--nside must be a power of 2, got {args.nside}")
    if not pow2(args.order) or args.order > args.nside:
        raise ValueError(f"--order must be a power of 2 no larger than --nside, got {args.order}")
    side = args.nside // args.order
    if side < 2 ** len(args.channels):
        raise ValueError(
            f"patches of order {args.order} at nside {args.nside} are {side}x{side} pixels: too "
            f"small for {len(args.channels)} poolings by 4 (needs a side of at least "
            f"{2 ** len(args.channels)}); lower --order, raise --nside or give fewer --channels")
    for name in ('epochs', 'batch_size', 'n_per_class', 'k', 'K'):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.noise >= 0:
        raise ValueError(f"--noise must be >= 0, got {args.noise}")
    if not args.lr > 0 or not 0 < args.lr_decay <= 1:
        raise ValueError("--lr must be > 0 and --lr-decay in (0, 1]")


# ----- distributed helpers --------------------------------------------------------------------
def _init_distributed(device_arg: str):
    """Starts the process group when launched by torchrun; returns (rank, world, device)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    want_cuda = device_arg == 'auto' and torch.cuda.is_available() or device_arg.startswith('cuda')
    if world > 1:
        local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        if want_cuda:
            device = torch.device('cuda', local_rank)
            torch.cuda.set_device(device)
        else:
            device = torch.device('cpu')
        if not dist.is_initialized():
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
        return dist.get_rank(), world, device
    if device_arg == 'auto':
        return 0, 1, torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    return 0, 1, torch.device(device_arg)


def _barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def _all_sum(values: Sequence[float], world: int, device) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(t)
    return t.tolist()


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


# ----- data -----------------------------------------------------------------------------------
def default_data_dir(nside: int) -> str:
    return osp.join('data', f'cosmo_nside{nside}')


def prepare_data(args, rank: int = 0, world: int = 1) -> dict[str, ConvergenceMaps]:
    """Simulates the default collection if needed (rank 0), then opens the three splits."""
    root = args.data_dir or default_data_dir(args.nside)
    manifest = osp.join(root, 'raw', 'manifest.csv')
    if rank == 0 and not osp.isfile(manifest):
        print(f"No maps in {root}: simulating {args.n_per_class} per class at nside "
              f"{args.nside} (power_matched={args.power_matched})", flush=True)
        # Seed 0 whatever --seed is: the default collection is always the same maps.
        simulate_convergence_maps(root, args.n_per_class, args.nside, seed=0,
                                  power_matched=args.power_matched, progress=not args.quiet)
    kwargs = dict(nside=args.nside, order=args.order, k=args.k,
                  smoothing_arcmin=args.smoothing, log=False)
    if rank == 0:  # process once before the other ranks read the cache
        ConvergenceMaps(root, split='train', **kwargs)
    _barrier(world)
    splits = {s: ConvergenceMaps(root, split=s, **kwargs) for s in ('train', 'val', 'test')}
    for s, ds in splits.items():
        if len(ds) == 0:
            raise ValueError(f"the {s} split of {root} is empty: simulate more maps "
                             f"(--n-per-class) or give the manifest a split column")
    std = splits['train'].map_std
    splits['train'].transform = AddGaussianNoise(args.noise, std)  # fresh every access
    splits['val'].transform = AddGaussianNoise(args.noise, std, seed=args.seed + 1)
    splits['test'].transform = AddGaussianNoise(args.noise, std, seed=args.seed + 2)
    return splits


def check_compatible(config: dict, dataset: ConvergenceMaps) -> None:
    """Raises ``ValueError`` if a model configuration does not fit a dataset's patches.

    Checks the resolution, the region (pixel count and ids of the shared patch graph) and the
    number of classes, and says what differs.
    """
    problems = []
    if int(config['nside']) != dataset.nside:
        problems.append(f"nside: model {config['nside']}, data {dataset.nside}")
    pixels = config.get('pixels')
    n_model = len(pixels) if pixels is not None else 12 * int(config['nside']) ** 2
    if n_model != dataset.patch_size:
        problems.append(f"pixels per sample: model {n_model} (a region of "
                        f"{'the full sphere' if pixels is None else 'a patch'}), data "
                        f"{dataset.patch_size} (order-{dataset.order} patches)")
    elif pixels is not None and not torch.equal(torch.as_tensor(pixels).long().cpu(),
                                                dataset.patch_pixels(0).long()):
        problems.append("region: the model's pixels are not the data's patch-0 pixels")
    if int(config['out_channels']) != dataset.num_classes:
        problems.append(f"classes: model {config['out_channels']}, data {dataset.num_classes}")
    if problems:
        raise ValueError("the model does not match the data (" + '; '.join(problems) + "): "
                         "train a new model for this data, or use the nside/order it was "
                         "trained on")


# ----- model and checkpoints ------------------------------------------------------------------
def _deepsphere():
    from .nn.models import DeepSphere
    return DeepSphere


def build_model(args, dataset: ConvergenceMaps):
    return _deepsphere()(
        1, dataset.num_classes, dataset.nside, pixels=dataset.patch_pixels(0),
        channels=tuple(args.channels), K=args.K, pool='max', head=args.head, k=args.k,
        batch_norm=True, dropout=args.dropout)


def _atomic_write(path: str, write) -> None:
    """Calls ``write(file)`` on a temporary file next to ``path`` and renames it."""
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        with open(tmp, 'wb') as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def _atomic_text(path: str, text: str) -> None:
    _atomic_write(path, lambda f: f.write(text.encode()))


def _rng_states() -> dict:
    states = {'torch': torch.get_rng_state(), 'numpy': np.random.get_state(),
              'python': random.getstate()}
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states['torch'])
    np.random.set_state(states['numpy'])
    random.setstate(states['python'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def load_checkpoint(path: str, map_location='cpu') -> dict:
    """Reads a checkpoint written by :func:`train` (``best.pt`` or ``last.pt``).

    Checkpoints hold pickled RNG states and options: load only checkpoints you trust.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f"no checkpoint at {path}: train first, or drop --resume/--init")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(ckpt, dict) or 'config' not in ckpt or 'state_dict' not in ckpt:
        raise ValueError(f"{path} is not a checkpoint of pyg_sphere.train_cosmo (no model "
                         "config and state_dict)")
    return ckpt


def model_from_checkpoint(ckpt: dict):
    """Rebuilds the model of a checkpoint (``DeepSphere.from_config``) and loads its weights."""
    model = _deepsphere().from_config(ckpt['config'])
    model.load_state_dict(ckpt['state_dict'])
    return model


_RESUME_KEYS = ('nside', 'order', 'noise', 'k', 'channels', 'K', 'head', 'dropout', 'batch_size',
                'lr', 'lr_decay', 'weight_decay', 'seed', 'power_matched', 'smoothing')


def _check_resume(ckpt: dict, args, dataset: ConvergenceMaps) -> None:
    old = ckpt.get('args', {})
    diff = [f"--{k.replace('_', '-')} {old[k]!r} -> {getattr(args, k)!r}" for k in _RESUME_KEYS
            if k in old and _norm(old[k]) != _norm(getattr(args, k))]
    if diff:
        raise ValueError("--resume needs the options of the interrupted run; changed: "
                         + ', '.join(diff) + " (only --epochs, --device, --num-workers and "
                         "--quiet may change)")
    check_compatible(ckpt['config'], dataset)


def _norm(v):
    return list(v) if isinstance(v, (tuple, list)) else v


# ----- training -------------------------------------------------------------------------------
def _forward(model, batch, scale: float, device):
    return model(batch.x.to(device, non_blocking=True) / scale)


def evaluate(model, loader, scale: float, device, world: int = 1,
             num_classes: int = 2) -> dict:
    """Loss, accuracy and confusion matrix over a loader (summed over ranks)."""
    model.eval()
    total = correct = loss_sum = 0.0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    with torch.no_grad():
        for batch in loader:
            y = batch.y.to(device)
            out = _forward(model, batch, scale, device)
            loss_sum += F.cross_entropy(out, y, reduction='sum').item()
            pred = out.argmax(-1)
            correct += (pred == y).sum().item()
            total += len(y)
            confusion.index_put_((y.cpu(), pred.cpu()), torch.ones(len(y), dtype=torch.float64),
                                 accumulate=True)
    sums = _all_sum([total, correct, loss_sum, *confusion.flatten().tolist()], world, device)
    total, correct, loss_sum = sums[:3]
    return {'loss': loss_sum / max(total, 1), 'acc': correct / max(total, 1), 'count': int(total),
            'confusion': np.asarray(sums[3:]).reshape(num_classes, num_classes).astype(int)}


def _shard(dataset, rank: int, world: int):
    """Every world-th sample from rank: an exact partition for distributed evaluation."""
    return dataset if world == 1 else Subset(dataset, range(rank, len(dataset), world))


def train(args) -> dict:
    """Runs a training as described by parsed options; returns the metrics (rank 0 writes them).

    Returns:
        dict with ``history`` (one dict per epoch), ``best_epoch``, ``best_val_acc``,
        ``test_acc``, ``test_loss``, ``confusion_matrix``, ``config`` and ``args``.
    """
    _check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device = _init_distributed(args.device)
    main_rank = rank == 0
    try:
        torch.manual_seed(args.seed)
        splits = prepare_data(args, rank, world)
        train_set = splits['train']
        scale = float(train_set.map_std)  # inputs in units of the noiseless maps' std
        out_dir = args.out
        if main_rank:
            os.makedirs(out_dir, exist_ok=True)

        ckpt = None
        last_path = osp.join(out_dir, 'last.pt')
        if args.resume:
            ckpt = load_checkpoint(last_path)
            _check_resume(ckpt, args, train_set)
        torch.manual_seed(args.seed)  # same initial weights on every rank
        model = build_model(args, train_set).to(device)
        model.check_data(train_set.graph)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr,
                                     weight_decay=args.weight_decay)
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=args.lr_decay)
        history, start_epoch, best = [], 0, {'epoch': -1, 'val_acc': -1.0, 'val_loss': math.inf}
        best_state = None
        if args.init and ckpt is None:
            # Fine-tuning: the weights only, fresh optimizer and schedule.
            init = load_checkpoint(args.init)
            config = dict(init['config'])
            if config.get('head') == 'fcn':
                # Filters act on neighbourhoods and the head averages over pixels: a fully
                # convolutional model's weights fit every region at its nside, so a model
                # trained on patches of another order is a valid start.
                config['pixels'] = model.config['pixels']
            model.load_checkpoint_state(init['state_dict'], config)
        if ckpt is not None:
            model.load_checkpoint_state(ckpt['state_dict'], ckpt['config'])
            optimizer.load_state_dict(ckpt['optimizer'])
            scheduler.load_state_dict(ckpt['scheduler'])
            history, start_epoch, best = ckpt['history'], ckpt['epoch'] + 1, ckpt['best']
            best_path = osp.join(out_dir, 'best.pt')
            if osp.isfile(best_path):
                best_state = load_checkpoint(best_path)['state_dict']
            _set_rng_states(ckpt['rng'])
        net = model
        if world > 1:
            net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == 'cuda' else None)

        sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True,
                                     seed=args.seed, drop_last=False)
        loader_gen = torch.Generator()
        common = dict(num_workers=args.num_workers, pin_memory=device.type == 'cuda',
                      persistent_workers=False)
        train_loader = SharedGraphLoader(train_set, batch_size=args.batch_size, sampler=sampler,
                                         generator=loader_gen, **common)
        eval_loaders = {s: SharedGraphLoader(_shard(splits[s], rank, world),
                                             batch_size=2 * args.batch_size,
                                             graph=splits[s].graph, **common)
                        for s in ('val', 'test')}
        num_classes = train_set.num_classes

        if main_rank and not args.no_figures and start_epoch == 0:
            plot_example_maps(splits['test'], osp.join(out_dir, 'example_maps.png'))

        from tqdm.auto import tqdm
        t_start = time.perf_counter()
        for epoch in range(start_epoch, args.epochs):
            t0 = time.perf_counter()
            # Randomness of an epoch (shuffle, noise, dropout) depends on (seed, epoch, rank)
            # only: runs are reproducible and --resume continues exactly.
            epoch_seed = _epoch_seed(args.seed, epoch, rank)
            torch.manual_seed(epoch_seed)
            loader_gen.manual_seed(epoch_seed)
            sampler.set_epoch(epoch)
            net.train()
            loss_sum = correct = count = 0.0
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{args.epochs}", unit='batch',
                       disable=args.quiet or not main_rank, leave=False, file=sys.stdout)
            for batch in bar:
                y = batch.y.to(device)
                out = _forward(net, batch, scale, device)
                loss = F.cross_entropy(out, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.item() * len(y)
                correct += (out.argmax(-1) == y).sum().item()
                count += len(y)
                bar.set_postfix(loss=f'{loss_sum / count:.3f}', acc=f'{correct / count:.3f}')
            bar.close()
            count, correct, loss_sum = _all_sum([count, correct, loss_sum], world, device)
            val = evaluate(model, eval_loaders['val'], scale, device, world, num_classes)
            row = {'epoch': epoch + 1, 'train_loss': loss_sum / count,
                   'train_acc': correct / count, 'val_loss': val['loss'], 'val_acc': val['acc'],
                   'lr': scheduler.get_last_lr()[0], 'seconds': time.perf_counter() - t0}
            history.append(row)
            improved = (val['acc'], -val['loss']) > (best['val_acc'], -best['val_loss'])
            if improved:
                best = {'epoch': epoch + 1, 'val_acc': val['acc'], 'val_loss': val['loss']}
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if main_rank:
                print(f"epoch {epoch + 1}/{args.epochs}  train loss {row['train_loss']:.4f} "
                      f"acc {row['train_acc']:.3f} | val loss {val['loss']:.4f} acc "
                      f"{val['acc']:.3f}{'  (best)' if improved else ''}  [{row['seconds']:.0f} s]",
                      flush=True)
                state = {'config': model.config, 'state_dict': model.state_dict(),
                         'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
                         'epoch': epoch, 'best': best, 'history': history, 'rng': _rng_states(),
                         'args': vars(args), 'input_scale': scale,
                         'data': {'nside': train_set.nside, 'order': train_set.order}}
                if improved:
                    _atomic_write(osp.join(out_dir, 'best.pt'), lambda f: torch.save(state, f))
                _atomic_write(last_path, lambda f: torch.save(state, f))
                write_history(history, out_dir)
            _barrier(world)

        if best_state is not None:
            model.load_state_dict(best_state)
        test = evaluate(model, eval_loaders['test'], scale, device, world, num_classes)
        metrics = {
            'best_epoch': best['epoch'], 'best_val_acc': best['val_acc'],
            'test_acc': test['acc'], 'test_loss': test['loss'], 'test_count': test['count'],
            'confusion_matrix': test['confusion'].tolist(), 'history': history,
            'train_seconds': time.perf_counter() - t_start, 'world_size': world,
            'device': str(device), 'config': _summary(model.config),
            'args': _jsonable(vars(args)),
            'data': {'root': train_set.root, 'nside': train_set.nside, 'order': train_set.order,
                     'patch_pixels': train_set.patch_size, 'map_std': scale,
                     'samples': {s: len(d) for s, d in splits.items()}},
        }
        if main_rank:
            _atomic_text(osp.join(out_dir, 'metrics.json'), json.dumps(metrics, indent=1) + '\n')
            if not args.no_figures:
                plot_learning_curves(history, osp.join(out_dir, 'learning_curves.png'))
                plot_confusion(test['confusion'], osp.join(out_dir, 'confusion_matrix.png'))
            print(f"best epoch {best['epoch']} (val acc {best['val_acc']:.3f}); "
                  f"test accuracy {test['acc']:.4f} on {test['count']} patches", flush=True)
        _barrier(world)
        return metrics
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _summary(config: dict) -> dict:
    """The model config for metrics.json, with the pixel count instead of the pixel ids."""
    out = _jsonable(config)
    if out.get('pixels') is not None:
        out['pixels'] = f"{len(out['pixels'])} pixels (patch 0)"
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def write_history(history: list[dict], out_dir: str) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS)
    writer.writeheader()
    writer.writerows(history)
    _atomic_text(osp.join(out_dir, 'history.csv'), buf.getvalue())


# ----- figures --------------------------------------------------------------------------------
def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("the PNG figures need matplotlib: pip install 'pyg_sphere[plot]', "
                          "or pass --no-figures") from err
    matplotlib.use('Agg')  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> None:
    _atomic_write(path, lambda f: fig.savefig(f, format='png', dpi=90, bbox_inches='tight'))


def plot_example_maps(dataset: ConvergenceMaps, path: str) -> None:
    """One test patch per class (as the model sees it, noise included): its place on the sphere
    (Mollweide, the patch in an otherwise UNSEEN map) and a gnomonic close-up."""
    import healpy as hp
    plt = _pyplot()
    labels = dataset._y.tolist()
    picks = [labels.index(c) for c in sorted(set(labels))][:2]
    fig = plt.figure(figsize=(10, 4.2 * len(picks)))
    for row, i in enumerate(picks):
        data = dataset[i]
        pid, label = int(data.patch_id), int(data.y)
        full = np.full(12 * dataset.nside ** 2, hp.UNSEEN)
        pixels = dataset.patch_pixels(pid).numpy()
        full[pixels] = data.x[:, 0].numpy()
        name = f"class {label}"
        if math.isfinite(float(data.omega_m)):
            name += (f" ($\\Omega_m$={float(data.omega_m):.2f}, "
                     f"$\\sigma_8$={float(data.sigma_8):.3f})")
        centre = np.mean(hp.pix2vec(dataset.nside, pixels, nest=True), axis=1)
        lon, lat = hp.vec2ang(centre, lonlat=True)
        lon, lat = float(lon[0]), float(lat[0])
        side = dataset.nside // dataset.order
        reso = hp.nside2resol(dataset.nside, arcmin=True)
        hp.mollview(full, nest=True, fig=fig.number, sub=(len(picks), 2, 2 * row + 1),
                    title=f"{name}, patch {pid}", cbar=True, notext=True)
        hp.gnomview(full, nest=True, rot=(lon, lat), xsize=int(1.6 * side), reso=reso,
                    fig=fig.number, sub=(len(picks), 2, 2 * row + 2),
                    title=f"close-up ({side}x{side} pixels)", notext=True)
    _save(fig, path)
    plt.close(fig)


def plot_learning_curves(history: list[dict], path: str) -> None:
    plt = _pyplot()
    epochs = [h['epoch'] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key in zip(axes, ('loss', 'acc')):
        ax.plot(epochs, [h[f'train_{key}'] for h in history], 'o-', label='train')
        ax.plot(epochs, [h[f'val_{key}'] for h in history], 's-', label='validation')
        ax.set_xlabel('epoch')
        ax.set_ylabel('cross-entropy' if key == 'loss' else 'accuracy')
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_confusion(confusion: np.ndarray, path: str) -> None:
    plt = _pyplot()
    confusion = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(confusion, cmap='Blues')
    for (i, j), v in np.ndenumerate(confusion):
        ax.text(j, i, str(v), ha='center', va='center',
                color='white' if v > confusion.max() / 2 else 'black')
    n = len(confusion)
    ax.set_xticks(range(n), [f'model {i + 1}' for i in range(n)])
    ax.set_yticks(range(n), [f'model {i + 1}' for i in range(n)])
    ax.set_xlabel('predicted')
    ax.set_ylabel('true')
    ax.set_title(f'test accuracy {np.trace(confusion) / max(confusion.sum(), 1):.3f}')
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def run(argv: Optional[Sequence[str]] = None) -> dict:
    """Trains with command-line options given as a list (``None``: ``sys.argv``).

    Raises ``ValueError``/``FileNotFoundError`` on bad input.

    Returns:
        The metrics, as written to ``metrics.json`` (see :func:`train`).
    """
    return train(build_parser().parse_args(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Console entry point (``pyg-sphere-train-cosmo``, ``python -m pyg_sphere.train_cosmo``):
    bad input ends with a one-line error and exit status 2."""
    try:
        run(argv)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
