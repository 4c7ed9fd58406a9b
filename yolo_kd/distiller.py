"""The distiller: the student plus trainable adapters, wrapped like Ultralytics' DistillationModel, with teachers
held outside the module tree.

One training step (`loss`): the student's forward and taps; the frozen teachers' forwards (eval, no grad, in the
autocast dtype under AMP) turned into one target in a declared float32 encoding (`teacher_target`); each active
method on (student taps, target, the batch's GT); the weighted terms join the detection loss as extra loss items
(one column each). In eval mode (validation during training) it returns the student's loss with zero KD terms, so
the column set never changes.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from .errors import KDConfigError
from .losses import dense_box_loss, dense_class_loss, top_fraction
from .compat import check_teachers, first_stage_teachers
from .methods import build_method, method_weight
from .preflight import image_size
from .recipe import GUARD_RELABEL, Recipe, box_selection, check_labeled_kd, labels_pool_once
from .resolution import level_pairs, resample
from .taps import Targets, Taps, TapShapes, cat_rows, head_taps, record_layers, take_rows
from .teacher_target import TeacherView, teacher_target
from .teachers import TeacherPool, probe, probe_size
from .ultra import StudentSurface, copy_attributes, detect_head
from .norm import running_stats_frozen
from .pseudo_boxes import matched_count, pseudo_batch

POOL_DETECTION_TERM = "pool_det"  # the loss column of `unlabeled_boxes`: detection loss on online pseudo-boxes
POOL_DENSE_TERM = "pool_dense"  # the loss column of `unlabeled_topk`: Dense Teacher's dense pseudo-labels
KD_STATE_KEY = "yolo_kd"  # key of the plain-tensor KD state in last.pt (adapters, recipe, stage): used by resume


class Distiller(StudentSurface, nn.Module):
    """Student (`self.student`) + adapters (`self.methods`); everything trainable is a registered submodule."""

    def __init__(self, student: nn.Module, recipe: Recipe, epochs: int, names: dict,
                 pool: TeacherPool | None = None, teacher_shapes: dict[str, TapShapes] | None = None,
                 has_pool: bool | None = None):
        """`pool` and `teacher_shapes` come from `compat.check_before_run` when the trainer checked the teachers before
        the run folder existed; otherwise the teachers are loaded, checked and probed here (once each). `has_pool`:
        the run has unlabeled images (`unlabeled=` or data.yaml's `unlabeled:`; None: the recipe's `unlabeled`), so
        the pool's own terms (`unlabeled_boxes`, `unlabeled_topk`) get their loss columns."""
        super().__init__()
        from ultralytics.utils import LOGGER

        self.student = student
        self.recipe = recipe
        self.spans = recipe.resolve_stages(epochs)
        close_mosaic = int(getattr(getattr(student, "args", None), "close_mosaic", 0) or 0)
        self.kd_end = epochs - close_mosaic if recipe.schedule.off_close_mosaic else epochs  # first epoch without KD
        self.mosaic_end = epochs - close_mosaic if close_mosaic else None  # Ultralytics' first no-mosaic epoch
        self.pool = pool or TeacherPool(recipe.teachers)
        self.stage = None  # index of the active stage, None when no stage covers the epoch
        self.epoch = 0
        self.batches = 1  # batches per epoch, for the schedule's fractional epoch
        self.batch_index = 0  # training batches seen this epoch
        self.nan_skips = 0
        self.balance: dict[str, float] = {}  # auto-balance multipliers, fixed at the first KD step
        self.teacher_scores: dict[str, float] = {}  # teacher_guard: each teacher's validation mAP50-95, once
        self.kd_stopped = False  # teacher_guard: the student has caught up with its teacher, KD is off for good
        self.boxes_score = None  # teacher_guard: relabel: the EMA's mAP50-95 when it last labeled the pool

        device = next(student.parameters()).device
        ch = student.yaml.get("channels", 3)
        s_shapes = probe(student, probe_size(student), ch, self._layers("student"))
        t_shapes = teacher_shapes or check_teachers(recipe, self.pool, student, ch, names, device,
                                                    keep=first_stage_teachers(recipe, epochs))
        self.head_pairs = {name: self._level_pairs(name, s_shapes, t_shapes[name]) for name in recipe.teachers}
        feat_pairs = {name: list(range(len(t_shapes[name].channels))) if recipe.layers else self.head_pairs[name]
                      for name in recipe.teachers}
        self.class_index = {name: [recipe.class_map[k] for k in sorted(names)] for name in recipe.teachers} \
            if recipe.class_map else {}
        self.views = {name: TeacherView(self.class_index.get(name), feat_pairs[name], self.head_pairs[name],
                                        t_shapes[name].reg_max) for name in recipe.teachers}
        t_shapes = {name: replace(t, channels=[t.channels[k] for k in feat_pairs[name]])
                    for name, t in t_shapes.items()}
        for si, stage in enumerate(recipe.stages):
            if stage.combine == "mean" and len({str(t_shapes[n]) for n in stage.teachers}) > 1:
                raise KDConfigError(f"stage {si + 1} combine: mean needs teachers with equal channels and heads, "
                                    f"got {[t_shapes[n].channels for n in stage.teachers]}: use combine: sum")
        methods = {}
        for si, stage in enumerate(recipe.stages):
            for teacher in self._method_teachers(si):
                for m in stage.methods:
                    key = f"{teacher}__{m.name}"
                    if key not in methods:
                        methods[key] = build_method(m.name, m.params, s_shapes, t_shapes[teacher])
        self.methods = nn.ModuleDict(methods).to(device)
        self.term_names = list(dict.fromkeys(t for m in self.methods.values() for t in m.terms))
        with_pool = bool(recipe.unlabeled) if has_pool is None else has_pool
        self.has_pool = with_pool
        pool_terms = {POOL_DETECTION_TERM: recipe.unlabeled_boxes, POOL_DENSE_TERM: recipe.unlabeled_topk}
        if with_pool:
            self.term_names += [term for term, option in pool_terms.items() if option is not None]
        check_labeled_kd(recipe, self.gt_only_methods, with_pool)  # resumed or remote data: not checked before
        copy_attributes(self, student)
        LOGGER.info(f"yolo-kd: {len(recipe.stages)} stage(s), teachers {list(recipe.teachers)}, "
                    f"terms {self.term_names}, adapters {sum(p.numel() for p in self.methods.parameters()):,} params")

    @property
    def gt_only_methods(self) -> list[str]:
        """Methods that read ground truth (they see the labeled rows of a batch only)."""
        return sorted({k.split("__")[-1] for k, m in self.methods.items() if m.reads_gt})

    # ------------------------------------------------------------------ construction checks
    def _layers(self, who: str) -> list[int] | None:
        return self.recipe.layers[who] if self.recipe.layers else None

    def _level_pairs(self, name: str, s_shapes: TapShapes, t_shapes: TapShapes) -> list[int]:
        """Teacher Detect level per student Detect level: level i with level i, or, for a teacher at its own size with
        `levels: area`, the same image area per cell (`resolution.level_pairs`)."""
        spec = self.recipe.teachers[name]
        student_size = image_size(getattr(getattr(self.student, "args", None), "imgsz", None))
        ratio = spec.imgsz / student_size if spec.imgsz and student_size else 1.0
        return level_pairs(list(s_shapes.strides), list(t_shapes.strides), ratio, spec.levels)

    def _method_teachers(self, si: int) -> list[str]:
        """Teachers that own adapters in stage `si`: each one (combine=sum) or the first (combine=mean)."""
        stage = self.recipe.stages[si]
        return stage.teachers[:1] if stage.combine == "mean" else stage.teachers

    # ------------------------------------------------------------------ schedule
    def set_epoch(self, epoch: int, batches: int = 1) -> str | None:
        """Select the stage covering `epoch` of `batches` batches; returns a log line when the stage changes (teachers
        swap lazily). The schedule factor then advances batch by batch: epoch + i / batches."""
        self.epoch, self.batches, self.batch_index = epoch, max(int(batches), 1), 0
        stage = next((i for i, (a, b) in enumerate(self.spans) if a <= epoch < b), None) if epoch < self.kd_end else None
        if stage == self.stage:
            return None
        self.stage = stage
        active = set(self.recipe.stages[stage].teachers) if stage is not None else set()
        for name in list(self.pool.loaded):
            if name not in active:
                self.pool.release(name)
        if stage is None:
            why = "the no-mosaic epochs (schedule off_close_mosaic)" if epoch >= self.kd_end else "no KD stage"
            return f"yolo-kd: epoch {epoch + 1}: {why}, training the student alone"
        s, (a, b) = self.recipe.stages[stage], self.spans[stage]
        methods = ", ".join(f"{m.name}x{method_weight(m):g}" for m in s.methods) or "none"
        return (f"yolo-kd: stage {stage + 1}/{len(self.spans)} '{s.name}' epochs {a + 1}-{b}: "
                f"teachers {s.teachers or 'none'}, methods {methods}" + self._teacher_reads())

    def _teacher_reads(self) -> str:
        """For the stage's log line, with a pool: which images the teacher's forward reads in this stage."""
        if not self.has_pool or self.kd_stopped or not self.recipe.stages[self.stage].methods:
            return ""
        if not self.teacher_reads_pool:
            return "; the teacher reads the labeled images only"
        share = self.recipe.unlabeled_kd
        pool = "the pool images" if share is True else f"{share:.0%} of the pool images"
        return (f"; the teacher reads {pool} only" if not self.recipe.labeled_kd
                else f"; the teacher reads the labeled images and {'all ' * (share is True)}{pool}")

    # ------------------------------------------------------------------ forward / loss
    def forward(self, x, *args, **kwargs):
        """Loss for a batch dict (training or validation), student predictions for an image tensor."""
        if isinstance(x, dict):
            return self.loss(x, *args, **kwargs)
        return self.student.predict(x, *args, **kwargs)

    def loss(self, batch: dict, preds=None):
        """(detection loss vector ++ [KD total * batch size], items with one entry per KD term)."""
        zero = torch.zeros((), device=batch["img"].device)
        stage = self.recipe.stages[self.stage] if self.stage is not None else None
        if not self.training or stage is None or not stage.methods or (self.kd_stopped and not self.self_training):
            if preds is None:
                preds = self.student(batch["img"])
            det_loss, items = self.student.loss(batch, preds)
            items.update({t: zero for t in self.term_names})
            return torch.cat([det_loss, zero.view(1)]), items

        img, source, extra = batch["img"], batch.get("teacher_img"), batch.get("unlabeled_img")
        labeled = len(img)
        reads_pool = extra is not None and self.reads_unlabeled  # this step reads the pool's images
        pool_kd = reads_pool and self.teacher_reads_pool  # ... and its teacher forward and KD terms read them
        pool_only = pool_kd and not self.recipe.labeled_kd  # `labeled_kd: false`: the KD terms read the pool rows only
        start = 0 if pool_only else labeled  # the first pool row of the KD rows
        labeled_forward = self._student_preds if self.kd_stopped or pool_only else self._student_taps
        s_taps, preds = labeled_forward(img)  # self-training or pool_only: no taps of the labeled images
        pool_preds = None
        if reads_pool:  # a second forward: the labeled rows stay theirs
            if pool_kd:
                pool_taps, pool_preds = self._unlabeled_forward(extra, self._student_taps)
                read = self.recipe.pool_kd_rows(len(extra))  # `unlabeled_kd` a share: the KD terms read the first
                pool_rows = take_rows(pool_taps, read)  # `read`, the detection term every pool image
                t_view = batch.get("unlabeled_weak_img", extra)[:read].to(img.dtype)  # the teacher's view of those
                t_source = batch["unlabeled_teacher_img"][:read].to(source.dtype) if source is not None else None
                if pool_only:
                    s_taps, img, source = pool_rows, t_view, t_source
                else:
                    s_taps, img = cat_rows(s_taps, pool_rows), torch.cat([img, t_view])
                    source = torch.cat([source, t_source]) if source is not None else None
            else:  # only the pool's detection term reads it
                _, pool_preds = self._unlabeled_forward(extra, self._student_preds)
        target = [] if self.kd_stopped else self._teacher_target(stage, img, source, s_taps)
        det_loss, items = self.student.loss(batch, preds)  # the labeled images only
        targets = Targets.from_batch(batch)
        factor = self.recipe.schedule.factor(self.progress, *self.spans[self.stage])
        self.batch_index += 1
        values = {t: zero for t in self.term_names}
        for teacher, taps, teacher_weight in target:
            for m in stage.methods:
                method = self.methods[f"{teacher}__{m.name}"]
                s_in, t_in = (take_rows(s_taps, labeled), take_rows(taps, labeled)) if method.reads_gt else (s_taps, taps)
                terms = method(s_in, t_in, targets)
                for term, v in terms.items():
                    balance = self._balance(f"{teacher}/{term}", v, det_loss, labeled)
                    values[term] = values[term] + v.float() * (method_weight(m) * teacher_weight * factor * balance)
        pool_factor, first = factor * self.recipe.unlabeled_weight, target[0][1] if target else None
        if pool_preds is not None and POOL_DETECTION_TERM in values:
            pool_det = self._pool_detection_loss(first, extra, pool_preds, batch, start)
            values[POOL_DETECTION_TERM] = pool_det * pool_factor
        if pool_preds is not None and POOL_DENSE_TERM in values and target:
            values[POOL_DENSE_TERM] = self._pool_dense_loss(s_taps, first, start) * pool_factor
        kd = torch.stack(list(values.values())) if values else zero.view(1)
        if not bool(torch.isfinite(kd).all()):  # one check (one device sync) per step, on all terms at once
            self.nan_skips += 1  # this step's KD is dropped whole: counted, logged per epoch as kd_nan_skips
            values, kd = {t: zero for t in values}, zero.view(1)
        items.update({k: v.detach() for k, v in values.items()})
        return torch.cat([det_loss, (kd.sum() * labeled).view(1).to(det_loss.dtype)]), items

    @property
    def self_training(self) -> bool:
        """`teacher_guard: relabel` after the guard has stopped KD: no teacher term, no teacher forward; the pool's
        detection term goes on, on boxes the student's EMA made (`pool_labels.relabel_pool`) or, until it has, the
        teacher's."""
        return self.kd_stopped and self.recipe.teacher_guard == GUARD_RELABEL

    @property
    def teacher_reads_pool(self) -> bool:
        """Whether the teacher's forward reads pool rows (all, or `unlabeled_kd`'s share): not while self-training,
        not with `unlabeled_kd: false`, and only where a term reads them: a method of the stage that reads no ground
        truth, Dense Teacher's pseudo-labels (`unlabeled_topk`), boxes decoded online (`unlabeled_boxes` not made
        once)."""
        if self.kd_stopped or self.recipe.unlabeled_kd is False:
            return False
        recipe = self.recipe
        return (self._stage_kd_reads_pool or recipe.unlabeled_topk is not None
                or (recipe.unlabeled_boxes is not None and not labels_pool_once(recipe.unlabeled_boxes)))

    @property
    def _stage_kd_reads_pool(self) -> bool:
        """Whether a method of the current stage reads no ground truth (its KD terms read the pool rows)."""
        si = self.stage
        return si is not None and any(not self.methods[f"{t}__{m.name}"].reads_gt
                                      for t in self._method_teachers(si) for m in self.recipe.stages[si].methods)

    @property
    def reads_unlabeled(self) -> bool:
        """Whether this training step reads the pool's images: a stage is active and the teacher's forward reads them
        (`teacher_reads_pool`), or the pool's detection term does, on boxes made once (with `unlabeled_kd` false or
        a share, a stage of ground-truth-only methods, or a run that self-trains on the pool's boxes)."""
        si = self.stage
        if not self.training or si is None or not self.recipe.stages[si].methods:  # a stage without KD
            return False
        if self.kd_stopped:
            return self.self_training
        return self.teacher_reads_pool or self.recipe.unlabeled_boxes is not None

    def _student_taps(self, img: torch.Tensor) -> tuple[Taps, object]:
        """(the student's taps, its raw predictions) for a batch of images."""
        with record_layers(self.student, self._layers("student")) as layer_feats:
            preds = self.student(img)
        return head_taps(preds, layer_feats), preds

    def _student_preds(self, img: torch.Tensor) -> tuple[None, object]:
        """(no taps, the student's raw predictions): the forward where no term reads a tap (the labeled images while
        self-training, the pool's images when the teacher does not read them)."""
        return None, self.student(img)

    def _unlabeled_forward(self, extra: torch.Tensor, forward) -> tuple[Taps | None, object]:
        """`forward(extra)` on the pool's images (`_student_taps` or `_student_preds`), normalised by BatchNorm with
        their own batch statistics; its running statistics are updated by this forward too (`unlabeled_bn: all`) or
        come from labeled batches alone (`labeled`)."""
        if self.recipe.unlabeled_bn == "all":
            return forward(extra)
        with running_stats_frozen(self.student):
            return forward(extra)

    def _pool_detection_loss(self, target: Taps, extra: torch.Tensor, pool_preds, batch: dict,
                             start: int) -> torch.Tensor:
        """`unlabeled_boxes`: the student's detection loss (box + cls + dfl, per image as logged for labeled images) on
        the pool images' pseudo-boxes: those the pool's loader carried (`label+conf`: `batch["unlabeled_boxes"]`,
        `pool_labels`), else decoded from the (first) teacher target's pool rows, from row `start` on
        (`pseudo_boxes`); `match` reads the labeled `batch`'s boxes per image."""
        if "unlabeled_boxes" in batch:
            pseudo = {"img": extra, **batch["unlabeled_boxes"]}
        else:
            labeled, (conf, matched) = len(batch["img"]), box_selection(self.recipe.unlabeled_boxes)
            rows = Taps(feats=[], scores=target.scores[start:], boxes=target.boxes[start:], grid=target.grid)
            count = matched_count(len(batch["cls"]), labeled, len(extra)) if matched else None
            with torch.no_grad():
                pseudo = pseudo_batch(rows, extra, conf, count)
        loss, _ = self.student.loss(pseudo, pool_preds)
        return loss.float().sum() / len(extra)

    def _pool_dense_loss(self, s_taps: Taps, target: Taps, start: int) -> torch.Tensor:
        """`unlabeled_topk`: Dense Teacher's dense pseudo-labels on the pool rows (from row `start` on, `losses.dense`)
        from the (first) teacher's target, hyp.cls * L_cls + hyp.box * L_box: weighted by the student's own detection
        gains, the pool counts as its detection loss does on a labeled image (Dense Teacher's unsupervised terms count
        as FCOS's)."""
        s_scores, t_scores = s_taps.scores[start:], target.scores[start:]
        mask, foreground = top_fraction(t_scores, self.recipe.unlabeled_topk)
        hyp = self.student.args
        return (hyp.cls * dense_class_loss(s_scores, t_scores, mask, foreground)
                + hyp.box * dense_box_loss(s_taps.boxes[start:], target.boxes[start:], mask))

    @property
    def progress(self) -> float:
        """Training progress in epochs, fractional: epoch + (batches done this epoch) / (batches per epoch)."""
        return self.epoch + min(self.batch_index, self.batches) / self.batches

    def _teacher_target(self, stage, img: torch.Tensor, source: torch.Tensor | None,
                        s_taps: Taps) -> list[tuple[str, Taps, float]]:
        """The teachers' forwards on their inputs, then `teacher_target`: per method-owning teacher (its target in the
        declared float32 encoding, its weight). `source` is the high-resolution batch the student's `img` was
        downsampled from (teacher at its own size). Under AMP the teachers run in the autocast dtype (fp16 or bf16)."""
        device = img.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
        teachers = self.pool.acquire(stage.teachers, img.device, dtype=dtype)
        raw = {}
        with torch.no_grad():
            for name, teacher in teachers.items():
                t_img = self._teacher_input(name, img, source).to(dtype)
                if t_img.is_cuda:
                    t_img = t_img.contiguous(memory_format=torch.channels_last)
                with record_layers(teacher, self._layers("teacher")) as feats:
                    out = teacher(t_img)
                raw[name] = replace(head_taps(out, feats), head=detect_head(teacher))
            return teacher_target(raw, self.views, s_taps, stage.teachers, stage.teacher_weights, stage.combine)

    def _teacher_input(self, name: str, img: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """The teacher's input at its own size: the high-resolution `source` batch (the trainer's loader makes it at
        the teacher's size; the student's `img` is its downsample), resized when this teacher's size differs; without
        a source, the student's batch itself resized (same letterbox, same boxes)."""
        size = self.recipe.teachers[name].imgsz
        if not size:
            return img
        stride = int(self.student.stride.max())
        hw = tuple(max(stride, int(round(d * size / max(img.shape[-2:]) / stride)) * stride) for d in img.shape[-2:])
        return resample(img if source is None else source, hw)

    def _balance(self, key: str, value: torch.Tensor, det_loss: torch.Tensor, batch_size: int) -> float:
        """Auto balance: at the first usable step of a term of a teacher (key 'teacher/term'), fix the multiplier that
        makes it `auto_balance` x the mean detection loss item (box/cls/dfl as logged). Under DDP the ranks agree on
        one multiplier (mean of their values); a step where the term is zero or non-finite fixes nothing and the
        next step tries again."""
        target = self.recipe.auto_balance
        if target is None:
            return 1.0
        if key not in self.balance:
            det_item = det_loss.detach().float().mean() / batch_size  # mean detection loss item, as logged
            pair = torch.stack([value.detach().float().reshape(()), det_item.reshape(())])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(pair)  # every rank reaches a term's first steps together
            v, det = pair.tolist()
            if not (math.isfinite(v) and math.isfinite(det) and v > 0 and det > 0):
                return 1.0
            self.balance[key] = target * det / v
        return self.balance[key]

    # ------------------------------------------------------------------ state for resume (plain tensors)
    def kd_state(self, adapters: nn.Module | None = None) -> dict:
        """Plain-data KD state stored in last.pt (loadable where yolo_kd is not installed); `adapters` defaults to
        this distiller's methods (the trainer passes the EMA's, which Ultralytics resumes from)."""
        adapters = self.methods if adapters is None else adapters
        return {
            "recipe": self.recipe.to_dict(),
            "adapters": {k: v.detach().float().cpu().clone() for k, v in adapters.state_dict().items()},
            "stage": self.stage,
            "balance": dict(self.balance),
            "nan_skips": self.nan_skips,
            "teacher_scores": dict(self.teacher_scores),
            "kd_stopped": self.kd_stopped,
            "boxes_score": self.boxes_score,
        }

    def load_kd_state(self, state: dict) -> None:
        """Restore adapters and auto-balance multipliers saved by `kd_state`."""
        live = self.methods.state_dict()
        self.methods.load_state_dict({k: v.to(device=live[k].device, dtype=live[k].dtype)
                                      for k, v in state["adapters"].items() if k in live})
        self.balance = dict(state.get("balance") or {})
        self.nan_skips = int(state.get("nan_skips", 0))
        self.teacher_scores = dict(state.get("teacher_scores") or {})
        self.kd_stopped = bool(state.get("kd_stopped", False))
        self.boxes_score = state.get("boxes_score")

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """A student-only state dict (as Ultralytics' NaN recovery passes) loads into the student."""
        if state_dict and not any(k.startswith(("student.", "methods.")) for k in state_dict):
            return self.student.load_state_dict(state_dict, strict=strict, assign=assign)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
