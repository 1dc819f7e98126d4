"""docvlm: fine-tune PaliGemma 2 for document OCR, evaluate with each domain's metrics, convert documents.

    import docvlm
    model = docvlm.load("runs/pubtabnet/lightning_logs/version_0/hf")   # the task comes from the folder
    results = model(["scan.png"])                                       # .text, .value, .problems
    pipeline = docvlm.load_pipeline("pipeline.yaml")                   # pages -> regions -> each region's model
"""


def load(model, device=None, dtype=None, task=None, **task_options):
    """A model ready to read documents (`docvlm.inference.Model`): see `docvlm.inference.load`.
    Imported on use, so that `import docvlm` stays light."""
    from docvlm.inference import load as load_model

    return load_model(model, device=device, dtype=dtype, task=task, **task_options)


def load_pipeline(pipeline, device=None, dtype=None, **options):
    """A page pipeline ready to convert pages (`docvlm.pipeline.run.Pipeline`) from its YAML file: see
    `docvlm.pipeline.run.load_pipeline`. Imported on use, as `load` is."""
    from docvlm.pipeline.run import load_pipeline as load_page_pipeline

    return load_page_pipeline(pipeline, device=device, dtype=dtype, **options)
