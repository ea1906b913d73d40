"""Teachers for decoupled distillation (squeeze): train a classifier on real data and keep it with its data contract.

SRe2L, RDED and the methods built on them (INFER, CV-DD, NRR-DD) start from a *teacher*, a network trained on the
real training set, whose BatchNorm statistics and logits the recover and relabel stages read. The most common
complaint in those repositories is a teacher used with data in another class order or another normalization
(RDED #3/#4/#6, CV-DD #5: accuracies tens of points low), so a condense teacher carries its architecture, dataset
name and fingerprint, class order, preprocessing, training recipe and measured test accuracy, and
:meth:`Teacher.check_compatible` refuses data that differs in any of them.

Layout on disk, in a folder ``out``:

- ``out/teacher.safetensors``: the model's ``state_dict`` (parameters and BatchNorm buffers).
- ``out/teacher.json``: format stamp, architecture (name, builder kwargs, input shape, class count), dataset name
  and fingerprint, classes, preprocessing, recipe name and values, epochs, seed, final-epoch test accuracy, tensor
  shapes/dtypes and the sha256 of the tensor file, sealed with :func:`condense.io.seal`.

Both are written atomically, the tensor file first. Loading checks the stamp, the seal (an edited field is refused
naming it), every field's type, the checksum, the recorded shapes and that the state dict fits the architecture.

Recipes (:data:`RECIPES`) are named presets of :class:`TeacherRecipe`, each with its ``source``:

- ``sre2l_cifar``: SRe2L's CIFAR teacher (``VILA-Lab/SRe2L`` ``SRe2L/*small_dataset/README_CIFAR.md``): SGD lr 0.1,
  momentum 0.9, weight decay 5e-4, cosine, batch 128, RandomCrop(pad 4) + flip, 200 epochs.
- ``rded_cifar``: RDED's squeeze recipe for CIFAR (``LINs-lab/RDED``): Adam lr 1e-3, batch 512, cosine, crop + flip,
  200 epochs.
- ``digits``: a condense recipe for the embedded 8x8 digits, sized for CPU minutes (no flip: mirrored digits are
  other glyphs).

Augmentation is the random crop with padding written as a shift (:func:`condense.augment.functional.crop`, DSA's
pad-and-crop as a gather), filled with the normalized value of a black pixel, so it equals torchvision's
``RandomCrop(size, padding=p)`` (zero padding) applied before ``Normalize`` as in the references; on ZCA data the fill
is 0 (whitened space has no black pixel). The flip is :func:`condense.augment.functional.flip`.

Known differences from the references: SRe2L and RDED train CIFAR teachers with a torchvision DataLoader (random
order per epoch, the last partial batch kept); condense keeps the last partial batch too, draws its order and
augmentation from seeded generators, and the cosine schedule is stepped per epoch (``CosineAnnealingLR(T_max=epochs)``
as in SRe2L's CIFAR script). The accuracy recorded is the final epoch's, never the best one.

Several teachers (seeds, architectures) train with :func:`train_teachers`, into ``out_root/<model>-s<seed>/``;
same-architecture teachers can be stacked and vmapped (``train.py``). A checkpoint trained elsewhere becomes a
teacher with :func:`import_teacher` (``external.py``): loaded strictly into a condense architecture, measured on the
data it is declared for, and sealed like a trained one (``recipe_name`` ``"imported"``, the recipe recording the
source file's name and sha256).

Files: ``recipes.py`` (recipes and their augmentation), ``record.py`` (:class:`Teacher` and the file format, its
one owner), ``train.py`` (training), ``external.py`` (imports), ``ssl.py``
(self-supervised Barlow Twins target encoders for KRR-ST, ``encoder.safetensors`` + sealed ``encoder.json``).

Example:
    >>> from condense.data import load_dataset
    >>> data = load_dataset("digits")
    >>> t = train_teacher(data, "convnet_bn", 1, "tmp_teacher", quiet=True)  # doctest: +SKIP
    >>> load_teacher("tmp_teacher").check_compatible(data)  # doctest: +SKIP
"""

from __future__ import annotations

from condense.teachers.external import import_teacher, read_state_dict
from condense.teachers.recipes import (
    RECIPES,
    TeacherRecipe,
    augment_batch,
    black_pixel,
    default_recipe_for,
    get_recipe,
    list_recipes,
)
from condense.teachers.record import (
    FORMAT,
    FORMAT_VERSION,
    IMPORTED,
    JSON_FILE,
    TENSOR_FILE,
    Teacher,
    load_teacher,
    measure_accuracy,
)
from condense.teachers.ssl import (
    ENCODER_JSON_FILE,
    ENCODER_TENSOR_FILE,
    Encoder,
    EncoderRecipe,
    barlow_twins_loss,
    default_encoder_recipe,
    import_encoder,
    linear_probe_accuracy,
    load_encoder,
    train_encoder,
)
from condense.teachers.train import TeacherSpec, train_teacher, train_teachers

__all__ = [
    "ENCODER_JSON_FILE",
    "ENCODER_TENSOR_FILE",
    "Encoder",
    "EncoderRecipe",
    "barlow_twins_loss",
    "default_encoder_recipe",
    "import_encoder",
    "linear_probe_accuracy",
    "load_encoder",
    "train_encoder",
    "FORMAT",
    "FORMAT_VERSION",
    "IMPORTED",
    "RECIPES",
    "TENSOR_FILE",
    "JSON_FILE",
    "Teacher",
    "TeacherRecipe",
    "TeacherSpec",
    "augment_batch",
    "black_pixel",
    "default_recipe_for",
    "get_recipe",
    "import_teacher",
    "list_recipes",
    "load_teacher",
    "measure_accuracy",
    "read_state_dict",
    "train_teacher",
    "train_teachers",
]
