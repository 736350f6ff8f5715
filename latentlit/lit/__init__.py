"""Thin Lightning wrappers: modules, data modules, writers and callbacks."""

from latentlit.lit.backbone_module import LatentBackboneModule
from latentlit.lit.curriculum_data import CurriculumDataModule
from latentlit.lit.predict_data import ProblemDataModule
from latentlit.lit.predictor import TTSPredictor

__all__ = ["CurriculumDataModule", "LatentBackboneModule", "ProblemDataModule", "TTSPredictor"]
