"""The training loop of `train.run`: batches by index, timed optimizer steps, load balance, eval, checkpoints.
Timed region: every micro-batch's forward/backward plus the optimizer step; its only device-to-host
reads, and how load-balance counts and the loss are reduced over ranks: docs/workloads.md#workloadsjobsloop.
"""

import contextlib
import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from workloads.data import PackedDataset, PreparedData
from workloads.jobs import checkpoint, distributed, metrics, optim
from workloads.jobs.balance import all_reduce_moe_counts, reduce_l3_balance, reduce_step_series
from workloads.jobs.setup import build_model
from workloads.jobs.timing import StepTimer, TimingStats
from workloads.l3.layer import L3Layer


class Batches:
    """Micro-batch i of this rank, by index, in `PackedDataset.batches` order (epoch = i // per_epoch), so a
    resumed job continues at exactly the next batch."""

    def __init__(self, dataset: PackedDataset, batch_size: int, w: distributed.World):
        self.ds, self.batch_size, self.w = dataset, batch_size, w
        self.per_rank = dataset.n_windows // w.size
        self.per_epoch = self.per_rank // batch_size
        self._epoch, self._mine = -1, np.empty(0, dtype=np.int64)

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, j = divmod(i, self.per_epoch)
        if epoch != self._epoch:
            order = self.ds.order(epoch)
            self._mine = order[: len(order) - len(order) % self.w.size][self.w.rank :: self.w.size]
            self._epoch = epoch
        idx = self._mine[j * self.batch_size : (j + 1) * self.batch_size].astype(np.int64)
        rows = self.ds.tokens[idx[:, None] * self.ds.seq_len + np.arange(self.ds.seq_len + 1)]
        rows = rows.astype(np.int64)  # (B, T + 1)
        return rows[:, :-1], rows[:, 1:]


