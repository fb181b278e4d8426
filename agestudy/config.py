"""What defines a training run: ``TrainConfig``, plain data, logged as MLflow params.

One home for the training defaults: the CLI, the studies, the bench and the analyses all
start from ``TrainConfig()``. Values that depend on the machine or the data (batch size,
learning rate for that batch, number of epochs) are resolved by the methods at the end,
from the device and the number of training images, never from a timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from agestudy.data import AugmentConfig, ImageSet
from agestudy.errors import UserError
from agestudy.models import MODELS, STEM_STRIDES, model_knobs, supports_members

# Batch size (per member) when --batch-size is 0 (auto): small batches suit a CPU's few cores
# and small data; a GPU needs large ones to be busy.
AUTO_BATCH = {"cpu": 64, "cuda": 256}
# With the automatic batch size, --lr is the learning rate at this batch size, scaled by the square root
# of the batch the device gets over it (AdamW's usual rule): x2 at a GPU's 256. Measured by 5-fold
# cross-validation of the development faces (one network, batch 256, on a CPU; studies/RESULTS.md):
# 92.22 % with the square-root rule, 91.75 % with the linear rule (x4; ROC AUC lower on 5 of 5 folds)
# and 92.09 % with no scaling; batch 64: 92.61 %.
LR_REFERENCE_BATCH = 64
# Training length (images each member sees) when --train-images is 0 (auto). A CPU keeps the length that
# fits the lab's time. A GPU, where images are cheap, takes the CPU's optimiser steps with its 4 times
# larger batch, so 4 times the images: at batch 256 and the same images as a CPU, one network lost 0.4
# points of 5-fold cross-validated accuracy to batch 64 (fewer steps); with 4 times the images it gained
# 0.92 +- 0.11 points over batch 64 (4 of 4 folds measured; studies/RESULTS.md).
AUTO_TRAIN_IMAGES = {"cpu": 140_000, "cuda": 560_000}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def option(default, help: str):
    """A TrainConfig field with its --help text (the CLI shows it with the default)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything that defines a training run. 0 means "auto" where the comment says so."""

    model: str = option("efficient", "network: baseline (the lab's CNN), efficient (residual CNN) or resnet18")
    width: int = option(16, "efficient: channels of the first stage")
    depth: int = option(1, "efficient: residual blocks per stage")
    # dropout kept: without it one network cross-validated +0.95 +- 1.09 points, but the default ensemble
    # -0.17 +- 0.35 (lower on 4 of 5 folds) and the fp32 default -0.39 +- 0.60 (studies/RESULTS.md,
    # "Sharpness-aware minimisation and no dropout")
    dropout: float = option(0.2, "dropout before the last linear layer")
    members: int = option(3, "> 1: an ensemble of that many networks, each with its own initialisation, shuffle "
                             "and augmentation, trained as one batched network")
    stem_stride: int = option(0, "efficient: 2 keeps more detail, 4 shrinks the image 4x first (~3x cheaper), "
                                 "1 keeps the full resolution (~4x dearer than 2); 0 = auto (4 on CPUs without "
                                 "native bf16, else 2)")
    hidden: int = option(256, "baseline: units of the hidden linear layer")
    train_images: int = option(0, "training length in images each member sees, which sets the epochs when --epochs "
                                  "is 0; 0 = auto (140,000 on a CPU: ~60 epochs of 2,300 faces; 560,000 on a GPU)")
    epochs: int = option(0, "passes over the training images; 0 = from --train-images and the data size")
    batch_size: int = option(0, "images per step and member; 0 = auto (64 on a CPU, 256 on a GPU)")
    optimizer: str = option("adamw", "adamw or sgd")
    lr: float = option(2e-3, "peak learning rate; with --batch-size 0 (auto) the rate at batch 64, scaled by "
                             "sqrt(batch/64)")
    weight_decay: float = option(0.05, "decoupled weight decay (adamw) or L2 penalty (sgd)")
    momentum: float = option(0.9, "sgd only: momentum")
    grad_clip: float = option(0.0, "clip the gradient norm to this; 0 = off")
    # no label smoothing beside mixup, which already softens the targets: with both, the folds' validation
    # log loss was worse than without either; without smoothing, better on every fold (studies/RESULTS.md)
    label_smoothing: float = option(0.0, "cross-entropy label smoothing")
    warmup_epochs: float = option(1.0, "linear learning-rate warm-up, in epochs, before the cosine decay")
    ema: float = option(0.0, "decay of an exponential moving average of the weights (e.g. 0.998), the model "
                             "evaluated and saved; 0 = off (the last weights)")
    # mixup on by default: chosen by 5-fold cross-validation of the development faces (studies/generalisation.toml;
    # studies/RESULTS.md, "How the defaults were chosen"): ROC AUC and log loss better on every fold, accuracy
    # within the noise
    mixup: float = option(0.2, "alpha of mixup's Beta(alpha, alpha) mixing weight: training on blends of two "
                               "images and of their labels; 0 = off")
    cutmix: float = option(0.0, "alpha of CutMix's Beta(alpha, alpha): training on images with a box pasted "
                                "from another image, labels mixed by area; 0 = off (with --mixup as well, "
                                "each step takes one of the two at random)")
    distill: int = option(0, "knowledge distillation: first train a teacher ensemble of this many networks with "
                             "the same settings, then train the model on the teacher's probabilities for the "
                             "same augmented (and mixed) images instead of the labels; 0 = off")
    sam: float = option(0.0, "sharpness-aware minimisation (SAM): each step takes the gradient at the worst "
                             "weights within this radius of the current ones (e.g. 0.05; per member), which "
                             "favours flat minima; twice the step's cost; 0 = off")
    # the augmentation's defaults have their one home in AugmentConfig (data/augment.py)
    crop: int = option(AugmentConfig.crop, "side of the training crop (random) and of the test crop (centre), "
                                           "in pixels of the 100x100 images")
    padding: int = option(AugmentConfig.padding, "black border added before the random crop, like "
                                                 "RandomCrop(padding=)")
    flip: bool = option(AugmentConfig.flip, "random horizontal flips in training")
    jitter: float = option(AugmentConfig.jitter, "brightness/contrast/saturation jitter strength; 0 = off")
    random_crop: bool = option(AugmentConfig.random_crop, "random crop position in training (--no-random-crop: "
                                                          "the centre crop, question 7's ablation)")
    scale: float = option(AugmentConfig.scale, "random zoom range (e.g. 0.1 = +-10 %%); 0 = off")
    rotate: float = option(AugmentConfig.rotate, "random rotation range in degrees; 0 = off")
    eval_flip: bool = option(AugmentConfig.eval_flip, "validation and test average the centre crop and its mirror")
    grayscale: float = option(AugmentConfig.grayscale, "probability of a training image turned grey; 0 = off")
    blur: float = option(AugmentConfig.blur, "probability of a Gaussian blur of a training image; 0 = off")
    erase: float = option(AugmentConfig.erase, "probability of erasing a random rectangle of a training image "
                                               "(random erasing); 0 = off")
    trivial: float = option(AugmentConfig.trivial, "probability of one TrivialAugment operation on a training "
                                                   "image (torchvision's TrivialAugmentWide: shear, shift, "
                                                   "rotation, colour, contrast, sharpness, ...); 0 = off")
    val_fraction: float = option(0.1, "share of train/ held out for validation (stratified, seeded); 0 = none")
    evals_per_epoch: int = option(4, "validations per epoch (points of the learning curve, pruning checks)")
    log_every: int = option(10, "iterations between training-loss points")
    seed: int = option(0, "seed of the initialisation, the shuffles, the augmentation and the validation split")
    device: str = option("auto", "auto (a CUDA GPU when there is one), cpu or cuda")
    precision: str = option("auto", "auto (from the hardware: bf16 on GPUs and CPUs with native bf16, fp16 with "
                                    "loss scaling on older GPUs, else fp32), fp32, bf16 or fp16")
    compile: bool = option(False, "torch.compile the training step (falls back cleanly where it cannot)")

    def __post_init__(self):
        # a configuration is checked when it is made: by the CLIs and the studies before any data
        # is loaded, and never again (dataclasses.replace makes a new one, checked in turn)
        self.validate()

    def split(self, train: ImageSet) -> tuple[ImageSet, ImageSet | None]:
        """The images this configuration fits and the validation split it holds out (None when
        val_fraction is 0): the one place that derives it, so training, the analyses and the
        report all see the same split for the same run."""
        if self.val_fraction <= 0:
            return train, None
        return train.split(self.val_fraction, self.seed)

    def fold(self, train: ImageSet, folds: int, fold: int, repeat: int = 0) -> tuple[ImageSet, ImageSet]:
        """The images fold ``fold`` (0 .. folds-1) of repeat ``repeat`` of a repeated stratified
        k-fold cross-validation of ``train`` fits and holds out: the one place that derives the
        folds (seeded by ``seed + repeat``: each repeat shuffles anew, and the same seed gives the
        same folds to every configuration compared). The held-out parts of one repeat are disjoint
        and cover ``train`` once. Only ever train/: test/ stays out of model selection."""
        return train.fold(folds, fold, repeat, self.seed)

    def augment(self) -> AugmentConfig:
        return AugmentConfig(crop=self.crop, padding=self.padding, flip=self.flip, jitter=self.jitter,
                             random_crop=self.random_crop, scale=self.scale, rotate=self.rotate,
                             eval_flip=self.eval_flip, grayscale=self.grayscale, blur=self.blur, erase=self.erase,
                             trivial=self.trivial)

    def model_kwargs(self) -> dict:
        knobs = {"width": self.width, "depth": self.depth, "dropout": self.dropout, "hidden": self.hidden,
                 "crop": self.crop, "stem_stride": self.stem_stride, "members": self.members}
        return {k: v for k, v in knobs.items() if k in model_knobs(self.model)}

    # -- resolved from the machine and the data

    def resolved(self, device, n_train: int) -> TrainConfig:
        """This configuration with every "auto" replaced by what it means on ``device`` for
        ``n_train`` training images: what a run logs and saves, so it can be rebuilt anywhere."""
        from agestudy.device import choose_precision

        precision = choose_precision(device, self.precision)
        batch = self.batch_for(device.type)
        return replace(self, device=device.type, precision=precision, batch_size=batch, lr=self.lr_for(batch),
                       train_images=self.train_images_for(device.type), epochs=self.epochs_for(n_train, device.type),
                       stem_stride=self.stem_for(device.type, precision))

    def stem_for(self, device_type: str, precision: str) -> int:
        """--stem-stride, else 2 where convolutions are fast (a GPU, a CPU with native bf16) and 4 on
        CPUs that compute in fp32 only (most laptops): about 3x less arithmetic, cross-validated 1.2
        points lower on the development faces (studies/RESULTS.md, "The fp32 default")."""
        if self.stem_stride:
            return self.stem_stride
        return 4 if device_type == "cpu" and precision == "fp32" else 2

    def batch_for(self, device_type: str) -> int:
        return self.batch_size or AUTO_BATCH.get(device_type, AUTO_BATCH["cpu"])

    def lr_for(self, batch_size: int) -> float:
        """--lr as given with an explicit --batch-size; with the automatic batch size, --lr is read as
        the rate for a batch of 64 and scaled by the square root of the batch the device got over 64."""
        if self.batch_size:
            return self.lr
        return self.lr * (batch_size / LR_REFERENCE_BATCH) ** 0.5

    def train_images_for(self, device_type: str) -> int:
        return self.train_images or AUTO_TRAIN_IMAGES.get(device_type, AUTO_TRAIN_IMAGES["cpu"])

    def epochs_for(self, n_train: int, device_type: str) -> int:
        """--epochs, else enough whole epochs for the device's ``train_images`` images (at least one)."""
        return self.epochs or max(1, round(self.train_images_for(device_type) / max(1, n_train)))

    def validate(self) -> None:
        """Every check in one place (run on construction): a mistake costs nothing."""
        if self.model not in MODELS:
            raise UserError(f"unknown model {self.model!r}; choose one of: {', '.join(MODELS)}")
        if self.optimizer not in ("adamw", "sgd"):
            raise UserError(f"unknown optimizer {self.optimizer!r}: use adamw or sgd")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}: use {', '.join(PRECISIONS)}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"unknown device {self.device!r}: use auto, cpu or cuda")
        if (self.members > 1 or self.distill > 1) and not supports_members(self.model):
            raise UserError(f"model {self.model!r} cannot be an ensemble (--members or --distill > 1): use baseline "
                            "or efficient")
        checks = [
            (self.epochs >= 0, "epochs must be >= 1 (or 0: from --train-images)"),
            (self.train_images >= 0, "train images must be >= 1 (or 0: auto)"),
            (self.batch_size == 0 or self.batch_size >= 2, "batch size must be >= 2 (or 0: auto)"),
            (self.lr > 0, "learning rate must be > 0"),
            (self.weight_decay >= 0, "weight decay must be >= 0"),
            (self.grad_clip >= 0, "grad clip must be >= 0 (0 = off)"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (0 <= self.label_smoothing < 1, "label smoothing must be in [0, 1)"),
            (16 <= self.crop <= 100, "crop must be between 16 and 100 pixels"),
            (self.padding >= 0, "padding must be >= 0"),
            (0 <= self.jitter < 1, "jitter must be in [0, 1)"),
            (0 <= self.scale < 0.5, "scale (zoom range) must be in [0, 0.5)"),
            (0 <= self.rotate <= 45, "rotate must be between 0 and 45 degrees"),
            (0 <= self.grayscale <= 1, "grayscale must be a probability in [0, 1]"),
            (0 <= self.blur <= 1, "blur must be a probability in [0, 1]"),
            (0 <= self.erase <= 1, "erase must be a probability in [0, 1]"),
            (0 <= self.trivial <= 1, "trivial must be a probability in [0, 1]"),
            (self.stem_stride in (0, *STEM_STRIDES),
             f"stem stride must be one of {', '.join(map(str, STEM_STRIDES))} (or 0: auto)"),
            (1 <= self.members <= 16, "members must be between 1 and 16"),
            (0 <= self.distill <= 16, "distill (teacher networks) must be between 0 (off) and 16"),
            (0 <= self.val_fraction < 1, "validation fraction must be in [0, 1)"),
            (self.evals_per_epoch >= 1, "evals per epoch must be >= 1"),
            (self.log_every >= 1, "log every must be >= 1"),
            (0 <= self.ema < 1, "ema decay must be in [0, 1)"),
            (self.mixup >= 0, "mixup alpha must be >= 0"),
            (self.cutmix >= 0, "cutmix alpha must be >= 0"),
            (0 <= self.sam <= 5, "sam radius must be in [0, 5] (0 = off)"),
            (self.width >= 4 and self.depth >= 0, "width must be >= 4 and depth >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
