"""A contextual-bandit world with known expected rewards, for checking OPE.

Contexts come from a fixed finite pool drawn uniformly, so the true value of
any policy is an exact finite average, not a Monte Carlo estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from tacit.learning.ope import LoggedDecision, decisions_from_arrays

FloatArray = NDArray[np.float64]


def _sigmoid(z: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class BanditWorld:
    """K actions (one-hot features), contexts from a pool, Bernoulli rewards."""

    contexts: FloatArray  # (m, d) pool, drawn uniformly
    reward_intercepts: FloatArray  # (k,)
    reward_slopes: FloatArray  # (k, d)
    logging_scores: FloatArray  # (k, d) softmax scores of the logging policy
    logging_temperature: float
    logging_epsilon: float
    target_scores: FloatArray  # (k, d) the deterministic target policy's scores

    @property
    def n_actions(self) -> int:
        return self.reward_intercepts.shape[0]

    def expected_reward(self, context: FloatArray) -> FloatArray:
        """True mean reward of every action in this context."""
        return _sigmoid(self.reward_intercepts + self.reward_slopes @ context)

    def logging_probabilities(self, context: FloatArray) -> FloatArray:
        """Epsilon-softmax logging policy: every action has p >= epsilon / k."""
        scores = self.logging_temperature * (self.logging_scores @ context)
        soft = np.exp(scores - scores.max())
        soft /= soft.sum()
        return (1 - self.logging_epsilon) * soft + self.logging_epsilon / self.n_actions

    def target_policy(self, decision: LoggedDecision) -> FloatArray:
        """Deterministic argmax of the target scores (a fixed policy to evaluate)."""
        probabilities = np.zeros(self.n_actions)
        probabilities[int(np.argmax(self.target_scores @ decision.context))] = 1.0
        return probabilities

    def true_value(self) -> float:
        """Exact value of ``target_policy``: average over the uniform context pool."""
        total = 0.0
        for context in self.contexts:
            action = int(np.argmax(self.target_scores @ context))
            total += float(self.expected_reward(context)[action])
        return total / self.contexts.shape[0]

    def simulate_log(self, n: int, seed: int) -> list[LoggedDecision]:
        """n decisions of the logging policy with sampled Bernoulli rewards."""
        rng = np.random.default_rng(seed)
        index = rng.integers(self.contexts.shape[0], size=n)
        contexts = self.contexts[index]
        scores = self.logging_temperature * (contexts @ self.logging_scores.T)  # (n, k)
        soft = np.exp(scores - scores.max(axis=1, keepdims=True))
        soft /= soft.sum(axis=1, keepdims=True)
        policy = (1 - self.logging_epsilon) * soft + self.logging_epsilon / self.n_actions
        cumulative = np.cumsum(policy, axis=1)
        draws = rng.random(n)[:, None]
        chosen = np.minimum((draws > cumulative).sum(axis=1), self.n_actions - 1)
        probabilities = policy[np.arange(n), chosen]
        means = _sigmoid(
            self.reward_intercepts[chosen] + np.sum(self.reward_slopes[chosen] * contexts, axis=1)
        )
        rewards = (rng.random(n) < means).astype(float)
        return decisions_from_arrays(
            contexts, np.eye(self.n_actions), chosen, probabilities, rewards,
            action_ids=[f"item-{j}" for j in range(self.n_actions)],
        )  # fmt: skip


def make_world(seed: int = 7, n_contexts: int = 40, dim: int = 3, n_actions: int = 4) -> BanditWorld:
    """A fixed world; the target policy is a noisy version of the best policy."""
    rng = np.random.default_rng(seed)
    slopes = rng.normal(0.0, 1.0, size=(n_actions, dim))
    return BanditWorld(
        contexts=rng.normal(0.0, 1.0, size=(n_contexts, dim)),
        reward_intercepts=rng.normal(-0.5, 0.5, size=n_actions),
        reward_slopes=slopes,
        logging_scores=rng.normal(0.0, 1.0, size=(n_actions, dim)),
        logging_temperature=1.0,
        logging_epsilon=0.2,
        target_scores=slopes + rng.normal(0.0, 0.5, size=(n_actions, dim)),
    )