@dataclass
class Outcome:
    steps_done: int = 0
    stopped: bool = False
    timing: TimingStats | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class TrainLoop:
    def __init__(
        self, cfg, model_cfg, data: PreparedData, counts, w, device, ctx, extra_eval=None, scone=None
    ):
        self.cfg, self.model_cfg, self.data, self.counts = cfg, model_cfg, data, counts
        self.world, self.device, self.ctx = w, device, ctx
        self.seq_len = cfg.data_config().seq_len
        self.total_steps = cfg.total_steps(w.size)
        self.train_batches = Batches(data.packed("train", self.seq_len, seed=cfg.seed), cfg.batch_size, w)
        self.val = data.packed("val", self.seq_len, shuffle=False)
        # Evaluation corpora: the job's own validation split ("") and the named extra corpora's.
        self.eval_sets = {"": self.val} | {
            name: d.packed("val", self.seq_len, shuffle=False) for name, d in (extra_eval or {}).items()
        }
        self.eval_bytes_per_token = {"": data.val_bytes_per_token} | {
            name: d.val_bytes_per_token for name, d in (extra_eval or {}).items()
        }
        self._check_sizes()
        self._init_scone(scone, extra_eval or {})
        self.model = build_model(
            model_cfg, counts, device, seed=cfg.seed, fgrams=scone.fgrams if scone is not None else None
        )
        groups = optim.param_groups(
            self.model,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            l3_lr=cfg.l3_lr,
            l3_weight_decay=cfg.l3_weight_decay,
            embedding_lr=cfg.embedding_lr,
            embedding_weight_decay=cfg.embedding_weight_decay,
        )
        ep_size = model_cfg.moe.ep_size if model_cfg.moe else 1
        self.parallel_kind = "deepspeed" if ep_size > 1 else ("ddp" if w.size > 1 else "single")
        sparse = self.parallel_kind == "single"
        self.engine = distributed.parallelize(
            self.model,
            groups,
            lambda g: optim.build_optimizer(g, cfg.betas, True, cfg.l3_optimizer, sparse),
            w=w,
            device=device,
            ep_size=ep_size,
            micro_batch=cfg.batch_size,
            grad_accum=cfg.grad_accum,
            grad_clip=cfg.grad_clip,
            seed=cfg.seed,
        )
        if sparse:
            # On one process the tables get sparse gradients: only touched rows exist. The row-sparse
            # optimizers step those rows; dense AdamW (SparseGradAdamW) adds them into a kept zero buffer
            # and steps every row (DDP / DeepSpeed all-reduce dense gradients: there the row-sparse
            # optimizers scan for touched rows).
            for module in self.model.modules():
                if isinstance(module, L3Layer):
                    module.sparse_grad = True
        self.scheduler = optim.build_scheduler(
            self.engine.optimizer,
            warmup_steps=cfg.lr_warmup_steps,
            total_steps=self.total_steps,
            min_ratio=cfg.min_lr_ratio,
        )
        amp = cfg.autocast_dtype()
        self.autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp else contextlib.nullcontext
        self._init_balance()
        self.timer = StepTimer(device, warmup=cfg.timing_warmup_steps)

    def _check_sizes(self) -> None:
        cfg, w = self.cfg, self.world
        for name, ds in (("train", self.train_batches.ds), ("val", self.val)):
            # Ids are validated here, where they enter, so the L3 layers need no per-call range check.
            if ds.tokens.size and int(ds.tokens.max()) >= self.model_cfg.vocab_size:
                raise ValueError(
                    f"the {name} split holds token id {int(ds.tokens.max())} >= model vocab_size="
                    f"{self.model_cfg.vocab_size}"
                )
        if self.train_batches.per_epoch < 1:
            raise ValueError(
                f"TrainJobConfig.batch_size={cfg.batch_size} is larger than the data: the train split holds "
                f"{self.train_batches.ds.n_windows} windows of seq_len={self.seq_len} for {w.size} rank(s)"
            )
        for name, ds in self.eval_sets.items():
            if ds.n_windows < w.size:
                where = f"eval_data[{name!r}]" if name else "data"
                raise ValueError(
                    f"the validation split of {where} holds {ds.n_windows} windows, fewer than {w.size} ranks"
                )

    # -- SCONE: f-gram tags read next to the tokens (tagged once in the data pipeline) ----------------
    def _init_scone(self, scone, extra_eval: dict) -> None:
        """Tag windows aligned with the token windows of training and of every evaluation corpus."""
        self.scone, self.train_tags, self.eval_tags = scone, None, dict.fromkeys(self.eval_sets)
        self.scone_counts = np.zeros(4)  # positions, matched, Σ match length, Σ f-gram tokens encoded
        if scone is None:
            return
        from workloads.scone.data import tag_data

        self.train_tags = Batches(
            scone.packed_tags("train", self.seq_len, seed=self.cfg.seed), self.cfg.batch_size, self.world
        )
        self.eval_tags[""] = scone.packed_tags("val", self.seq_len, shuffle=False)
        for name, d in extra_eval.items():
            tags = tag_data(scone.matcher, scone.path, d)["val"]
            self.eval_tags[name] = PackedDataset(tags, self.seq_len, shuffle=False)

    def _scone_stats(self, tags: list[np.ndarray]) -> None:
        lengths = self.scone.fgrams.lengths
        for t in tags:
            hit = t[t >= 0]
            self.scone_counts += (t.size, hit.size, lengths[hit].sum(), lengths[np.unique(hit)].sum())

    def _scone_metrics(self) -> dict[str, float]:
        """lb/scone_match_rate (tagged positions / positions), lb/scone_mean_match_len (tokens per matched
        f-gram), train/fgram_tokens_per_token (f-gram tokens A_fgram encoded per training token: each
        distinct f-gram of a micro-batch once), all ranks summed."""
        total = distributed.all_reduce_sum(torch.tensor(self.scone_counts, device=self.device)).tolist()
        positions, matched, length_sum, encoded = total
        return {
            "lb/scone_match_rate": matched / positions if positions else 0.0,
            "lb/scone_mean_match_len": length_sum / matched if matched else 0.0,
            "train/fgram_tokens_per_token": encoded / positions if positions else 0.0,
        }

    # -- load balance -------------------------------------------------------------------------------
    def _init_balance(self) -> None:
        moe, dev = self.model_cfg.moe, self.device
        self.moe_positions = list(moe.positions) if moe else []
        n_exp = moe.num_experts if moe else 0
        self.expert_tokens = torch.zeros(len(self.moe_positions), n_exp, dtype=torch.int64, device=dev)
        self.expert_routes: np.ndarray | None = None  # all-reduced at the end of training
        self.step_tokens: list[torch.Tensor] = []  # this rank's (layers, experts) routes of each step
        self.drops = torch.zeros(2, dtype=torch.int64, device=dev)  # dropped tokens, dropped routes
        self.token_passes = 0  # tokens × MoE layers seen by this rank
        self.aux_sum = torch.zeros((), dtype=torch.float32, device=dev)
        self.moe_blocks = [b.mlp for b in self.model.layers if b.index in self.moe_positions]
        self.l3 = np.zeros(4, dtype=np.float64)  # rows_sum, n_positions, unique rows, rows_max
        self.l3_steps: list[tuple[float, float]] = []  # this rank's (Σ rows, positions) of each step

    def _l3_stats(self, ids: list[np.ndarray]) -> None:
        if not self.counts:
            return
        step_ids = np.concatenate([x.reshape(-1) for x in ids])
        step_rows = step_n = 0.0
        for counts in self.counts.values():
            rows_sum, rows_max, n, unique = metrics.l3_batch_stats(step_ids, counts)
            self.l3[:3] += (rows_sum, n, unique)
            self.l3[3] = max(self.l3[3], rows_max)
            step_rows, step_n = step_rows + rows_sum, step_n + n
        self.l3_steps.append((step_rows, step_n))

    def _moe_stats(self, expert_counts: dict, aux: torch.Tensor) -> None:
        if not self.moe_positions:
            return
        c = torch.stack([expert_counts[p] for p in self.moe_positions]).to(torch.int64)  # (layers, experts)
        self.expert_tokens += c
        self.step_tokens[-1] += c
        self.drops += torch.stack([mlp.last_dropped for mlp in self.moe_blocks]).sum(0)
        self.token_passes += self.cfg.batch_size * self.seq_len * len(self.moe_positions)
        self.aux_sum += aux.detach().float() / self.cfg.grad_accum

    def _balance_metrics(self, n_steps: int) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.moe_positions:
            routes, d_tok, d_routes, passes, aux = all_reduce_moe_counts(
                self.expert_tokens, self.drops, self.aux_sum, self.token_passes
            )
            self.expert_routes = routes  # all ranks' (layers, experts) routes: BenchResult.arrays
            out |= metrics.moe_balance(
                routes, d_routes, aux, n_steps, dropped_tokens=d_tok, token_passes=passes
            )
            if self.step_tokens:
                out |= metrics.moe_step_balance(reduce_step_series(self.step_tokens, self.device))
        if self.scone is not None and n_steps:
            out |= self._scone_metrics()
        if self.counts and n_steps:
            row_bytes = metrics.l3_row_bytes(self.model_cfg, self.model.tok_emb.weight.element_size())
            out |= reduce_l3_balance(self.l3, n_steps, row_bytes, self.device)
            per_step = reduce_step_series(np.asarray(self.l3_steps, dtype=np.float64), self.device)
            out |= metrics.l3_step_balance(per_step[:, 0], per_step[:, 1], row_bytes)
        return out

    # -- training -----------------------------------------------------------------------------------
    def _micro(self, x: np.ndarray, y: np.ndarray, last: bool, tags: np.ndarray | None) -> torch.Tensor:
        """One micro-batch's forward and backward; tags: its (B, T) f-gram rows (scone) or None."""
        x = torch.from_numpy(x).to(self.device, non_blocking=True)
        y = torch.from_numpy(y).to(self.device, non_blocking=True)
        kw = {} if tags is None else {"fgram_ids": torch.from_numpy(tags).to(self.device, non_blocking=True)}
        with self.engine.micro(last):
            with self.autocast():
                logits, aux, expert_counts = self.engine.module(x, return_expert_counts=True, **kw)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())  # (B*T, vocab) vs (B*T,)
            self.engine.backward(loss + aux)
        self._moe_stats(expert_counts, aux)
        return loss.detach()

    def step(self, step: int) -> torch.Tensor:
        """One timed optimizer step (micro-batches `step * grad_accum ...`); returns the loss on device."""
        accum = self.cfg.grad_accum
        batches = [self.train_batches(step * accum + m) for m in range(accum)]
        tags = [None] * accum
        if self.train_tags is not None:
            tags = [self.train_tags(step * accum + m)[0] for m in range(accum)]  # (B, T) per micro-batch
            self._scone_stats(tags)
        self._l3_stats([x for x, _ in batches])
        if self.moe_positions:
            self.step_tokens.append(torch.zeros_like(self.expert_tokens))
        with self.timer:
            parts = enumerate(zip(batches, tags, strict=True))
            loss = sum(self._micro(x, y, m == accum - 1, t) for m, ((x, y), t) in parts) / accum
            self.engine.optimizer_step()
        self.scheduler.step()
        return loss

    def train(self, start_step: int) -> Outcome:
        cfg, ctx, w = self.cfg, self.ctx, self.world
        n_run = self.total_steps - start_step
        self.timer = StepTimer(self.device, warmup=min(cfg.timing_warmup_steps, max(n_run - 1, 0)))
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        outcome, pending, last_loss = Outcome(), [], None
        self.model.train()
        for step in range(start_step, self.total_steps):
            lr = self.scheduler.get_last_lr()[0]
            pending.append((step, lr, self.step(step)))
            done = step + 1
            outcome.steps_done = done - start_step
            flush = done % cfg.log_every == 0 or done == self.total_steps
            if flush or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0):
                last_loss = self._flush(pending) or last_loss
                pending = []
                outcome.stopped = self._stop_requested()
            elif w.size == 1:
                outcome.stopped = ctx.stop_requested()
            if cfg.eval_every and done % cfg.eval_every == 0 and done < self.total_steps:
                self._log(self._evaluate(), step)
            every = cfg.checkpoint_every
            if self.ctx.checkpoint_dir and (
                (every and (done % every == 0 or done == self.total_steps)) or outcome.stopped
            ):
                self.save(done)
            if outcome.stopped:
                break
        last_loss = self._flush(pending) or last_loss
        if last_loss is not None:
            outcome.metrics["train/loss"] = last_loss
        if self.timer.count > self.timer.warmup:
            outcome.timing = self.timer.summary()
        outcome.metrics |= self._balance_metrics(outcome.steps_done)
        return outcome

    def _flush(self, pending: list) -> float | None:
        """Stream the pending steps' losses (rank mean) through ctx; returns the last one."""
        if not pending:
            return None
        losses = distributed.all_reduce_sum(torch.stack([loss for _, _, loss in pending]).float())
        values = (losses / self.world.size).tolist()
        for (step, lr, _), value in zip(pending, values, strict=True):
            self._log({"train/loss": value, "train/lr": lr}, step)
        return values[-1]

    def _log(self, values: dict[str, float], step: int) -> None:
        if self.world.is_main:
            self.ctx.log(values, step)

    def _stop_requested(self) -> bool:
        flag = torch.tensor(float(self.ctx.stop_requested()), device=self.device)
        return bool(distributed.all_reduce_sum(flag).item() > 0)  # every rank stops at the same step

    # -- evaluation ---------------------------------------------------------------------------------
    def _evaluate(self) -> dict[str, float]:
        """eval/val_loss, eval/val_ppl, eval/val_bpb of the job's corpus and eval/<name>/val_loss, ... of
        each extra one (bits per byte with that corpus's own bytes per token)."""
        out = {}
        for name, ds in self.eval_sets.items():
            values = self._evaluate_one(ds, self.eval_bytes_per_token[name], self.eval_tags[name])
            out |= {(k.replace("eval/", f"eval/{name}/") if name else k): v for k, v in values.items()}
        return out

    @torch.no_grad()
    def _evaluate_one(
        self, val: PackedDataset, bytes_per_token: float, tags: PackedDataset | None = None
    ) -> dict[str, float]:
        """Mean token loss over up to eval_batches validation batches per rank (equal on every rank)."""
        w = self.world
        batch = max(1, min(self.cfg.batch_size, val.n_windows // w.size))
        total = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss sum, tokens
        self.model.eval()
        windows = val.batches(batch, rank=w.rank, world_size=w.size)
        tag_windows = itertools.repeat(None)
        if tags is not None:  # scone: the tags of the same windows
            tag_windows = tags.batches(batch, rank=w.rank, world_size=w.size)
        for (x, y), t in itertools.islice(zip(windows, tag_windows, strict=False), self.cfg.eval_batches):
            x, y = x.to(self.device), y.to(self.device)
            kw = {} if t is None else {"fgram_ids": t[0].to(self.device)}
            with self.autocast():
                logits, _ = self.model(x, **kw)
            total[0] += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").double()
            total[1] += y.numel()
        self.model.train()
        loss_sum, n_tokens = distributed.all_reduce_sum(total).tolist()
        return metrics.eval_metrics(loss_sum, n_tokens, bytes_per_token)

    def evaluate_into(self, outcome: Outcome) -> None:
        values = self._evaluate()
        self._log(values, self.total_steps - 1)
        outcome.metrics |= values

    # -- checkpoints --------------------------------------------------------------------------------
    def save(self, done: int) -> None:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.engine.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": checkpoint.rng_state(),
        }
        checkpoint.save(
            self.ctx.checkpoint_dir, done, state, self.world.rank, self.world.size, distributed.barrier
        )

    def save_weights(self) -> None:
        """The final weights for evaluation (cfg.save_weights): rank 0 writes the whole model; expert-
        parallel ranks hold different experts, so such a job has none to write whole (eval refuses it)."""
        if not self.cfg.save_weights or not self.world.is_main:
            return
        if not self.ctx.checkpoint_dir:
            raise ValueError("TrainJobConfig.save_weights needs JobContext.checkpoint_dir (a folder)")
        checkpoint.save_weights(self.ctx.checkpoint_dir, self.model)

    def resume(self) -> int:
        """Load the latest checkpoint of ctx.checkpoint_dir, if any; returns the step to continue from."""
        if not self.ctx.checkpoint_dir:
            return 0
        step = checkpoint.latest_step(self.ctx.checkpoint_dir)
        if step is None:
            return 0
        state = checkpoint.load(self.ctx.checkpoint_dir, step, self.world.rank, self.world.size)
        self.model.load_state_dict(state["model"])
        self.engine.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        return min(step, self.total_steps)

    def optimizer_bytes(self) -> dict[str, int]:
        """This rank's optimizer state bytes by parameter category (see optim.optimizer_bytes_by_category)."""
        return optim.optimizer_bytes_by_category(self.engine.optimizer, self.model)
