"""The supervised family's side of the federation (workbench.federated): the loader a client
process calls to load the run's data without a Recipe.

The job file carries the family's plain description of the run's data
(`workbench.supervised.task.data_spec`: source, options, seed, task) and names this loader the
way Flower names its apps, `"workbench.supervised.federation:load_client_data"`; a client
resolves the name and calls it with the description. It loads the data exactly as
`SupervisedTask.load_data` does (`load_labelled_data`, same source, options, seed and label
handling), so the clients' positions index the same training split in the same order.
"""

from __future__ import annotations


def load_client_data(spec):
    """The run's `Data` from `data_spec`'s description, as read back from the job file."""
    from workbench.supervised.task import load_labelled_data

    return load_labelled_data(spec["source"], dict(spec["options"]), spec["seed"], spec["task"])
