"""Aggregation: pure functions from (answers, scores) to a chosen answer."""

from latentlit.aggregation.scores import count_nonfinite, ranking_scores, rm_vote_weights
from latentlit.aggregation.select import best_of_n, random_pick
from latentlit.aggregation.vote import VoteResult, group_answers, majority_vote, vote_choice, weighted_vote

__all__ = ["VoteResult", "best_of_n", "count_nonfinite", "group_answers", "majority_vote", "random_pick", "ranking_scores",
           "rm_vote_weights", "vote_choice", "weighted_vote"]
