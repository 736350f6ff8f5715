"""Thin Lightning wrappers: modules, data modules, writers and callbacks."""

from latentlit.lit.backbone_module import LatentBackboneModule
from latentlit.lit.curriculum_data import CurriculumDataModule
from latentlit.lit.grpo_data import GRPODataModule
from latentlit.lit.grpo_module import GRPOModule
from latentlit.lit.labelling import RolloutLabeller
from latentlit.lit.latent_rm_data import LatentRMDataModule
from latentlit.lit.latent_rm_module import LatentRMModule
from latentlit.lit.predict_data import ProblemDataModule
from latentlit.lit.predictor import TTSPredictor

__all__ = ["CurriculumDataModule", "GRPODataModule", "GRPOModule", "LatentBackboneModule", "LatentRMDataModule", "LatentRMModule", "ProblemDataModule",
           "RolloutLabeller", "TTSPredictor"]
