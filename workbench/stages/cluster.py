"""Cluster the run's model's weights with TF-MOT (`cluster.clusters` shared values per kernel):
the clustered model becomes the run's model (`model_clustered.keras`) and is exported as
`clustered_<format>`. Settings: `cluster.*`."""


def cluster(ctx):
    ctx.require_model("cluster")
    ctx.require_data("cluster")
    ctx.results["cluster"] = ctx.task.cluster(ctx)
    return ctx
