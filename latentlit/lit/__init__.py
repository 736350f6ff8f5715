"""Thin Lightning wrappers: modules, data modules, writers and callbacks."""

from latentlit.lit.backbone_module import LatentBackboneModule
from latentlit.lit.curriculum_data import CurriculumDataModule

__all__ = ["LatentBackboneModule", "CurriculumDataModule"]
