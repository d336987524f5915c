"""The vision front end: CIFAR-style models, on-device data and augmentation, and the Accelerate loop."""

from .data import DATASETS, ImageData, apply_variants, load_image_data
from .loop import VisionArguments, train
from .models import MODELS, build_model

__all__ = ["DATASETS", "MODELS", "ImageData", "VisionArguments", "apply_variants", "build_model",
           "load_image_data", "train"]
