"""Finding the best subnet for a budget: the accuracy dataset (:mod:`~ofakit.search.accuracy`, subnets
measured on validation images) and the subnets added along the predicted front
(:mod:`~ofakit.search.front_sampling`), the accuracy predictors learnt from it
(:mod:`~ofakit.search.predictors`), constrained evolution (:mod:`~ofakit.search.evolution`) and NSGA-II
Pareto fronts (:mod:`~ofakit.search.pareto`)."""
